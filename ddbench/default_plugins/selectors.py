"""Selectors: pick k items per class from a pool by their features (ddbench.api.Selector).

The coreset baselines of DC (Zhao et al., ICLR 2021, Table 1) and DC-BENCH (Cui et al., NeurIPS 2022), and the
confidence ranking generative methods use on an over-generated pool (CaO2). Each works on one class's features
(float64 here, so results do not depend on float32 summation order); ties go to the lowest position.
"""
from __future__ import annotations

import warnings

import torch

from ddbench import hookimpl
from ddbench.api import Selector


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to("cpu", torch.float64)


class RandomSelector(Selector):
    name = "random"
    description = "k items per class uniformly at random (the random-real baseline of every DD paper)"
    source = "Zhao et al., ICLR 2021 (DC), Table 1: Random"

    def select_class(self, features, k, generator, label, logits=None):
        return torch.randperm(len(features), generator=generator)[:k]


class Herding(Selector):
    name = "herding"
    description = "greedy mean matching: each pick keeps the running mean of the picks nearest the class mean"
    source = ("Welling, ICML 2009 (herding); Rebuffi et al., CVPR 2017 (iCaRL exemplars), the herding baseline of "
              "Zhao et al., ICLR 2021 (DC), Table 1")

    def select_class(self, features, k, generator, label, logits=None):
        x = _f64(features)
        mu, total = x.mean(0), torch.zeros(x.shape[1], dtype=torch.float64)
        taken = torch.zeros(len(x), dtype=torch.bool)
        picks = []
        for t in range(1, k + 1):
            gap = ((total + x) / t - mu).norm(dim=1)
            gap[taken] = float("inf")
            i = int(gap.argmin())
            picks.append(i)
            taken[i] = True
            total += x[i]
        return torch.tensor(picks)


class KCenter(Selector):
    name = "k-center"
    description = "greedy farthest-first k-center: each pick is the item farthest from the picks so far"
    source = ("Sener & Savarese, ICLR 2018 (core-set, greedy k-center); the first center drawn at random as in "
              "PatrickZH/DeepCore deepcore/methods/kcentergreedy.py")

    def select_class(self, features, k, generator, label, logits=None):
        x = _f64(features)
        first = int(torch.randint(len(x), (1,), generator=generator))
        picks = [first]
        nearest = (x - x[first]).norm(dim=1)
        nearest[first] = -1.0
        for _ in range(k - 1):
            i = int(nearest.argmax())
            picks.append(i)
            nearest = torch.minimum(nearest, (x - x[i]).norm(dim=1))
            nearest[picks] = -1.0
        return torch.tensor(picks)


KMEANS_ITER = 10  # scipy.cluster.vq.kmeans2's default `iter`


class KMeans(Selector):
    name = "k-means"
    description = "k-means (scipy.cluster.vq.kmeans2, k-means++ init), then the real item nearest each centroid"
    source = ("Cui et al., NeurIPS 2022 (DC-BENCH, justincui03/dc_benchmark): Kmeans-emb; scipy.cluster.vq.kmeans2 "
              f"(minit='++', iter={KMEANS_ITER}, its default)")

    def select_class(self, features, k, generator, label, logits=None):
        import inspect

        import numpy as np
        from scipy.cluster.vq import kmeans2

        x = _f64(features)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        rng = {"rng" if "rng" in inspect.signature(kmeans2).parameters else "seed": np.random.default_rng(seed)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "One of the clusters is empty": its centroid still picks an item
            centroids, _ = kmeans2(x.numpy(), k, iter=KMEANS_ITER, minit="++", **rng)
        dist = torch.cdist(torch.from_numpy(np.asarray(centroids, dtype=np.float64)), x)  # (k, n)
        picks: list[int] = []
        for row in dist:  # each centroid its nearest item not taken by an earlier centroid
            order = row.argsort(stable=True).tolist()
            picks.append(next(i for i in order if i not in picks))
        return torch.tensor(picks)


class Confidence(Selector):
    name = "confidence"
    description = "a classifier's correct items first, most confident first (then the rest by confidence)"
    source = ("Wang et al., ICCV 2025 (CaO2), hatchetProject/CaO2 sample_nette.py: the correct and most confident "
              "samples (max softmax probability) first, topped up with the others")
    needs_logits = True

    def select_class(self, features, k, generator, label, logits=None):
        prob = torch.softmax(_f64(logits), dim=1)
        conf, pred = prob.max(dim=1)
        order = torch.argsort(-conf, stable=True)
        correct = pred[order] == label
        return torch.cat([order[correct], order[~correct]])[:k]


@hookimpl
def register_selectors(register):
    for selector in (RandomSelector(), Herding(), KCenter(), KMeans(), Confidence()):
        register(selector)
