"""The host's own commands: `run`, `list`, `plugins` and `show`, registered as every command is.

`ddbench run` distils with one method and evaluates the set; `list` shows what the plugins registered (with
`--params`, each setting's effective value and source); `plugins` where each plugin comes from; `show` one
recorded run.
"""
from __future__ import annotations

import json
import sys

from .. import hookimpl
from ..api import DEFAULT_DATASET, Command
from ..core.errors import DDBenchError
from ..host.plugins import CONTRACTS, KINDS, load_commands
from ..store.config import effective, load_config
from ..store.results import DEFAULT_OUT
from .clikit import add_common_run_args, load, positive_int, print_summary, request_from_args


def add_run_args(p) -> None:
    p.add_argument("--method", required=True)
    p.add_argument("--ipc", type=positive_int, default=10, help="images per class (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--no-eval", action="store_true", help="distill and save only")
    p.add_argument("--reference", default=None, metavar="METHOD",
                   help="afterwards, print METHOD's accuracy at equal count (this run's images per class) under the "
                        "same evaluation (e.g. random): recorded runs, else the shipped reference table, else the "
                        "command that computes it once")
    add_common_run_args(p)


def add_list_args(p) -> None:
    p.add_argument("--params", action="store_true",
                   help="also list each setting: its effective value, the layer that set it, and its source")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="dataset whose per-dataset settings --params shows")
    p.add_argument("--preset", default="default", choices=["default", "paper"], help="as for `run`")
    p.add_argument("--config", default=None)


def add_plugins_args(p) -> None:
    p.add_argument("--config", default=None)


def add_show_args(p) -> None:
    p.add_argument("run_id")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--db", default=None)
    p.add_argument("--json", action="store_true")


def cmd_run(args) -> int:
    from ..run.runner import execute, resolve

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
        from ..analysis.reference import reference_lines
        from ..core.roles import RANDOM_ROLE

        role = getattr(registry.methods[args.reference], "role", "")
        label = "random real" if role == RANDOM_ROLE else args.reference
        for line in reference_lines(resolved.db_path, rec, args.reference, label, registry=registry):
            print(line, file=stream)
    if args.json:
        print(json.dumps(rec.summary(), default=str))
    return 0 if rec.ok else 1


def cmd_show(args) -> int:
    from ..store.results import db_path, get_run

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


def cmd_list(args) -> int:
    config, registry = load(args.config)
    for kind in KINDS:
        if kind == "commands":  # read from their own entry-point group: `ddbench --help` lists them
            continue
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
    layers = config.sources(kind, name, args.dataset) if kind in ("methods", "protocols") else []
    for key, (value, layer) in effective(spec, layers, preset=args.preset).items():
        param = spec[key]
        set_by = "" if layer == "default" else f"  [set by {layer}; default {param.default!r}]"
        src = f"  ({param.source})" if param.source else ""
        print(f"      {key} = {value!r}{set_by}{src}")


def cmd_plugins(args) -> int:
    from ..run.resolve import registry_for

    config = load_config(args.config)
    registry = registry_for(config)
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
    commands = load_commands(config.enabled, config.disabled)
    for info in sorted(commands.plugins, key=lambda p: p.name):
        state = f"REFUSED: {info.error}" if info.error else "ok"
        provided = sorted(n for n, o in commands.owners["commands"].items() if o == info.name)
        print(f"{info.name:<18} {info.version or '-':<8} {info.source:<20} {info.module:<32} {state}")
        if provided:
            print(f"{'':<18} provides {', '.join(f'command:{n}' for n in provided)}")
    return 0


@hookimpl
def register_commands(register):
    register(Command("run", "distill with one method and evaluate the synthetic set", add_run_args, cmd_run))
    register(Command("list", "methods, datasets, protocols, models, samplers, policies, launchers", add_list_args,
                     cmd_list))
    register(Command("plugins", "loaded plugins, versions and where they come from", add_plugins_args, cmd_plugins))
    register(Command("show", "one recorded run", add_show_args, cmd_show))
