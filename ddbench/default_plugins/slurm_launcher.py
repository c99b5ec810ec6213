"""The `slurm` launcher for launchers.py: each cell a SLURM job through submitit (the `ddbench[slurm]` extra),
with a ledger of submitted jobs so that a driver killed mid-sweep collects them when restarted instead of
submitting them again (docs/compare.md#slurm-pip-install-ddbenchslurm).
"""
from __future__ import annotations

import getpass
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..api import DDBenchError, Job, Launcher, Param, RunRecord
from ..helpers import atomic_write_json, failed_record, run_job

try:  # optional extra: ddbench[slurm]
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only without the extra
    _Checkpointable = object  # type: ignore[assignment,misc]


# --------------------------------------------------------------------------------------------------
# SLURM's callable
# --------------------------------------------------------------------------------------------------


class SweepJob(_Checkpointable):  # type: ignore[misc,valid-type]
    """The callable a SLURM task runs. Checkpointable: on preemption or timeout submitit requeues it with
    the same job, and the method resumes from the checkpoints in the job's hash-keyed work folder."""

    def __init__(self) -> None:
        self.requeues = 0

    def __call__(self, job: Job) -> RunRecord:
        rec = run_job(job)
        if self.requeues:
            rec.meta.setdefault("worker", {})["requeues"] = self.requeues
        return rec

    def checkpoint(self, *args: Any, **kwargs: Any):
        self.requeues += 1  # pickled with the resubmission: the row says how often the job was requeued
        return super().checkpoint(*args, **kwargs)


