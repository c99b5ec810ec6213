"""`ddbench minmax-base train|classifier`: the base/classifier training command (cli.py), registered through
`register_commands` like every other command. Its own module so that neither cli.py nor base.py imports the
other's importer: this one imports base.py (and torch) only when the command runs.
"""
from __future__ import annotations

import argparse
import sys

from ddbench import hookimpl
from ddbench.api import Command

from .cli import add_arguments, run


def run_base(args: argparse.Namespace) -> int:
    from .base import BaseRecipe, train_base

    return run(args, BaseRecipe, train_base, " ".join(["ddbench", *sys.argv[1:]]))


@hookimpl
def register_commands(register):
    register(Command(
        "minmax-base", "Min-Max Diffusion's shipped files: train the pretrained base, or ship the quality classifier",
        add_arguments, run_base,
        "`train` trains (or resumes) the base generator with base.py's recipe, by default into the shipped folder; "
        "`classifier` trains (or takes from the cache) the real-data reference classifier and ships its weights. "
        "Also run as `python -m ddbench_minmax.base` (docs/minmax.md#the-shipped-base)."))
