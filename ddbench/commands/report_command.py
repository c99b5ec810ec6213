"""`ddbench report`: tables, CSV, plots, report.md and report.html (ddbench/analysis/report_html.py) from the results \
database alone (ddbench/analysis/report.py).

    ddbench report --out ddbench-results --methods random,dm --reference random
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .. import hookimpl
from ..api import Command
from ..core.atomic import writable_dir
from ..core.errors import DDBenchError
from ..store.results import DEFAULT_OUT, db_path, query
from .clikit import add_report_args, load, print_report, split_list


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (database, runs)")
    p.add_argument("--db", default=None, help="results database (default: OUT/ddbench.sqlite)")
    p.add_argument("--methods", default=None, help="only these methods (comma-separated)")
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--protocol", default=None, help="only this protocol")
    p.add_argument("--models", default=None, help="order of the architecture columns (comma-separated)")
    p.add_argument("--json", action="store_true",
                   help="print the scores and cross-architecture tables as one JSON object")
    p.add_argument("--config", default=None, help="plugins.toml to use (its plugins name the score references)")
    add_report_args(p)


def cmd_report(args: argparse.Namespace) -> int:
    from ..analysis.report import build_report
    from ..analysis.report_html import write_html

    db = db_path(args.out, args.db)
    if not db.is_file():
        raise DDBenchError(f"no results database at {db} (run `ddbench compare` or `ddbench run` first, or pass --db)")
    methods = split_list("--methods", args.methods) if args.methods else None
    rows = query(db)
    present = sorted({r.method for r in rows})
    for flag, names in (("--methods", methods or []), ("--reference", [args.reference] if args.reference else [])):
        missing = [m for m in names if m not in present]
        if missing:
            raise DDBenchError(f"{flag}: no runs of {', '.join(map(repr, missing))} in {db}; methods there: "
                               f"{', '.join(present) or '(none)'}")
    for flag, value, field in (("--dataset", args.dataset, "dataset"), ("--protocol", args.protocol, "protocol")):
        there = sorted({str(getattr(r, field)) for r in rows})
        if value is not None and value not in there:  # an empty selection never replaces the last report
            raise DDBenchError(f"{flag}: no runs on {value!r} in {db}; {field}s there: {', '.join(there) or '(none)'}")
    report_dir = writable_dir(Path(args.report) if args.report else Path(args.out) / "report", "--report")
    models = split_list("--models", args.models) if args.models else None
    _, registry = load(args.config)  # plugins.toml's lists apply: its plugins name the references and setting roles
    result = build_report(db, report_dir, methods=methods, dataset=args.dataset, protocol=args.protocol,
                          reference=args.reference, command="ddbench report " + shlex.join(sys.argv[2:]), models=models,
                          registry=registry)
    write_html(result)  # report.html beside report.md: the same build, with every set's images
    if args.json:
        print(json.dumps({"report": str(result.markdown), "html": str(result.html), **result.scores.as_json()},
                         default=str))
        return 0
    print_report(result)
    return 0


@hookimpl
def register_commands(register):
    register(Command("report", "tables, CSV, plots, report.md and report.html from the results database alone",
                     add_arguments, cmd_report))


__all__ = ["add_arguments", "cmd_report"]