SLURM_SOURCE = "docs/compare.md#slurm-pip-install-ddbenchslurm; facebookincubator/submitit AutoExecutor parameters"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SlurmLauncher(Launcher):
    name = "slurm"
    description = "a SLURM job array through submitit (pip install 'ddbench[slurm]'), requeued after preemption"
    params = {
        "partition": Param("", SLURM_SOURCE, help="SLURM partition (empty: the cluster's default)"),
        "account": Param("", SLURM_SOURCE, help="SLURM account (empty: none)"),
        "qos": Param("", SLURM_SOURCE, help="SLURM QOS (empty: none)"),
        "constraint": Param("", SLURM_SOURCE, help="SLURM node constraint (empty: none)"),
        "timeout_min": Param(240, SLURM_SOURCE, min=1,
                             help="time limit of one job in minutes; a job past it is requeued"),
        "cpus_per_task": Param(2, SLURM_SOURCE, min=1, help="CPU cores per job"),
        "gpus_per_node": Param(0, SLURM_SOURCE, min=0, help="GPUs per job (0: CPU jobs)"),
        "mem_gb": Param(0.0, SLURM_SOURCE, min=0, help="memory per job in GB (0: the cluster's default)"),
        "max_resubmits": Param(3, SLURM_SOURCE, min=0,
                               help="requeues after preemption or timeout before a job counts as failed"),
        "folder": Param("", SLURM_SOURCE, help="submitit's folder for scripts, logs and results (default: OUT/slurm)"),
        "ping_timeout": Param(10.0, SLURM_SOURCE, min=0.1,
                              help="seconds to wait for the controller to answer `scontrol ping`"),
        "poll_seconds": Param(2.0, SLURM_SOURCE, min=0.05, help="seconds between looks at finished jobs"),
        "cluster": Param("slurm", SLURM_SOURCE, choices=("slurm", "local", "debug"),
                         help="submitit executor: slurm; local (subprocesses, no SLURM); debug (in-process)"),
    }

    # ---- checks -----------------------------------------------------------------------------------

    def check(self, settings: dict[str, Any], parallelism: int) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise DDBenchError("launcher slurm needs submitit: pip install 'ddbench[slurm]'") from None
        if settings["cluster"] != "slurm":
            return
        for tool in ("sbatch", "scontrol", "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise DDBenchError(f"launcher slurm: {tool!r} is not on PATH; run the sweep on a SLURM login node "
                                   "or use --launcher local")
        ping_controller(float(settings["ping_timeout"]))

    # ---- running ----------------------------------------------------------------------------------

    def _executor(self, settings: dict[str, Any], folder: Path, parallelism: int):
        import submitit

        cluster = settings["cluster"]
        kwargs = {"slurm_max_num_timeout": int(settings["max_resubmits"])} if cluster == "slurm" else {}
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **kwargs)
        params: dict[str, Any] = {
            "timeout_min": int(settings["timeout_min"]),
            "cpus_per_task": int(settings["cpus_per_task"]),
            "name": "ddbench",
        }
        if int(settings["gpus_per_node"]):
            params["gpus_per_node"] = int(settings["gpus_per_node"])
        if float(settings["mem_gb"]):
            params["mem_gb"] = float(settings["mem_gb"])
        if cluster == "slurm":
            params["slurm_array_parallelism"] = max(1, parallelism)
            for key in ("partition", "account", "qos", "constraint"):
                if settings[key]:
                    params[f"slurm_{key}"] = settings[key]
        executor.update_parameters(**params)
        return executor

    def run(self, jobs, settings, parallelism, log):
        if not jobs:
            return
        folder = Path(settings["folder"]) if settings["folder"] else Path(jobs[0].request.out) / "slurm"
        folder = folder.absolute()
        executor = self._executor(settings, folder, parallelism)
        cluster = settings["cluster"]
        ledger = Ledger(folder / LEDGER) if cluster == "slurm" else None
        pending: dict[Any, Job] = {}
        queue = list(jobs)
        taken: Job | None = None
        try:
            if ledger is not None:
                pending, queue = ledger.reattach(queue, log)
            if cluster == "slurm" and queue:  # one array; SLURM keeps `parallelism` tasks running
                with executor.batch():
                    handles = [executor.submit(SweepJob(), job) for job in queue]
                pending.update(zip(handles, queue))
                ledger.add({job.config_hash: h.job_id for h, job in zip(handles, queue)})
                queue = []
                ids = sorted({h.job_id.split("_")[0] for h in handles})
                log(f"submitted {len(handles)} SLURM job(s) as {'array ' if len(handles) > 1 else ''}{', '.join(ids)} "
                    f"(at most {parallelism} at once); logs in {folder}")
            for handle, job in self._wait(executor, pending, queue, settings, parallelism):
                taken = job
                yield job, self._collect(handle, job)
                if ledger is not None:  # the driver has the record: the job leaves the ledger
                    ledger.remove(job.config_hash)
                taken = None
        finally:
            if ledger is not None and taken is not None:  # closed right after handing over a record
                ledger.remove(taken.config_hash)
            for handle, job in pending.items():  # interrupted: no orphan keeps computing a row nobody records
                try:
                    handle.cancel(check=False)
                except Exception:  # noqa: BLE001
                    pass
                if ledger is not None:
                    ledger.remove(job.config_hash)

    def _wait(self, executor, pending: dict[Any, Job], queue: list[Job], settings: dict[str, Any], parallelism: int):
        """Yield (handle, job) as jobs finish; `pending` shrinks as they do (the caller cancels what is left)."""
        cluster, poll = settings["cluster"], float(settings["poll_seconds"])
        missing_since: dict[Any, float] = {}
        last_squeue = 0.0
        while pending or queue:
            while queue and len(pending) < max(1, parallelism):  # submitit-local: throttle ourselves
                job = queue.pop(0)
                pending[executor.submit(SweepJob(), job)] = job
            finished = []
            alive: set[str] | None = None
            if cluster == "slurm" and time.monotonic() - last_squeue > max(5 * poll, 2.0):
                alive = _squeue_ids()
                last_squeue = time.monotonic()
            for handle in pending:
                if cluster != "slurm":
                    if handle.done():
                        finished.append(handle)
                elif handle.paths.result_pickle.exists():  # no accounting database needed: the result file,
                    finished.append(handle)  # else the queue, tells
                elif alive is not None and handle.job_id not in alive:
                    if time.monotonic() - missing_since.setdefault(handle, time.monotonic()) > max(3 * poll, 5.0):
                        finished.append(handle)
                elif alive is not None:
                    missing_since.pop(handle, None)
            for handle in finished:
                yield handle, pending.pop(handle)
            if pending and not finished:
                time.sleep(poll)

    def _collect(self, handle, job: Job) -> RunRecord:
        where = {"slurm_job_id": handle.job_id}
        if not handle.paths.result_pickle.exists():
            return failed_record(job, f"job {handle.job_id} left the queue without a result (cancelled, killed, out of "
                                   f"memory, or requeued more than max_resubmits times); its log:\n"
                                   f"{_tail(handle.paths.stderr)}", where)
        try:
            row = handle.result()
        except Exception as exc:  # noqa: BLE001 - the job raised, or submitit reports a failed job
            return failed_record(job, job_failure(handle.job_id, str(exc)), where)
        if not isinstance(row, RunRecord):
            return failed_record(job, f"job {handle.job_id} returned {type(row).__name__}, not a RunRecord", where)
        return row


