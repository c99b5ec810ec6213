"""Random real subset: IPC real training images per class, drawn with the run's seed.

The simplest method and the template for new ones: a `Method` with cited `params`, a `validate` that
checks the request against the data before any work starts, and a `distill` that returns a
`SyntheticSet` in the dataset's normalised space.
"""
from __future__ import annotations

import torch

from ddbench import hookimpl
from ddbench.api import DDBenchError, Method, RunContext, SyntheticSet


def check_ipc_fits(ctx: RunContext) -> None:
    """IPC must not exceed the real images of the smallest class (methods initialised from real images)."""
    counts = ctx.dataset.class_counts()
    smallest = int(counts.min())
    if ctx.ipc > smallest:
        c = int(counts.argmin())
        raise DDBenchError(
            f"--ipc {ctx.ipc} is larger than the {smallest} real training images of class {c} "
            f"({ctx.dataset.class_names[c]!r}); use --ipc {smallest} or less"
        )


def sample_real(ctx: RunContext, ipc: int, offset: int = 0) -> SyntheticSet:
    """`ipc` distinct real images per class, chosen with the run's seed (shared by methods that init from real)."""
    gen = ctx.generator(offset)
    images, labels = [], []
    for c in range(ctx.dataset.num_classes):
        idx = ctx.dataset.indices_of_class(c)
        pick = idx[torch.randperm(len(idx), generator=gen)[:ipc]]
        images.append(ctx.dataset.train_x[pick])
        labels.append(torch.full((ipc,), c, dtype=torch.long))
    return SyntheticSet(torch.cat(images).clone(), torch.cat(labels))


class RandomReal(Method):
    name = "random"
    description = "Random real subset: IPC real training images per class (the baseline of every DD paper)"
    params = {}

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)

    def distill(self, ctx: RunContext) -> SyntheticSet:
        syn = sample_real(ctx, ctx.ipc)
        syn.meta["source"] = "real"
        return syn


@hookimpl
def register_methods(register):
    register(RandomReal())
