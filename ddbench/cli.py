"""The `ddbench` command line. Exit codes: 0 success, 2 bad usage or bad input, 1 a run that failed."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .api import DDBenchError, RunFailed
from .config import load_config, parse_sets
from .guard import Terminated, handle_signals
from .plugins import CONTRACTS, KINDS
from .records import RunRecord
from .results import DEFAULT_OUT


def _int_at_least(minimum: int):
    """An argparse type: an integer >= `minimum` (for --eval-epochs 0, the protocol's Param bounds it further,
    exactly as `--set eval.KEY=` is bounded)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite number of seconds")
    from .runner import MAX_BUDGET

    if value > MAX_BUDGET:
        raise argparse.ArgumentTypeError(f"{text!r} is above the cap of {MAX_BUDGET:g} s (a day)")
    return value


def add_common_run_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `run` and `compare` (compare takes lists for method, IPC and seed)."""
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (see `ddbench list`)")
    p.add_argument("--protocol", default="dsa", help="evaluation protocol (default: dsa)")
    p.add_argument("--model", default="convnet", help="evaluation architecture (default: convnet)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--eval-models", type=_positive_int, default=None, help="networks trained in evaluation")
    p.add_argument("--eval-epochs", type=_count, default=None,
                   help="epochs per evaluation network (0 = one pass; the protocol's own bounds apply, as for --set)")
    p.add_argument("--eval-impl", default=None, help="evaluation implementation (fast or loop)")
    p.add_argument("--budget", type=_seconds, default=None, help="generation time budget in seconds")
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ddbench", description="Dataset-distillation benchmark")
    parser.add_argument("--version", action="version", version=f"ddbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="distill with one method and evaluate the synthetic set")
    p.add_argument("--method", required=True)
    p.add_argument("--ipc", type=_positive_int, default=10, help="images per class (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--no-eval", action="store_true", help="distill and save only")
    p.add_argument("--reference", default=None, metavar="METHOD",
                   help="afterwards, print METHOD's accuracy at equal count (this run's images per class) under the "
                        "same evaluation (e.g. random): recorded runs, else the shipped reference table, else the "
                        "command that computes it once")
    add_common_run_args(p)

    p = sub.add_parser("list", help="methods, datasets, protocols, models, samplers, policies, launchers")
    p.add_argument("--params", action="store_true",
                   help="also list each setting: its effective value, the layer that set it, and its source")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset whose per-dataset settings --params shows")
    p.add_argument("--preset", default="default", choices=["default", "paper"], help="as for `run`")
    p.add_argument("--config", default=None)

    p = sub.add_parser("plugins", help="loaded plugins, versions and where they come from")
    p.add_argument("--config", default=None)

    p = sub.add_parser("show", help="one recorded run")
    p.add_argument("run_id")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--db", default=None)
    p.add_argument("--json", action="store_true")

    from . import compare

    compare.add_parsers(sub, add_common_run_args)
    from .default_plugins import eccv2024

    eccv2024.add_parser(sub, add_common_run_args)  # `ddbench challenge`
    return parser


def load(config_path: str | None):
    """(config, registry) for a command, after printing every plugin and settings problem as a warning."""
    from .runner import registry_for

    config = load_config(config_path)
    registry = registry_for(config)
    warn_problems(registry, config)
    return config, registry


def warn_problems(registry, config=None) -> None:
    """Every command says which plugins were refused and which settings tables are typos, on stderr."""
    from .config import config_warnings

    lines = registry.problems() + ([f"warning: {w}" for w in config_warnings(config, registry)] if config else [])
    for line in lines:
        print(line, file=sys.stderr)


def cmd_list(args) -> int:
    config, registry = load(args.config)
    for kind in KINDS:
        print(f"{kind}:")
        names = registry.names(kind)
        if not names:
            print("  (none)")
        for name in names:
            obj = registry.items[kind][name]
            desc = getattr(obj, "description", "") or ""
            print(f"  {name:<20} [{registry.owners[kind][name]}] {desc}")
            if args.params and getattr(obj, "params", None):
                _print_params(obj.params, config, kind, name, args)
    return 0


def _print_params(spec, config, kind: str, name: str, args) -> None:
    """`key = effective value  [the layer that set it]  (where the default comes from)`."""
    from .config import effective

    layers = config.sources(kind, name, args.dataset) if kind in ("methods", "protocols") else []
    for key, (value, layer) in effective(spec, layers, preset=args.preset).items():
        param = spec[key]
        set_by = "" if layer == "default" else f"  [set by {layer}; default {param.default!r}]"
        src = f"  ({param.source})" if param.source else ""
        print(f"      {key} = {value!r}{set_by}{src}")


def cmd_plugins(args) -> int:
    from .runner import registry_for

    registry = registry_for(load_config(args.config))
    for info in sorted(registry.plugins, key=lambda p: p.name):
        state = f"REFUSED: {info.error}" if info.error else "ok"
        provided = [f"{CONTRACTS[k].singular}:{n}" for k, owners in registry.owners.items() for n, o in owners.items()
                    if o == info.name]
        print(f"{info.name:<18} {info.version or '-':<8} {info.source:<20} {info.module:<32} {state}")
        if info.error:
            print(f"{'':<18} {info.fix}")
        if provided:
            print(f"{'':<18} provides {', '.join(sorted(provided))}")
    for name, why in sorted(registry.excluded.items()):
        print(f"{name:<18} {'-':<8} {'':<20} {'':<32} not loaded: {why}")
    for warning in registry.warnings:
        print(f"warning: {warning}")
    return 0


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
        ("accuracy", f"{_fmt(rec.accuracy_mean)} ± {_fmt(rec.accuracy_std)} % over {_fmt(rec.n_eval_models)} networks"),
        ("distill / eval", f"{_fmt(rec.distill_seconds, 1)} s / {_fmt(rec.eval_seconds, 1)} s on {rec.device}"),
        ("synthetic set", _fmt(rec.artifact)),
    ]
    for key, value in lines:
        print(f"  {key:<18} {value}", file=stream)
    if rec.error:
        print(f"  error: {rec.error_line}", file=stream)


def request_from_args(args, **overrides: Any):
    """The RunRequest the shared run flags describe (`run` and, with lists expanded per cell, `compare`)."""
    from .runner import RunRequest

    method_sets, eval_sets = parse_sets(args.sets)
    fields = dict(
        dataset=args.dataset, protocol=args.protocol, model=args.model, device=args.device,
        eval_models=args.eval_models, eval_epochs=args.eval_epochs, eval_impl=args.eval_impl, budget=args.budget,
        preset=args.preset, sets=method_sets, eval_sets=eval_sets, data_root=args.data_root, download=args.download,
        out=args.out, db=args.db, progress=not args.no_progress,
    )
    fields.update(overrides)
    return RunRequest(**fields)


def cmd_run(args) -> int:
    from .runner import execute, resolve

    request = request_from_args(args, method=args.method, ipc=args.ipc, seed=args.seed, skip_eval=args.no_eval)
    config, registry = load(args.config)
    resolved = resolve(request, config, registry)
    if args.reference is not None:
        registry.get("methods", args.reference)  # an unknown reference is bad input, before any work
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    rec = execute(resolved, registry, log=log)
    stream = sys.stderr if args.json else sys.stdout
    print_summary(rec, stream=stream)
    if args.reference is not None and rec.ok and rec.accuracies:
        from .reference import reference_lines

        from .scores import RANDOM_ROLE

        role = getattr(registry.items["methods"][args.reference], "role", "")
        label = "random real" if role == RANDOM_ROLE else args.reference
        for line in reference_lines(resolved.db_path, rec, args.reference, label):
            print(line, file=stream)
    if args.json:
        print(json.dumps(rec.summary(), default=str))
    return 0 if rec.ok else 1


def cmd_show(args) -> int:
    from .results import db_path, get_run

    db = db_path(args.out, args.db)
    if not db.is_file():
        raise DDBenchError(f"no results database at {db}")
    rec = get_run(db, args.run_id)
    if rec is None:
        raise DDBenchError(f"no run {args.run_id!r} in {db}")
    if args.json:
        print(json.dumps(rec.as_dict(), default=str))
    else:
        print_summary(rec)
        print(f"  {'config':<18} {json.dumps(rec.config, sort_keys=True)}")
        if rec.error:
            print(rec.error)
    return 0 if rec.ok else 1


COMMANDS = {"run": cmd_run, "list": cmd_list, "plugins": cmd_plugins, "show": cmd_show}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    _line_buffered()
    try:
        with handle_signals():
            return handler(args)
    except DDBenchError as exc:
        print(f"ddbench: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"ddbench: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `ddbench list | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        why = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"ddbench: {why}; finished runs are kept, checkpoints stay in the work folder", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _line_buffered() -> None:
    """Each log line reaches a redirected file as it is printed, so a killed run's log is not empty."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # absent on captured streams (tests)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot change
                pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
