"""`ddbench challenge --method M`: the ECCV 2024 DD challenge run (./eccv2024.py) as a command.

Its own module, apart from the protocol, because `ddbench --help` imports every command module: this one
imports no torch until the command runs.
"""
from __future__ import annotations

import argparse
import json
import sys

from .. import hookimpl
from ..api import Command, DDBenchError
from ..helpers import add_common_run_args, load, request_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    add_common_run_args(p)
    p.set_defaults(protocol="eccv2024", model="convnet-d3", dataset=None)


def cmd_challenge(args: argparse.Namespace) -> int:
    from .eccv2024 import DATASETS, run_challenge

    if args.dataset is not None:
        raise DDBenchError(f"--dataset {args.dataset}: the challenge runs both "
                           f"{' and '.join(d.name for d in DATASETS)}; drop --dataset")
    if args.protocol != "eccv2024":
        raise DDBenchError(f"--protocol {args.protocol!r}: the challenge is evaluated with eccv2024 only")
    base = request_from_args(args, method=args.method, seed=args.seed)
    config, registry = load(args.config)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    result = run_challenge(args.method, base, config, registry, log=log)
    print(result.text(), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.as_json()))
    return 0 if result.score is not None else 1


@hookimpl
def register_commands(register):
    register(Command(
        "challenge", "the ECCV 2024 DD challenge: a method on CIFAR-100 and Tiny-ImageNet, its score", add_arguments,
        cmd_challenge, "Runs METHOD at IPC 10 on cifar100 and tiny-imagenet under the eccv2024 protocol (a generative "
                       "method gets --budget, default 600 s), reusing finished runs, and prints the per-dataset "
                       "accuracies and the challenge score (their mean)."))


__all__ = ["add_arguments", "cmd_challenge"]
