"""The built-in launchers: where the jobs of a sweep (`ddbench compare`) run. They only launch.

The sweep contract (what a job is, the worker `run_job`, job states) lives in ddbench/run/sweeps.py and the
launcher contract in `ddbench.api.Launcher`. A launcher runs jobs somewhere and hands each job's
`RunRecord` back to the driver, which alone writes the results database (a worker never touches it), so
a sweep killed at any point leaves only whole rows of finished cells behind.

Built in (registered through the `register_launchers` hook, exactly as a third-party Ray or Kubernetes
launcher would be):

* `local`: the driver's own process for `--jobs 1`, a pool of `--jobs N` processes otherwise, each
  pinned to one GPU (round robin over the visible GPUs) where GPUs exist.
* `slurm`: a SLURM job array through submitit (`pip install 'ddbench[slurm]'`), at most `--jobs N`
  array tasks at once (`slurm_array_parallelism`); a preempted or timed-out task is requeued
  (submitit's `Checkpointable`) and resumes from the checkpoints in its hash-keyed work folder.
  `--launcher-set cluster=local` runs the same code through submitit's local executor (no SLURM).

`slurm` is slurm_launcher.py's; this module registers both.

A launcher plugin subclasses `ddbench.api.Launcher`; docs/plugins.md has the contract and an example.
"""
from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from typing import Any

from .. import hookimpl
from ..api import DDBenchError, Launcher, Param
from ..api import Job, RunRecord
from ..helpers import failed_record, run_job
from .slurm_launcher import SlurmLauncher, SweepJob, ping_controller  # SweepJob: pickled jobs name it here

# Launcher settings are ddbench's own (no paper has them); each is explained where it is documented.
LOCAL_SOURCE = "docs/compare.md#local (ddbench's launcher setting)"


# --------------------------------------------------------------------------------------------------
# local
# --------------------------------------------------------------------------------------------------


