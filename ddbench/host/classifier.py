"""The real-data reference classifier: a ConvNet trained once per dataset, cached, shipped for Fashion-MNIST.

One network serves several jobs, so it lives in the host: generator-quality figures, the `classifier` feature
space of the selectors (ddbench/host/features.py: its penultimate features), and the logits the `confidence` selector
ranks by. The figures of a generated set (`ReferenceClassifier.figures`), cheap enough to compare recipes without
full evaluations: `class_accuracy`, the % of generated images it assigns to the class they were generated for (a
conditional generator that has not learned its classes scores near 100/K); `fd`, the Fréchet distance between
its `embed` features of generated images and of the real test set (FID's formula, Heusel et al. 2017, in this
network's feature space instead of Inception's, which cannot be downloaded here; comparable only between sets of
equal size, so the size is recorded).
It is the evaluation ConvNet of DC/DSA/DM (ddbench/default_plugins/convnet_models.py) trained with one epoch
of Adam on the whole real training set: ~88 % test accuracy on Fashion-MNIST, about 2.5 min on 2 CPU cores
(docs/minmax.md#the-shipped-base). A figure of quality, not a benchmark result.

Looked up in order: the cache (`CACHE_DIR/reference-classifier/<dataset>-<fingerprint>.pt`), the copy shipped
in `ddbench/weights/<dataset>/` (used only when it was trained on exactly this data), else trained here with a
progress bar and cached atomically. Its seeds are fixed, so retraining reproduces the shipped weights.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.safeload import UnsafeFile, load_tensors

# One epoch of Adam over the full training set (docs/minmax.md#quality-figures: ~88 % on Fashion-MNIST).
CLASSIFIER_EPOCHS = 1
CLASSIFIER_LR = 1e-3
CLASSIFIER_BATCH = 128
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "weights"  # ddbench/weights
SHIPPED_NAME = "reference-classifier.pt"
# The seed keys of the shipped weights (they predate the move to the host; changing them changes the network).
_SEED_KEY = "quality-classifier"


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """fn over x in batches without autograd (feature extraction of tens of thousands of images)."""
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else fn(x)


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


def feature_stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f.mean(0), torch.cov(f.T)


class ReferenceClassifier:
    """The cached real-data classifier and the real test set's feature statistics (for Fréchet distances)."""

    def __init__(self, net: nn.Module, test_acc: float, mu: torch.Tensor, sigma: torch.Tensor, meta: dict[str, Any]):
        self.net, self.test_acc, self.mu, self.sigma, self.meta = net.eval(), test_acc, mu, sigma, meta
        for p in net.parameters():
            p.requires_grad_(False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, D) of images in the dataset's normalised space (differentiable)."""
        return self.net.embed(x).flatten(start_dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`embed` in batches, float64, no autograd."""
        return batched(lambda b: self.embed(b).double(), x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, K), in batches, no autograd."""
        return batched(self.net, x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1)

    def figures(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Quality of a generated set given in the dataset's normalised space: class accuracy and FD."""
        pred = self.predict(images)
        per_class = {}
        for c in sorted(set(labels.tolist())):
            m = labels == c
            per_class[str(c)] = round(100.0 * float((pred[m] == c).float().mean()), 2)
        mu, sigma = feature_stats(self.features(images))
        return {
            "class_accuracy": round(100.0 * float((pred == labels).float().mean()), 2),
            "class_accuracy_per_class": per_class,
            "fd": round(frechet_distance(mu, sigma, self.mu, self.sigma), 3),
            "images": int(len(images)),
            "classifier_test_accuracy": round(self.test_acc, 2),
        }


def shipped_path(dataset_name: str) -> Path:
    return SHIPPED_DIR / dataset_name / SHIPPED_NAME


def _load(d: dict, path: Path, build: Callable[[], nn.Module], dataset) -> ReferenceClassifier:
    """A saved classifier; the test-set feature statistics are recomputed (cheap, and 33 MB if stored)."""
    from ..core.seeds import seeded

    with seeded(_SEED_KEY, "init"):
        net = build()
    net.load_state_dict(d["state"])
    net.eval()
    clf = ReferenceClassifier(net, d["test_acc"], torch.zeros(0), torch.zeros(0), {**d["meta"], "file": str(path)})
    clf.mu, clf.sigma = feature_stats(clf.features(dataset.test_x.float()))
    return clf


def reference_classifier(dataset, build: Callable[[], nn.Module], cache_dir: Path, fingerprint: str,
                         log: Callable[[str], None] | None = print, progress: bool = True) -> ReferenceClassifier:
    """The classifier of this data: cached, else shipped with the package (same data fingerprint), else trained
    (one epoch of Adam, with a progress bar) and cached atomically. `build()` makes a fresh ConvNet."""
    from tqdm.auto import tqdm

    from ..core.atomic import atomic_save
    from ..core.seeds import generator, seeded

    log = log or (lambda msg: None)
    path = Path(cache_dir) / "reference-classifier" / f"{dataset.name}-{fingerprint}.pt"
    shipped = shipped_path(dataset.name)
    for candidate in (path, shipped):
        if candidate.is_file():
            try:
                d = load_tensors(candidate)
                if candidate == shipped and d.get("data") != fingerprint:
                    continue
                return _load(d, candidate, build, dataset)
            except UnsafeFile as exc:  # never read; the cached copy is deleted (the package's own is left)
                if candidate == path:
                    candidate.unlink(missing_ok=True)
                log(f"{exc}; {'deleted it, ' if candidate == path else ''}skipped")
            except Exception as exc:  # noqa: BLE001 - an unreadable file is retrained
                log(f"reference classifier {candidate} unreadable ({type(exc).__name__}); skipped")
    t0 = time.perf_counter()
    with seeded(_SEED_KEY, "init"):
        net = build()
    opt = torch.optim.Adam(net.parameters(), lr=CLASSIFIER_LR)
    x, y = dataset.train_x.float(), dataset.train_y.long()
    n = len(x)
    g = generator(_SEED_KEY, "order")
    steps = CLASSIFIER_EPOCHS * (n // CLASSIFIER_BATCH)
    bar = tqdm(total=steps, desc="reference classifier", disable=not progress, leave=False)
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
    meta = {"epochs": CLASSIFIER_EPOCHS, "lr": CLASSIFIER_LR, "batch": CLASSIFIER_BATCH}
    clf = ReferenceClassifier(net, 0.0, torch.zeros(0), torch.zeros(0), meta)
    test_x, test_y = dataset.test_x.float(), dataset.test_y.long()
    clf.test_acc = 100.0 * float((clf.predict(test_x) == test_y).float().mean())
    clf.mu, clf.sigma = feature_stats(clf.features(test_x))
    meta.update(seconds=round(time.perf_counter() - t0, 1), test_accuracy=round(clf.test_acc, 2))
    atomic_save({"state": net.state_dict(), "test_acc": clf.test_acc, "meta": meta, "data": fingerprint}, path)
    log(f"reference classifier trained in {meta['seconds']} s, real test accuracy {clf.test_acc:.2f} %")
    return clf


def classifier_for(ctx) -> ReferenceClassifier:
    """The reference classifier of a run's dataset (a `ddbench.api.RunContext`), from the run's cache folder."""
    from ..store.identity import dataset_fingerprint

    ds = ctx.dataset
    spec = ctx.registry.get("models", "convnet")
    return reference_classifier(ds, lambda: spec.build(ds.channels, ds.num_classes, ds.image_size), ctx.cache_dir,
                                dataset_fingerprint(ds), log=ctx.log, progress=ctx.progress)
