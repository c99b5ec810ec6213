"""The command that makes the shipped files: `ddbench minmax-base train|classifier`, also run as
`python -m ddbench_minmax.base train|classifier`.

`train` trains (or resumes) a base with base.py's recipe, by default into the shipped folder (shipped.py);
`classifier` ships the quality figures' real-data classifier (ddbench/weights/). The command is registered through
`register_commands` like every other (base_command.py); `python -m ddbench_minmax.base`, the name it was first
documented and recorded in the shipped meta.json under, runs the same `add_arguments` and `run`. base.py and
base_command.py hand `run` the recipe class and trainer, so this module imports neither base.py (which would close
a circle) nor torch until the command runs (`ddbench --help` builds its parser).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from ddbench.api import DEFAULT_DATASET, DDBenchError


def _load_dataset(name: str, root: str | None):
    from ddbench.helpers import load, load_dataset

    return load_dataset(load(None)[1], name, root, False)


def _ship_classifier(args) -> int:
    """Train (or take from the cache) the reference classifier and ship its weights (ddbench/weights/)."""
    from ddbench.helpers import atomic_save, dataset_fingerprint, load, load_dataset, reference_classifier, shipped_path

    reg = load(None)[1]
    ds = load_dataset(reg, args.dataset, args.data_root, False)
    spec = reg.get("models", "convnet")
    fp = dataset_fingerprint(ds)
    clf = reference_classifier(ds, lambda: spec.build(ds.channels, ds.num_classes, ds.image_size), Path(args.cache), fp)
    target = shipped_path(args.dataset)
    atomic_save({"state": clf.net.state_dict(), "test_acc": clf.test_acc, "meta": clf.meta, "data": fp}, target)
    print(json.dumps({"out": str(target), "test_accuracy": round(clf.test_acc, 2)}))
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of `train` and `classifier`; --steps and --seed default to base.py's BaseRecipe."""
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train (or resume) a base")
    tr.add_argument("--dataset", default=DEFAULT_DATASET)
    tr.add_argument("--data-root", default=None)
    tr.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's, BaseRecipe.steps)")
    tr.add_argument("--seed", type=int, default=None, help="seed (default: the recipe's, BaseRecipe.seed)")
    tr.add_argument("--stop-at", type=int, default=None,
                    help="end at this step (the lr schedule stays that of --steps) and save the EMA there")
    tr.add_argument("--threads", default="auto",
                    help="torch intra-op threads: a number, or auto (2 alone, 1 when another process shares the cores)")
    tr.add_argument("--work", default="ddbench-results/cache/minmax-base", help="checkpoints and snapshots")
    tr.add_argument("--out", default=None, help="where the base goes (default: the shipped folder)")
    cl = sub.add_parser("classifier", help="ship the quality figures' real-data classifier (trained once, cached)")
    cl.add_argument("--dataset", default=DEFAULT_DATASET)
    cl.add_argument("--data-root", default=None)
    cl.add_argument("--cache", default="ddbench-results/cache", help="the cache folder of runs (--out/cache)")


def run(args: argparse.Namespace, recipe_class: type, train_base: Callable[..., dict],
        command: str | None = None) -> int:
    """Do `args.cmd`; `recipe_class` and `train_base`: base.py's BaseRecipe and train_base; `command`: the command
    line as typed, recorded in the base's meta.json. Bad input raises DDBenchError (one line, exit 2)."""
    import torch

    if args.cmd == "classifier":
        return _ship_classifier(args)
    from .cache import DenoiserCache
    from .shipped import shipped_cache

    threads = args.threads if args.threads == "auto" else int(args.threads) if args.threads.isdigit() else 0
    if threads == 0:
        raise DDBenchError(f"--threads {args.threads!r} is not allowed; give a number >= 1 or auto")
    torch.set_num_threads(2 if threads == "auto" else threads)
    steps = recipe_class.steps if args.steps is None else args.steps
    seed = recipe_class.seed if args.seed is None else args.seed
    ds = _load_dataset(args.dataset, args.data_root)
    recipe = recipe_class(steps=steps, seed=seed)
    work = Path(args.work) / f"{args.dataset}-seed{seed}-steps{steps}"
    out = DenoiserCache(Path(args.out)) if args.out else shipped_cache(args.dataset)
    meta = train_base(ds, recipe, work, out, threads=threads, stop_at=args.stop_at, command=command)
    print(json.dumps({"out": str(out.root), "sha256": meta["sha256"], "seconds": meta["train"]["seconds"]}))
    return 0


def main(recipe_class: type, train_base: Callable[..., dict], argv: list[str] | None = None) -> int:
    """`python -m ddbench_minmax.base`: the same command as `ddbench minmax-base`, its errors on one line."""
    ap = argparse.ArgumentParser(prog="python -m ddbench_minmax.base",
                                 description="The pretrained base: train it, or ship the quality classifier.")
    add_arguments(ap)
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    try:
        return run(args, recipe_class, train_base, " ".join(["python -m ddbench_minmax.base", *argv]))
    except DDBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
