"""The kit every `ddbench` command is built with: the shared run flags, the request they describe, loading the
plugins a command uses (with every problem said as a warning), and a run's summary.

Light at import (no torch): `ddbench --help` imports every command module, and each imports this one.
The run machinery itself (ddbench/run/runner.py) is imported when a command runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..api import DEFAULT_DATASET, DEFAULT_MODEL, DEFAULT_PROTOCOL, check_budget
from ..core.errors import DDBenchError
from ..core.records import RunRecord
from ..core.roles import EVAL_FLAGS
from ..store.config import config_warnings, load_config, parse_sets
from ..store.results import DEFAULT_OUT


def integer(text: str, minimum: int) -> int:
    """The one check of an integer flag value (`--ipc`, `--seeds`, `--jobs`...): ValueError says why."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{value} must be >= {minimum}")
    return value


def duration(text: str) -> float:
    """The one check of a number of seconds (`--budget`, `--budgets`): positive, finite, at most MAX_BUDGET."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    try:
        return check_budget(value)
    except ValueError as exc:
        raise ValueError(f"{text!r} {exc}") from None


def int_at_least(minimum: int):
    """argparse type: an integer >= `minimum` (for --eval-epochs 0, the protocol's Param bounds it further,
    exactly as `--set eval.KEY=` is bounded)."""
    def parse(text: str) -> int:
        try:
            return integer(text, minimum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


positive_int = int_at_least(1)
count = int_at_least(0)


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# Flag values: one check per kind of value, for a single flag and a list alike
# --------------------------------------------------------------------------------------------------


def split_list(flag: str, text: str) -> list[str]:
    items = [x.strip() for x in str(text).split(",")]
    if not text or any(not x for x in items):
        raise DDBenchError(f"{flag} {text!r}: expected a comma-separated list without empty entries")
    return items


def dedupe(items: list) -> list:
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def parse_ints(flag: str, text: str, minimum: int, unique: bool = True) -> list[int]:
    out = []
    for item in split_list(flag, text):
        try:
            out.append(integer(item, minimum))
        except ValueError as exc:
            raise DDBenchError(f"{flag} {text!r}: {exc}") from None
    return dedupe(out) if unique else out


def parse_seeds(text: str, unique: bool = True) -> list[int]:
    """`--seeds 3` is seeds 0, 1, 2; `--seeds 0,5,7` names the seeds (a trailing comma: `--seeds 4,`)."""
    text = str(text).strip()
    if "," not in text:
        (count,) = parse_ints("--seeds", text, 1)
        return list(range(count))
    return parse_ints("--seeds", text.rstrip(",") if text.endswith(",") and text.count(",") == 1 else text, 0, unique)


def parse_budgets(text: str | None, unique: bool = True) -> list[float]:
    if not text:
        return []
    out = []
    for item in split_list("--budgets", text):
        try:
            out.append(duration(item))
        except ValueError as exc:
            raise DDBenchError(f"--budgets {text!r}: {exc}") from None
    return dedupe(out) if unique else out


def add_common_run_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `run` and `compare` (compare takes lists for method, IPC and seed)."""
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="dataset name (see `ddbench list`)")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, help=f"evaluation protocol (default: {DEFAULT_PROTOCOL})")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"evaluation architecture (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--eval-models", type=positive_int, default=None, help="networks trained in evaluation")
    p.add_argument("--eval-epochs", type=count, default=None,
                   help="epochs per evaluation network (0 = one pass; the protocol's own bounds apply, as for --set)")
    p.add_argument("--eval-impl", default=None, help="evaluation implementation (fast or loop)")
    p.add_argument("--budget", type=seconds, default=None, help="generation time budget in seconds")
    p.add_argument("--preset", default="default", choices=["default", "paper"],
                   help="default: plugins.toml settings (CPU-sized); paper: the papers' settings")
    p.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="method setting (eval.KEY=VALUE for the protocol); repeatable")
    p.add_argument("--data-root", default=None, help="folder holding datasets")
    p.add_argument("--download", action="store_true", help="allow torchvision to download a missing dataset")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (database, runs, caches)")
    p.add_argument("--db", default=None, help="results database (default: OUT/ddbench.sqlite)")
    p.add_argument("--config", default=None, help="plugins.toml to use")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_report_args(p) -> None:
    """The flags `compare` and `report` share."""
    p.add_argument("--report", default=None, help="report folder (default: OUT/report)")
    p.add_argument("--reference", default=None,
                   help="method the others are t-tested against (default: the first method of --methods)")


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_report(result) -> None:
    """A written report (ddbench.analysis.report.ReportResult) on the terminal, and where its files are."""
    print(result.terminal)
    also = [result.csv.name, *(p.name for p in result.plots)]
    if getattr(result, "html", None) is not None:  # report.html (ddbench/analysis/report_html.py), with its size
        also.insert(0, f"{result.html.name} {result.html.stat().st_size / 1024:.0f} KB")
    print(f"report: {shown_path(result.markdown)}  (also {', '.join(also)})")


