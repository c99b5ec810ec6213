"""Coreset baselines: real images chosen by a selector in a feature space (herding, k-center, k-means).

What DC (Zhao et al., ICLR 2021, Table 1) and DC-BENCH (Cui et al., NeurIPS 2022) report beside random real: a
distilled set that cannot beat a good selection of real images has not earned its cost. Each method is the same
pipeline, `ddbench.host.features.select_pool`, with its own selector: features of every real training image of a
class in the `space` setting, then `ipc` of them per class. `--set selector=NAME` swaps in any registered
selector (a third party's too); `--set space=...` the feature space. Measured: docs/baselines.md#coreset-baselines.
"""
from __future__ import annotations

import time

from ddbench import hookimpl
from ddbench.api import Method, Param, RunContext, SyntheticSet
from ddbench.helpers import SPACES, check_space, select_pool, training_features

from ._common import check_ipc_fits

SPACE = Param("classifier", "docs/baselines.md#feature-space: measured against pixels and a random ConvNet; the "
              "features of a network trained on the real data, as DC-BENCH's Kmeans-emb (Cui et al., NeurIPS 2022)",
              "feature space the selector compares in", choices=SPACES)


class Coreset(Method):
    """A selection of `ipc` real training images per class; `selector` and `space` are its settings."""

    def __init__(self, name: str, description: str, source: str):
        self.name = name
        self.description = description
        self.params = {
            "selector": Param(name, source, "registered selector (ddbench list: selectors)"),
            "space": SPACE,
        }

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)
        check_space(ctx.params["space"])
        ctx.registry.get("selectors", ctx.params["selector"])

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p, ds = ctx.params, ctx.dataset
        t0 = time.perf_counter()
        feats = training_features(ctx, p["space"])  # cached: every coreset run of this data shares them
        idx = select_pool(ctx, ds.train_x, ds.train_y, ctx.ipc, p["selector"], p["space"], pool_features=feats)
        seconds = time.perf_counter() - t0
        ctx.log(f"{self.name}: {len(idx)} real images chosen by {p['selector']} in {p['space']} space "
                f"in {seconds:.1f} s")
        return SyntheticSet(ds.train_x[idx].clone().float(), ds.train_y[idx].clone(),
                            meta={"source": "real", "selector": p["selector"], "space": p["space"],
                                  "indices": idx.tolist(), "selection_seconds": round(seconds, 2)},
                            generation_seconds=round(seconds, 3))


METHODS = (
    Coreset("herding", "Herding coreset: real images whose running mean best matches the class mean (DC Table 1)",
            "Welling, ICML 2009; the herding baseline of Zhao et al., ICLR 2021 (DC), Table 1"),
    Coreset("k-center", "K-Center coreset: greedy farthest-first real images per class (DC Table 1)",
            "Sener & Savarese, ICLR 2018; the k-center baseline of Zhao et al., ICLR 2021 (DC), Table 1"),
    Coreset("k-means", "K-means coreset: the real image nearest each of IPC per-class centroids (DC-BENCH)",
            "Cui et al., NeurIPS 2022 (DC-BENCH, justincui03/dc_benchmark): Kmeans-emb"),
)


@hookimpl
def register_methods(register):
    for method in METHODS:
        register(method)
