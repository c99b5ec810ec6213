"""Reference runs for the scores of ddbench/analysis/scores.py: `full`, the whole real training set with hard labels.

HLR (DD-Ranking, NUS-HPC-AI-Lab/DD-Ranking `ddranking/metrics/hard_label.py`) needs the accuracy of a network
of the same architecture trained on the full real training set. Here that is a run like any other, recorded
in the database and reused by every report: `ddbench run --method full --ipc N --model M --protocol P`,
where N is the dataset's images per class (the host checks that a run returns exactly IPC images of every
class, so the whole set is a fixed-IPC run only on a class-balanced dataset: Fashion-MNIST 6000, CIFAR-10
5000, CIFAR-100 500, Tiny-ImageNet 500). Train it with far fewer epochs than a 100-image set, e.g.
`--eval-epochs 20`: DD-Ranking trains its full-data references 100-200 epochs (`ddranking/utils/
train_and_eval.py: REAL_DATA_TRAINING_CONFIG`), ddbench's protocols count E+1 passes over the set. The
scores ignore the IPC and epoch count of a `full` run when matching it to a cell.

Disk: the runner saves every set it evaluates (`OUT/runs/RUN_ID/synset.pt`, and a resumable copy in the work
folder until the run is recorded), so a `full` run writes the whole normalised training set as float32:
~190 MB for Fashion-MNIST, ~600 MB for CIFAR-100, ~4.9 GB for Tiny-ImageNet.

The random-subset reference is the existing `random` method (baselines/random_real.py).
"""
from __future__ import annotations

from .. import hookimpl
from ..api import DDBenchError, Method, RunContext, SyntheticSet


def balanced_count(counts: list[int]) -> int | None:
    """The images per class of a class-balanced dataset, None when the classes differ in size."""
    return counts[0] if counts and len(set(counts)) == 1 else None


class FullData(Method):
    name = "full"
    role = "full-data"  # the reference of HLR (ddbench/analysis/scores.py)
    description = "The whole real training set, hard labels: the full-data reference of HLR (--ipc = images per class)"
    params = {}

    def validate(self, ctx: RunContext) -> None:
        counts = ctx.dataset.class_counts().tolist()
        per_class = balanced_count(counts)
        if per_class is None:
            raise DDBenchError(
                f"method 'full' needs a class-balanced dataset; {ctx.dataset.name} has {min(counts)}..{max(counts)} "
                "images per class, which no fixed --ipc describes"
            )
        if ctx.ipc != per_class:
            raise DDBenchError(f"method 'full' uses the whole training set: pass --ipc {per_class} "
                               f"({ctx.dataset.name} has {per_class} images of every class), not {ctx.ipc}")

    def distill(self, ctx: RunContext) -> SyntheticSet:
        ds = ctx.dataset
        return SyntheticSet(ds.train_x, ds.train_y.clone(), meta={"source": "full real training set"})


@hookimpl
def register_methods(register):
    register(FullData())