def _visible_gpus() -> list[str]:
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        count = 0
    if count == 0:
        return []
    if raw:
        ids = [x.strip() for x in raw.split(",") if x.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def _pool_init(slots: Any, gpus: list[str], threads: int) -> None:
    """Runs first in every pool worker: take a slot, pin its GPU, share the CPU cores."""
    _pin(slots.get(), gpus, threads)


def _pin(slot: int, gpus: list[str], threads: int) -> None:
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ["DDBENCH_WORKER_SLOT"] = str(slot)
    import torch

    torch.set_num_threads(threads)


def _worker(conn: Any, slot: int, gpus: list[str], threads: int) -> None:
    """A pool worker: run each job the driver sends, send its row back; None (or a closed pipe) ends it."""
    _pin(slot, gpus, threads)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if job is None:
            return
        try:
            row = run_job(job)
        except KeyboardInterrupt:
            return
        except BaseException as exc:  # noqa: BLE001 - run_job records failures; this is its last resort
            row = failed_record(job, "".join(traceback.format_exception(exc)))
        try:
            conn.send(row)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable row: the cell fails, the worker goes on
            conn.send(failed_record(job,
                                    f"the worker could not send this cell's row back: {type(exc).__name__}: {exc}"))


def _death(exitcode: int | None) -> str:
    """How a worker ended, in words: `killed by SIGSEGV` or `exit code 3`."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclass
class _Slot:
    """One worker process of the local pool and the job it is running (None: idle)."""

    index: int
    proc: Any
    conn: Any
    job: Job | None = None


class LocalLauncher(Launcher):
    name = "local"
    description = ("this machine: --jobs 1 in the driver's process, --jobs N a process pool, one GPU each where "
                   "GPUs exist")
    params = {
        "gpus": Param("auto", LOCAL_SOURCE,
                      help="GPUs to spread workers over: auto (every visible GPU), none, or ids like 0,2"),
        "start_method": Param("spawn", LOCAL_SOURCE, choices=("spawn", "forkserver", "fork"),
                              help="multiprocessing start method of the pool (spawn is safe with CUDA)"),
    }

    def _gpus(self, settings: dict[str, Any]) -> list[str]:
        value = str(settings["gpus"]).strip()
        if value == "auto":
            return _visible_gpus()
        if value in ("none", ""):
            return []
        ids = [x.strip() for x in value.split(",") if x.strip()]
        if not all(x.isdigit() for x in ids):
            raise DDBenchError(f"launcher local: gpus={value!r} is not auto, none, or a comma list of GPU ids")
        return ids

    def check(self, settings: dict[str, Any], parallelism: int) -> None:
        self._gpus(settings)

    def run(self, jobs, settings, parallelism, log):
        if parallelism <= 1 or len(jobs) <= 1:
            for job in jobs:  # in the driver's process: no start-up cost, one job at a time
                yield job, run_job(job)
            return
        yield from self._pool(jobs, settings, parallelism, log)

    def _pool(self, jobs, settings, parallelism, log):
        """Run jobs on `parallelism` worker processes, each job's row sent back over the worker's own pipe.

        A worker that dies (a segfault in native code, a kill, an `os._exit` no guard caught) fails only the job
        it was running, naming how it ended, and a fresh worker takes its slot; concurrent.futures' pool instead
        marks every queued and running job broken when one worker dies."""
        import multiprocessing as mp
        from multiprocessing.connection import wait

        workers = min(parallelism, len(jobs))
        gpus = self._gpus(settings)
        if gpus and workers > len(gpus):
            log(f"note: {workers} workers share {len(gpus)} GPU(s)")
        pool = _Pool(mp.get_context(settings["start_method"]), jobs, workers, gpus)
        try:
            for slot in pool.slots:
                pool.give(slot)
            while any(s.job is not None for s in pool.slots):
                busy = [s for s in pool.slots if s.job is not None]
                ready = set(wait([s.conn for s in busy] + [s.proc.sentinel for s in busy]))
                for slot in busy:
                    row = pool.result(slot, ready)
                    if row is None:
                        continue
                    job = slot.job
                    pool.give(slot)
                    yield job, row
        finally:
            pool.close()


class _Pool:
    """The worker processes of one `--jobs N` sweep (LocalLauncher._pool) and the jobs not yet handed out."""

    def __init__(self, mp_context: Any, jobs: list[Job], workers: int, gpus: list[str]):
        self.ctx, self.gpus, self.queue = mp_context, gpus, list(jobs)
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.slots = [self.start(i) for i in range(workers)]

    def start(self, index: int) -> _Slot:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, index, self.gpus, self.threads), daemon=True,
                                name=f"ddbench-worker-{index}")
        proc.start()
        child.close()
        return _Slot(index, proc, parent)

    def give(self, slot: _Slot) -> None:
        slot.job = self.queue.pop(0) if self.queue and slot.proc.is_alive() else None
        if slot.job is not None:
            try:
                slot.conn.send(slot.job)
            except OSError:  # the worker died meanwhile: its sentinel fires, and this job is failed as its own
                pass

    def result(self, slot: _Slot, ready: set) -> RunRecord | None:
        """The row of `slot`'s job once its worker sent it back or died with it (a failed row), else None."""
        row = None
        if slot.conn in ready or (slot.proc.sentinel in ready and slot.conn.poll()):
            try:
                row = slot.conn.recv()
            except (EOFError, OSError):
                row = None
        elif slot.proc.sentinel not in ready:
            return None
        job = slot.job
        if row is None:  # the worker died with this job: only this job failed
            slot.proc.join(5)
            row = failed_record(job, "the worker process running this cell died "
                                     f"({_death(slot.proc.exitcode)}) in plugin code of method "
                                     f"{job.request.method!r} or its dataset or "
                                     "protocol; the other cells ran on; rerun the sweep to retry it")
            slot.conn.close()
            if self.queue:  # a fresh worker takes the slot only if there is work left for it
                fresh = self.start(slot.index)
                slot.proc, slot.conn = fresh.proc, fresh.conn
        if not isinstance(row, RunRecord):
            row = failed_record(job, f"the worker sent back {type(row).__name__}, not a RunRecord")
        return row

    def close(self) -> None:
        """A finished, killed or interrupted sweep leaves no worker computing for nobody."""
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except (OSError, ValueError):
                pass
        for slot in self.slots:
            slot.proc.join(timeout=0 if slot.job is not None else 5)
            if slot.proc.is_alive():
                slot.proc.terminate()
                slot.proc.join(timeout=5)
            slot.conn.close()


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------


@hookimpl
def register_launchers(register):
    register(LocalLauncher())
    register(SlurmLauncher())


__all__ = ["SweepJob", "LocalLauncher", "SlurmLauncher", "ping_controller"]
