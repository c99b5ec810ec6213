"""`ddbench compare`: run a grid of methods x IPC x seeds under one protocol, then report.

    ddbench compare --methods random,dm --dataset fashion-mnist --ipc 1,10,50 --seeds 3 --protocol dsa

1. Expand the grid and resolve every cell first (an unknown method or a bad setting stops the sweep
   before anything runs). Cells with the same config hash (duplicate list entries) are merged.
2. Skip every cell the database already holds as `ok` with the same config hash: a killed sweep picks
   up where it stopped, and a second call runs nothing.
3. Run the rest through a launcher plugin (`local` or `slurm` built in). Workers return rows; this
   process alone writes them to the database, one transaction per finished cell. A failed cell is
   recorded as failed with its error, and the sweep goes on.
4. Report (ddbench/analysis/report.py): terminal table, report.md, results.csv, plots, image grids.

`ddbench report` (ddbench/commands/report_command.py) builds the same report from the database alone.
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import hookimpl
from ..api import Command, resolve_params
from ..core.atomic import missing_dirs, remove_empty, writable_dir
from ..core.errors import DDBenchError
from ..core.records import RunRecord
from ..core.roles import EVAL_FLAGS, IMPLEMENTATION
from ..run.sweeps import Job, JobState, failed_record, plan
from ..store.results import DEFAULT_OUT, PENDING, CellLock, db_path, open_store, record_or_keep
from .clikit import (add_common_run_args, add_report_args, dedupe, load, parse_budgets, parse_ints, parse_seeds,
                     print_report, request_from_args, shown_path, split_list)

DEFAULT_LAUNCHER = "local"


# --------------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------------


@dataclass
class Grid:
    jobs: list[Job]  # one per unique config hash, in grid order
    merged: int = 0  # duplicate cells merged away
    budget_methods: list[str] = field(default_factory=list)
    fixed_methods: list[str] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)  # config hash -> runner.Resolved: each cell resolved once

    @property
    def hashes(self) -> list[str]:
        return [j.config_hash for j in self.jobs]


def build_grid(base, methods: list[str], ipcs: list[int], seeds: list[int], budgets: list[float],
               config, registry, config_paths: tuple[str, ...], models: list[str] | None = None) -> Grid:
    """Resolve every cell (request -> config hash) before anything runs; duplicates merged by hash.

    With budgets, methods that take a generation budget run one cell per (IPC, budget); the others run
    at fixed IPC only, so one command can compare both kinds.
    """
    from ..run.resolve import resolve
    from ..run.runner import plugin_versions

    unknown = [m for m in dedupe(methods) if m not in registry.methods]
    if unknown:
        valid = ", ".join(registry.names("methods")) or "(none loaded)"
        raise DDBenchError(f"unknown method{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
                           f"--methods; valid: {valid}. Nothing was run")
    grid = Grid(jobs=[])
    total = 0
    for method in methods:
        takes_budget = registry.takes_budget(method)
        method_budgets: list[float | None] = list(budgets) if (budgets and takes_budget) else [None]
        bucket = grid.budget_methods if method_budgets != [None] else grid.fixed_methods
        if method not in bucket:
            bucket.append(method)
        for ipc in ipcs:
            for budget in method_budgets:
                for architecture, seed in ((m, s) for m in models or [None] for s in seeds):
                    total += 1
                    request = replace(base, method=method, ipc=ipc, seed=seed, budget=budget,
                                      eval_architecture=architecture)
                    resolved = resolve(request, config, registry)
                    if resolved.config_hash in grid.resolved:
                        continue
                    grid.resolved[resolved.config_hash] = resolved
                    grid.jobs.append(Job(len(grid.jobs), request, config_paths, resolved.config_hash, resolved.config(),
                                         plugin_versions(registry, request, resolved.method_params)))
    grid.merged = total - len(grid.jobs)
    if budgets and not grid.budget_methods:
        able = registry.budget_methods()
        raise DDBenchError(f"--budgets/--budget given, but none of {', '.join(dedupe(methods))} takes a generation "
                           f"budget; methods that do: {', '.join(sorted(able)) or '(none loaded)'}")
    return grid


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", required=True, help="comma-separated methods, e.g. random,dm,mtt,minmax-diffusion")
    p.add_argument("--ipc", default="10", help="comma-separated images per class, e.g. 1,10,50 (default 10)")
    p.add_argument("--seeds", default="1", help="number of seeds (3 = seeds 0,1,2) or a list like 0,5,7 (default 1)")
    p.add_argument("--models", default=None,
                   help="comma-separated evaluation architectures, e.g. convnet,resnet18,alexnet,vgg11,mlp: each set "
                        "is evaluated on each (the method distils with --model); adds a cross-architecture table")
    p.add_argument("--budgets", default=None,
                   help="comma-separated generation budgets in seconds, for methods that take one (also --budget)")
    p.add_argument("--launcher", default=DEFAULT_LAUNCHER, help="where jobs run: local (default), slurm, or a plugin's")
    p.add_argument("--jobs", type=int, default=1, help="jobs at once (local: processes; slurm: array parallelism)")
    p.add_argument("--launcher-set", dest="launcher_sets", action="append", metavar="KEY=VALUE", default=[],
                   help="launcher setting, e.g. partition=gpu, gpus_per_node=1 (see `ddbench list --params`)")
    p.add_argument("--retry", choices=["failed", "none"], default="failed",
                   help="failed (default): run again cells whose last run failed; none: keep their failure")
    p.add_argument("--dry-run", action="store_true", help="print the grid and what would run; run nothing")
    add_report_args(p)
    p.add_argument("--no-report", action="store_true", help="skip writing the report")
    add_common_run_args(p)


def _launcher(registry, name: str, sets: list[str]):
    launcher = registry.get("launchers", name)
    values: dict[str, str] = {}
    for item in sets:
        if "=" not in item:
            raise DDBenchError(f"--launcher-set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        values[key.strip()] = value
    settings = resolve_params(f"launcher {name}", getattr(launcher, "params", {}) or {}, values)
    return launcher, settings


def _absolute(request):
    """Paths a worker on another machine or folder can use."""
    return replace(
        request,
        out=str(Path(request.out).absolute()),
        db=str(Path(request.db).absolute()) if request.db else None,
        data_root=str(Path(request.data_root).absolute()) if request.data_root else None,
    )


def _describe(rec: RunRecord) -> str:
    if rec.ok:
        acc = rec.accuracy_mean
        # a run's own figure: its networks' population std (as np.std), labelled by their number
        acc_text = (f"{acc:.2f} ± {rec.accuracy_std or 0.0:.2f} % ({rec.n_eval_models} nets)" if acc is not None
                    else "no eval")
        return f"ok      {acc_text}  (distill {rec.distill_seconds or 0:.1f} s, eval {rec.eval_seconds or 0:.1f} s)"
    return f"FAILED  {rec.error_line or 'unknown error'}  (run {rec.run_id})"


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by the kill test in a subprocess
    from ..host.guard import on_signal

    on_signal(signum, frame)  # noted, so an in-process cell's plugin_call knows the interrupt is real


@dataclass
class Sweep:
    """A parsed `ddbench compare` command: the grid, its launcher, and where records go."""

    args: argparse.Namespace
    methods: list[str]
    models: list[str]
    ipcs: list[int]
    seeds: list[int]
    budgets: list[float]
    grid: Grid
    launcher: Any
    settings: dict[str, Any]
    db: Path
    pending_dir: Path
    out: Path
    registry: Any = None  # the plugins loaded for this sweep (plugins.toml applied); its report reads them too


def parse_sweep(args) -> Sweep:
    """Parse the lists, load plugins, resolve every cell; nothing is run or written (bad input: DDBenchError)."""
    if args.jobs < 1:
        raise DDBenchError(f"--jobs {args.jobs} must be >= 1")
    methods = split_list("--methods", args.methods)
    models = dedupe(split_list("--models", args.models)) if args.models else []
    # Lists keep their duplicates here: the grid merges cells by config hash and says how many it merged.
    ipcs = parse_ints("--ipc", args.ipc, 1, unique=False)
    seeds = parse_seeds(args.seeds, unique=False)
    budgets = parse_budgets(args.budgets, unique=False)
    if args.budget is not None and args.budget not in budgets:
        budgets.append(args.budget)
    config, registry = load(args.config)
    launcher, settings = _launcher(registry, args.launcher, args.launcher_sets)
    if args.reference is not None and args.reference not in methods:
        raise DDBenchError(f"--reference {args.reference!r} is not one of --methods: {', '.join(dedupe(methods))}")
    base = _absolute(request_from_args(args, method=methods[0], budget=None, progress=False))
    grid = build_grid(base, methods, ipcs, seeds, budgets, config, registry, config.paths, models)
    return Sweep(args, methods, models, ipcs, seeds, budgets, grid, launcher, settings, db_path(base.out, base.db),
                 Path(base.out) / PENDING, Path(base.out), registry)


def check_cells(sweep: Sweep, jobs: list[Job]) -> None:
    """Every cell that will run passes the checks `ddbench run` makes before any work: device, data, and the
    method's own `validate`; so bad input exits 2 before anything runs, as it does under `run`. The cells were
    resolved once, by build_grid."""
    from ..run.runner import check_cell

    datasets: dict[tuple, Any] = {}
    for job in jobs:
        try:
            check_cell(sweep.grid.resolved[job.config_hash], sweep.registry, datasets)
        except DDBenchError as exc:
            raise DDBenchError(f"cell {job.label}: {exc}. Nothing was run") from None


def _run_jobs(sweep: Sweep, todo: list[Job]) -> int:
    """Launch the jobs and store each record as it arrives (the driver alone writes); returns the failures.

    The driver holds each cell's CellLock from launch until its row is stored, so a second sweep (or `run`) of
    the same cell on the same --out waits instead of running it twice: cells another process holds are put last,
    waited for, and skipped if that process stored them."""
    args = sweep.args
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None  # kill: clean up as Ctrl-C
    start, failed, unstored, n, skipped = time.monotonic(), 0, 0, 0, 0
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    locks = {job.config_hash: CellLock(sweep.grid.resolved[job.config_hash].work_dir) for job in todo}
    mine = [job for job in todo if locks[job.config_hash].acquire(wait=False)]
    busy = [job for job in todo if job not in mine]
    try:
        for batch in (mine, busy):
            if batch is busy and busy:
                say(f"waiting for {len(busy)} cell(s) another process is running in {shown_path(sweep.out)}")
                batch = []
                for job in busy:
                    locks[job.config_hash].acquire()
                    done = plan([job], sweep.db, retry_failed=True)[JobState.DONE]
                    if done:  # stored by the other process meanwhile: not run twice
                        locks[job.config_hash].release()
                        skipped += 1
                        n += 1
                        say(f"[{n:>{len(str(len(todo)))}}/{len(todo)}] {job.label:<34} done by another process")
                    else:
                        batch.append(job)
            if not batch:
                continue
            runs = sweep.launcher.run(batch, sweep.settings, args.jobs, say)
            try:
                for job, rec in runs:
                    n += 1
                    if not isinstance(rec, RunRecord):
                        rec = failed_record(job, f"launcher {args.launcher!r} yielded {type(rec).__name__}, "
                                                 "not a RunRecord")
                    unstored += not record_or_keep(sweep.db, rec, sweep.pending_dir, say)
                    locks[job.config_hash].release()
                    failed += not rec.ok
                    say(f"[{n:>{len(str(len(todo)))}}/{len(todo)}] {job.label:<34} {_describe(rec)}")
            finally:
                runs.close()
    finally:
        for lock in locks.values():
            lock.release()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    say(f"ran {len(todo) - skipped} cell(s) in {time.monotonic() - start:.1f} s; {failed} failed"
        + (f"; {skipped} done by another process" if skipped else "")
        + (f"; {unstored} kept in {sweep.pending_dir} (not stored)" if unstored else ""))
    return failed + unstored


def _announce(sweep: Sweep, states: dict[JobState, list[Job]]) -> None:
    args, grid, todo = sweep.args, sweep.grid, states[JobState.TODO]
    done = len(states[JobState.DONE]) + len(states[JobState.KEPT_FAILED])
    shape = (f"{len(dedupe(sweep.methods))} method(s) x {len(dedupe(sweep.ipcs))} IPC x "
             f"{len(dedupe(sweep.seeds))} seed(s)")
    if sweep.budgets and grid.budget_methods:
        shape += (f", budgets {', '.join(f'{b:g}' for b in dedupe(sweep.budgets))} s for "
                  f"{', '.join(grid.budget_methods)}")
    merged = f", {grid.merged} duplicate(s) merged" if grid.merged else ""
    print(f"grid: {len(grid.jobs)} cells ({shape}{merged}); {done} already in {shown_path(sweep.db)}; "
          f"{len(todo)} to run" + (f" with launcher {args.launcher} (jobs {args.jobs})" if todo else ""), flush=True)
    if sweep.budgets and grid.fixed_methods and grid.budget_methods:
        print(f"note: {', '.join(grid.fixed_methods)} take no generation budget and run at fixed IPC only")


def cmd_compare(args) -> int:
    sweep = parse_sweep(args)
    retry = args.retry == "failed"
    states = plan(sweep.grid.jobs, sweep.db, retry_failed=retry)  # reads only: a dry run writes nothing
    check_cells(sweep, states[JobState.TODO])
    if states[JobState.TODO] and not args.dry_run:
        sweep.launcher.check(sweep.settings, args.jobs)  # fail fast (no controller, missing package)
    made = []  # folders the checks create: removed again if a later check refuses (exit 2 writes nothing)
    if not args.dry_run and not args.no_report:
        made = missing_dirs(_report_dir(sweep))
        writable_dir(_report_dir(sweep), "--report")
    if not args.dry_run:
        # Before any work: a database that cannot take a row costs nothing. Opening it also stores records
        # an earlier run kept in OUT/pending, which may finish cells: plan again.
        made += missing_dirs(sweep.db.parent)
        try:
            if open_store(sweep.db, sweep.pending_dir, print) and sweep.pending_dir.is_dir():
                states = plan(sweep.grid.jobs, sweep.db, retry_failed=retry)
        except DDBenchError:
            remove_empty(made)
            raise
    todo = states[JobState.TODO]
    _announce(sweep, states)
    if args.dry_run:
        for job in todo:
            print(f"  would run  {job.label}  [{job.config_hash}]")
            for what in ("method_params", "protocol_settings"):  # the resolved settings, as the cell would run
                settings = job.config.get(what) or {}
                print(f"      {what.split('_')[0]}: {', '.join(f'{k}={v!r}' for k, v in sorted(settings.items()))}")
        return 0
    failed = _run_jobs(sweep, todo) if todo else 0
    if not args.no_report:
        failed = max(failed, _report(sweep))
    return 1 if failed else 0


def _report_dir(sweep: Sweep) -> Path:
    return Path(sweep.args.report) if sweep.args.report else sweep.out / "report"


def _report(sweep: Sweep) -> int:
    """Write the report of this grid; returns how many of its cells failed."""
    from ..analysis.report import build_report
    from ..analysis.report_html import write_html

    args = sweep.args
    report_dir = _report_dir(sweep)
    command = "ddbench compare " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "compare"
                                              else _argv_of(args))
    reference = args.reference or sweep.methods[0]  # the host names no method: the first listed is the reference
    result = build_report(sweep.db, report_dir, hashes=sweep.grid.hashes, methods=sweep.methods, models=sweep.models,
                          reference=reference, command=command, registry=sweep.registry)
    write_html(result)  # report.html beside report.md
    print()
    print_report(result)
    return sum(1 for r in result.rows if not r.ok)


def _argv_of(args) -> list[str]:
    """A command line for the report when compare was called programmatically (cli.main(argv))."""
    out = ["--methods", args.methods, "--ipc", str(args.ipc), "--seeds", str(args.seeds),
           "--dataset", args.dataset, "--protocol", args.protocol]
    flags = [(flag, getattr(args, dest)) for role, flag, _, dest in EVAL_FLAGS if role != IMPLEMENTATION]
    for flag, value in (*flags, ("--budgets", args.budgets),
                        ("--launcher", args.launcher if args.launcher != "local" else None)):
        if value is not None:
            out += [flag, str(value)]
    return out


@hookimpl
def register_commands(register):
    register(Command("compare",
                     "run methods x IPC x seeds under one protocol (skipping cells already done), then report",
                     add_arguments, cmd_compare,
                     "Expand the grid, skip cells the database already holds with the same config, run the rest, "
                     "report. A killed sweep restarted with the same command runs only the missing cells."))


__all__ = ["add_arguments", "add_report_args", "build_grid", "cmd_compare", "parse_seeds",
           "parse_ints", "parse_budgets"]
