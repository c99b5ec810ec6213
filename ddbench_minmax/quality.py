"""Generator-quality figures, cheap enough to compare recipes without full evaluations.

A reference classifier (the ConvNet of DC/DSA/DM, ddbench/default_plugins/convnet_models.py) is trained once on the real training
set and cached per dataset fingerprint. Two figures of a generated set then come from it:

- `class_accuracy`: % of generated images the real-data classifier assigns to the class they were generated
  for (a conditional generator that has not learned its classes scores near 100/K);
- `fd`: the Fréchet distance between the classifier's `embed` features of generated images and of the real
  test set (FID's formula, Heusel et al. 2017, in this network's feature space instead of Inception's, which
  cannot be downloaded here; comparable only between sets of equal size, so the size is recorded).

The same classifier's features are one of the embedding spaces the min-max losses can use (`embedding=classifier`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

# One epoch of Adam over the full training set: ~90 % test accuracy on Fashion-MNIST for the ConvNet-3, about
# 2.5 min on 2 CPU cores (measured, docs/minmax.md). A figure of generator quality, not a benchmark result.
CLASSIFIER_EPOCHS = 1
CLASSIFIER_LR = 1e-3
CLASSIFIER_BATCH = 128


def _features(net: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net.embed(x[i:i + batch]).flatten(start_dim=1).double())
    return torch.cat(out)


def _predict(net: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), as FID (Heusel et al. 2017; pytorch-fid's formula)."""
    import numpy as np
    from scipy import linalg

    mu1, mu2, s1, s2 = (np.asarray(v, dtype=np.float64) for v in (mu1, mu2, s1, s2))
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps).dot(s2 + eps))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f.mean(0), torch.cov(f.T)


class ReferenceClassifier:
    """The cached real-data classifier and the real test set's feature statistics."""

    def __init__(self, net: nn.Module, test_acc: float, mu: torch.Tensor, sigma: torch.Tensor, meta: dict[str, Any]):
        self.net, self.test_acc, self.mu, self.sigma, self.meta = net.eval(), test_acc, mu, sigma, meta
        for p in net.parameters():
            p.requires_grad_(False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x).flatten(start_dim=1)

    def figures(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Quality of a generated set given in the dataset's normalised space."""
        pred = _predict(self.net, images)
        per_class = {}
        for c in sorted(set(labels.tolist())):
            m = labels == c
            per_class[str(c)] = round(100.0 * float((pred[m] == c).float().mean()), 2)
        mu, sigma = _stats(_features(self.net, images))
        return {
            "class_accuracy": round(100.0 * float((pred == labels).float().mean()), 2),
            "class_accuracy_per_class": per_class,
            "fd": round(frechet_distance(mu, sigma, self.mu, self.sigma), 3),
            "images": int(len(images)),
            "classifier_test_accuracy": round(self.test_acc, 2),
        }


SHIPPED = "quality-classifier.pt"  # beside the shipped base: ddbench_minmax/weights/<dataset>/


def _load(d: dict, path: Path, build: Callable[[], nn.Module], dataset) -> ReferenceClassifier:
    """A saved classifier; the test-set feature statistics are recomputed (cheap, and 33 MB if stored)."""
    from ddbench.seeds import seeded

    with seeded("quality-classifier", "init"):
        net = build()
    net.load_state_dict(d["state"])
    net.eval()
    mu, sigma = _stats(_features(net, dataset.test_x.float()))
    return ReferenceClassifier(net, d["test_acc"], mu, sigma, {**d["meta"], "file": str(path)})


def reference_classifier(dataset, build: Callable[[], nn.Module], cache_dir: Path, fingerprint: str,
                         log: Callable[[str], None] = print, progress: bool = True) -> ReferenceClassifier:
    """The classifier of this data: cached, else shipped with the package (same data fingerprint), else trained
    (one epoch of Adam) and cached atomically."""
    from tqdm.auto import tqdm

    from ddbench.atomic import atomic_save
    from ddbench.seeds import generator, seeded

    from .base import SHIPPED_DIR

    path = Path(cache_dir) / "minmax-diffusion" / "quality" / f"{dataset.name}-{fingerprint}.pt"
    shipped = SHIPPED_DIR / dataset.name / SHIPPED
    for candidate in (path, shipped):
        if candidate.is_file():
            try:
                d = torch.load(candidate, map_location="cpu", weights_only=False)
                if candidate == shipped and d.get("data") != fingerprint:
                    continue
                return _load(d, candidate, build, dataset)
            except Exception as exc:  # noqa: BLE001 - an unreadable file is retrained
                log(f"minmax-diffusion: quality classifier {candidate} unreadable ({type(exc).__name__}); skipped")
    t0 = time.perf_counter()
    with seeded("quality-classifier", "init"):
        net = build()
    opt = torch.optim.Adam(net.parameters(), lr=CLASSIFIER_LR)
    x, y = dataset.train_x.float(), dataset.train_y.long()
    n = len(x)
    g = generator("quality-classifier", "order")
    steps = CLASSIFIER_EPOCHS * (n // CLASSIFIER_BATCH)
    bar = tqdm(total=steps, desc="quality classifier", disable=not progress, leave=False)
    net.train()
    for _ in range(CLASSIFIER_EPOCHS):
        perm = torch.randperm(n, generator=g)
        for i in range(n // CLASSIFIER_BATCH):
            idx = perm[i * CLASSIFIER_BATCH:(i + 1) * CLASSIFIER_BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    net.eval()
    test_x, test_y = dataset.test_x.float(), dataset.test_y.long()
    test_acc = 100.0 * float((_predict(net, test_x) == test_y).float().mean())
    mu, sigma = _stats(_features(net, test_x))
    meta = {"epochs": CLASSIFIER_EPOCHS, "lr": CLASSIFIER_LR, "batch": CLASSIFIER_BATCH,
            "seconds": round(time.perf_counter() - t0, 1), "test_accuracy": round(test_acc, 2)}
    atomic_save({"state": net.state_dict(), "test_acc": test_acc, "meta": meta, "data": fingerprint}, path)
    log(f"minmax-diffusion: quality classifier trained in {meta['seconds']} s, real test accuracy {test_acc:.2f} %")
    return ReferenceClassifier(net, test_acc, mu, sigma, meta)
