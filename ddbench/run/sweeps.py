"""The sweep contract: jobs, their states, and the worker that runs one. Launchers only launch.

A job is one cell of a `ddbench compare` grid (method, dataset, IPC, seed, protocol...), identified by its
config hash and idempotent: its scratch folder is keyed by the hash, so a job that runs twice resumes.
The driver (ddbench/commands/compare.py) plans the jobs against the database (`plan`), hands those to run to a
launcher plugin (`ddbench.api.Launcher`), and alone writes the records the launcher yields back; the
worker (`run_job`, called wherever the launcher runs a job) never touches the database.
"""
from __future__ import annotations

import enum
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ..core.errors import DDBenchError
from ..core.jobs import Job
from ..core.records import RunRecord
from ..store.results import find_ok, latest_failed


class JobState(enum.Enum):
    """Where a job stands before a sweep runs."""

    DONE = "done"  # an ok record with this config hash, made by the same plugin versions, exists: skipped
    KEPT_FAILED = "kept-failed"  # its last run failed and `--retry none` keeps that failure
    TODO = "todo"  # to run


def plan(jobs: list[Job], db: Path, retry_failed: bool = True) -> dict[JobState, list[Job]]:
    """Sort jobs by state against the database (a killed sweep resumes with only the missing cells)."""
    out: dict[JobState, list[Job]] = {state: [] for state in JobState}
    for job in jobs:
        done = find_ok(db, job.config_hash)
        if done is not None and same_plugins(done.versions, job.plugins):
            out[JobState.DONE].append(job)
        elif not retry_failed and latest_failed(db, job.config_hash):
            out[JobState.KEPT_FAILED].append(job)
        else:
            out[JobState.TODO].append(job)
    return out


def same_plugins(recorded: dict[str, str], current: dict[str, str]) -> bool:
    """Whether a record was made by the plugin versions a cell would use now: every plugin the cell uses, at the
    same version. A row that does not name one of them (made before its kind was recorded) is not reused."""
    return all(recorded.get(k) == v for k, v in current.items())


def where() -> dict[str, Any]:
    """Where a job ran: host, process, and the SLURM / GPU variables that identify its slot."""
    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                "CUDA_VISIBLE_DEVICES"):
        if os.environ.get(key) is not None:
            out[key.lower()] = os.environ[key]
    return out


def failed_record(job: Job, error: str, worker: dict[str, Any] | None = None) -> RunRecord:
    """The record of a job that failed before or outside the runner: recorded as failed with its error."""
    return RunRecord.failure(job.config, job.config_hash, error, worker)


def run_job(job: Job, log: Callable[[str], None] | None = None) -> RunRecord:
    """Run one job where this is called (driver, pool worker or SLURM task) and return its record, unstored.

    Every failure becomes a failed record, so the driver always gets one back. The worker resolves the
    request again from the same plugins.toml and checks it reaches the driver's config hash.
    """
    from ..store.config import load_config
    from .resolve import registry_for, resolve
    from .runner import execute

    here = where()
    try:
        config = load_config(job.config_path)
        registry = registry_for(config)
        resolved = resolve(job.request, config, registry)
        if resolved.config_hash != job.config_hash:
            return failed_record(
                job,
                f"config hash mismatch: the worker resolved {resolved.config_hash}, the driver {job.config_hash} "
                "(different plugins.toml or plugin versions on the worker?)",
                here,
            )
        rec = execute(resolved, registry, log=log or file_logger(resolved.work_dir / "log.txt"), record_to_db=False)
    except DDBenchError as exc:
        return failed_record(job, f"bad input: {exc}", here)
    except Exception as exc:  # noqa: BLE001 - a job that cannot start is a failed cell, not a lost one
        return failed_record(job, "".join(traceback.format_exception(exc)), here)
    rec.meta["worker"] = here
    return rec


def file_logger(path: Path) -> Callable[[str], None]:
    """A log function appending time-stamped lines to `path` (a worker's log in its job's work folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        with open(path, "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    return log


__all__ = ["Job", "JobState", "plan", "run_job", "failed_record", "where", "file_logger"]
