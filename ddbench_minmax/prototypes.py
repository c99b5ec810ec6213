"""Class prototypes for prototype-initialised sampling and mode guidance: per-class k-means of the real images.

D4M (Su et al., CVPR 2024; suduo94/D4M `gen_prototype.py`) clusters each class's latents with k = IPC and
starts generation from the noised centroids; MGD3 (Chan-Santiago et al., ICML 2025; jachansantiago/mode_guidance)
clusters each class with k = IPC and guides sample i toward mode i. Here the generator works in pixel space, so the
centroids are taken there (the generator's own space, [-1, 1]); scipy's k-means++ (`scipy.cluster.vq.kmeans2`),
seeded, so a method seed fixes the prototypes.
"""
from __future__ import annotations

import numpy as np
import torch

from ddbench.api import DDBenchError

KINDS = ("none", "kmeans")


def class_prototypes(x: torch.Tensor, y: torch.Tensor, num_classes: int, k: int, seed: int,
                     iters: int = 20) -> torch.Tensor:
    """[num_classes, k, C, H, W]: the k-means centroids of each class of `x` (any space; returned in it)."""
    from scipy.cluster.vq import kmeans2

    if k < 1:
        raise DDBenchError(f"prototypes per class k={k} is not allowed; it must be >= 1")
    out = []
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        xc = x[y == c]
        if xc.shape[0] < k:
            raise DDBenchError(f"class {c} has {xc.shape[0]} real images, fewer than the {k} prototypes asked for")
        data = xc.reshape(xc.shape[0], -1).double().numpy()
        centroids, _ = kmeans2(data, k, iter=iters, minit="++", seed=rng)
        out.append(torch.from_numpy(centroids).float().reshape(k, *xc.shape[1:]))
    return torch.stack(out)