LEDGER = "submitted.json"


class Ledger:
    """Which SLURM job computes which cell (config hash -> job id), kept in the submitit folder.

    A driver killed with SIGKILL cannot cancel its jobs; the restarted sweep reads the ledger and collects
    those still queued, running or finished instead of submitting the same cells again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.ids: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.ids = {}

    def _save(self) -> None:
        atomic_write_json(self.ids, self.path, indent=1)

    def add(self, ids: dict[str, str]) -> None:
        self.ids.update(ids)
        self._save()

    def remove(self, config_hash: str) -> None:
        if self.ids.pop(config_hash, None) is not None:
            self._save()

    def reattach(self, jobs: list[Job], log) -> tuple[dict[Any, Job], list[Job]]:
        """(handles of earlier jobs still alive or finished, the jobs to submit)."""
        from submitit.slurm.slurm import SlurmJob

        known = [job for job in jobs if job.config_hash in self.ids]
        if not known:
            return {}, jobs
        alive = _squeue_ids() or set()
        found: dict[Any, Job] = {}
        for job in known:
            handle = SlurmJob(self.path.parent, self.ids[job.config_hash])
            if handle.paths.result_pickle.exists() or handle.job_id in alive:
                found[handle] = job
            else:
                self.ids.pop(job.config_hash)
        self._save()
        if found:
            log(f"collecting {len(found)} SLURM job(s) an earlier, killed driver submitted: "
                f"{', '.join(sorted(h.job_id for h in found))}")
        return found, [job for job in jobs if job not in found.values()]


def job_failure(job_id: str, text: str) -> str:
    """The full text of a failed job, ending with one line that says what failed (not where the logs are):
    reports and the sweep's progress lines show that last line."""
    trace = text
    parts = re.split(r"\n-{10,}\n", text)
    if len(parts) >= 3:  # submitit: "... trace:\n-----\n<traceback>\n-----\nYou can check full logs ..."
        trace = parts[1]
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "unknown error"
    shadow = Path.cwd() / "ddbench"
    if ("ModuleNotFoundError" in trace or "ImportError" in trace) and shadow.is_dir() and \
            shadow.resolve() != Path(__file__).resolve().parents[1]:  # the ddbench package, not default_plugins/
        last += f" (a folder {shadow} shadows the ddbench package in jobs started here: submit from another folder)"
    return f"{text.rstrip()}\njob {job_id} failed: {last}"


def _squeue_ids() -> set[str] | None:
    """Ids (`123` and `123_4`) of this user's jobs still queued or running; None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def ping_controller(timeout: float) -> None:
    """DDBenchError within `timeout` seconds unless a SLURM controller answers."""
    start = time.monotonic()
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DDBenchError(f"launcher slurm: the SLURM controller did not answer `scontrol ping` within {timeout:g} s "
                           "(is slurmctld running? --launcher-set ping_timeout=SECONDS to wait longer)") from None
    except OSError as exc:
        raise DDBenchError(f"launcher slurm: cannot run scontrol: {exc}") from None
    text = " ".join((out.stdout + " " + out.stderr).split())
    if out.returncode != 0 or "UP" not in out.stdout:
        raise DDBenchError(f"launcher slurm: no SLURM controller answers (`scontrol ping` after "
                           f"{time.monotonic() - start:.1f} s: {text or 'no output'}); start slurmctld "
                           "(.ci/slurm-setup.sh for a local one) or use --launcher local")