def load(config_path: str | None):
    """(config, registry) for a command, after printing every plugin and settings problem as a warning."""
    from ..run.resolve import registry_for

    config = load_config(config_path)
    registry = registry_for(config)
    warn_problems(registry, config)
    return config, registry


def warn_problems(registry, config=None) -> None:
    """Every command says which plugins were refused and which settings tables are typos, on stderr."""

    lines = registry.problems() + ([f"warning: {w}" for w in config_warnings(config, registry)] if config else [])
    for line in lines:
        print(line, file=sys.stderr)


def request_from_args(args, **overrides: Any):
    """The RunRequest the shared run flags describe (`run` and, with lists expanded per cell, `compare`)."""
    from ..run.resolve import RunRequest

    method_sets, eval_sets = parse_sets(args.sets)
    fields = dict(
        dataset=args.dataset, protocol=args.protocol, model=args.model, device=args.device,
        **{field: getattr(args, dest) for _, _, field, dest in EVAL_FLAGS}, budget=args.budget,
        preset=args.preset, sets=method_sets, eval_sets=eval_sets, data_root=args.data_root, download=args.download,
        out=args.out, db=args.db, progress=not args.no_progress,
    )
    fields.update(overrides)
    return RunRequest(**fields)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_summary(rec: RunRecord, stream=None) -> None:
    stream = stream or sys.stdout
    budget = f" (budget {rec.budget:g} s: the IPC it produced)" if rec.budget else ""
    lines = [
        ("run", rec.run_id),
        ("status", rec.status),
        ("method / dataset", f"{rec.method} / {rec.dataset}"),
        ("IPC / images", f"{rec.ipc} / {_fmt(rec.images)}{budget}"),
        ("protocol / model", f"{rec.protocol} / {rec.model}"),
        ("accuracy", f"{_fmt(rec.accuracy_mean)} ± {_fmt(rec.accuracy_std)} % over {_fmt(rec.n_eval_models)} networks "
                     "(population std, as np.std)"),
        ("distill / eval", f"{_fmt(rec.distill_seconds, 1)} s / {_fmt(rec.eval_seconds, 1)} s on {rec.device}"
                           + (f", {precision}" if (precision := rec.eval_detail("precision")) else "")),
        ("synthetic set", _fmt(rec.artifact)),
    ]
    for key, value in lines:
        print(f"  {key:<18} {value}", file=stream)
    if rec.error:
        print(f"  error: {rec.error_line}", file=stream)


__all__ = ["add_common_run_args", "add_report_args", "request_from_args", "load", "warn_problems", "print_summary",
           "print_report", "shown_path", "positive_int", "count", "int_at_least", "seconds", "integer", "duration",
           "split_list", "dedupe", "parse_ints", "parse_seeds", "parse_budgets"]
