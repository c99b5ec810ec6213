"""Random real subset: IPC real training images per class, drawn with the run's seed.

The simplest method and the template for new ones: a `Method` with cited `params`, a `validate` that
checks the request against the data before any work starts, and a `distill` that returns a
`SyntheticSet` in the dataset's normalised space. It draws exactly the real images that DM and MTT start
from with the same seed (`_common.init_images`), so "beats random" also means "beats its initialisation".
"""
from __future__ import annotations

from ddbench import hookimpl
from ddbench.api import Method, RunContext, SyntheticSet

from ._common import check_ipc_fits, init_images


class RandomReal(Method):
    name = "random"
    role = "random-real"  # the reference of IOR (ddbench/analysis/scores.py)
    description = "Random real subset: IPC real training images per class (the baseline of every DD paper)"
    params = {}

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)

    def distill(self, ctx: RunContext) -> SyntheticSet:
        images, labels = init_images(ctx, "real")
        return SyntheticSet(images, labels, meta={"source": "real"})


@hookimpl
def register_methods(register):
    register(RandomReal())
