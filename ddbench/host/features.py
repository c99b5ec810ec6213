"""Feature spaces for selection, and the one pool-selection helper every method that selects calls.

A selector compares items by their features; which features is a setting of the method (`space`):

- `pixels`: the image itself, flattened (in the dataset's normalised space);
- `classifier`: the penultimate features of the real-data reference ConvNet (ddbench/host/classifier.py; trained
  once per dataset with a progress bar and cached, shipped for Fashion-MNIST), the embedding DC-BENCH's
  Kmeans-emb and DC's herding use (a network trained on the real data);
- `random-convnet`: the features of a randomly initialised, frozen ConvNet seeded by the run seed (the
  embedder of DM, Zhao & Bilen, WACV 2023, which samples a fresh random ConvNet).

`select_pool(ctx, images, labels, k, selector, space)` is what the coreset baselines and generative methods
that over-generate call: features class by class (memory stays one class's worth), the logits of the
reference classifier when the selector ranks by them, the registered selector, and a check of what it
returned (a selector that breaks the contract fails the run, naming itself).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..api import DDBenchError, ImageDataset, RunContext
from ..core.safeload import UnsafeFile, drop_refused, load_tensors
from .guard import call_plugin

SPACES = ("pixels", "classifier", "random-convnet")


def check_space(space: str) -> None:
    if space not in SPACES:
        raise DDBenchError(f"space={space!r} is not allowed; choose one of {', '.join(SPACES)}")


def _network(space: str, dataset: ImageDataset, registry: Any, cache_dir: Path, seed: int,
             log: Callable[[str], None] | None, progress: bool) -> nn.Module | None:
    """The frozen network of a space (None for pixels)."""
    from ..core.seeds import seeded
    from ..store.identity import dataset_fingerprint
    from .classifier import reference_classifier

    check_space(space)
    if space == "pixels":
        return None
    spec = registry.get("models", "convnet")

    def build():
        return spec.build(dataset.channels, dataset.num_classes, dataset.image_size)

    if space == "classifier":
        net = reference_classifier(dataset, build, cache_dir, dataset_fingerprint(dataset), log=log,
                                   progress=progress).net
    else:
        with seeded(seed, "features", "random-convnet"):
            net = build()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _apply(net: nn.Module | None, x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    from .classifier import batched

    if net is None:
        return x.detach().flatten(start_dim=1).to("cpu", torch.float64)
    net = net.to(device)
    return batched(lambda b: net.embed(b.to(device)).flatten(start_dim=1).to("cpu", torch.float64), x)


def embedder(space: str, dataset: ImageDataset, registry: Any, cache_dir: Path, seed: int = 0,
             device: torch.device | str = "cpu", log: Callable[[str], None] | None = print,
             progress: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from normalised images (N, C, H, W) to float64 features (N, D) in the named space."""
    net = _network(space, dataset, registry, cache_dir, seed, log, progress)
    return lambda x: _apply(net, x, device)


def features(ctx: RunContext, images: torch.Tensor, space: str) -> torch.Tensor:
    """Features (N, D) of a run's images in the named space (the run's seed picks the random ConvNet)."""
    return embedder(space, ctx.dataset, ctx.registry, ctx.cache_dir, ctx.seed, ctx.device, ctx.log,
                    ctx.progress)(images)


def training_features(ctx: RunContext, space: str) -> torch.Tensor:
    """Features of every real training image in `space`, cached in `ctx.cache_dir/features/` (float32) and keyed by
    the data and the network's weights: a ConvNet pass over Fashion-MNIST's 60k images costs ~90 s on 2 CPU cores,
    and every coreset run of a dataset needs the same ones."""
    import hashlib

    from ..core.atomic import atomic_save
    from ..store.identity import config_hash, dataset_fingerprint

    ds = ctx.dataset
    net = _network(space, ds, ctx.registry, ctx.cache_dir, ctx.seed, ctx.log, ctx.progress)
    if net is None:
        return _apply(None, ds.train_x, ctx.device)
    h = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = ctx.cache_dir / "features" / f"{ds.name}-{space}-{config_hash([dataset_fingerprint(ds), h.hexdigest()])}.pt"
    if path.is_file():
        try:
            cached = load_tensors(path)
            if cached.shape[0] == len(ds.train_x):
                return cached.double()
        except UnsafeFile as exc:
            drop_refused(exc, ctx.log, "recomputing")
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is recomputed
            ctx.log(f"features cache {path} unreadable ({type(exc).__name__}); recomputing")
    out = _apply(net, ds.train_x, ctx.device).float()  # what the cache holds, so a hit selects exactly as a miss
    atomic_save(out, path)
    return out.double()


def select_pool(ctx: RunContext, images: torch.Tensor, labels: torch.Tensor, k: int, selector: str,
                space: str, logits: torch.Tensor | None = None, seed: int | None = None,
                pool_features: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of `k` items of every class of the pool (`images` normalised, `labels` class indices), chosen by
    the registered `selector` in feature space `space`; class-major, ascending class. `logits` (N, K) default to
    the reference classifier's when the selector ranks by them. `seed` defaults to the run seed. `pool_features`
    (N, D): the pool's features in `space` when already computed (e.g. `training_features`)."""
    from ..api import check_picks, check_pool
    from .classifier import classifier_for

    sel = ctx.registry.get("selectors", selector)
    check_space(space)
    labels = labels.long().cpu()
    needs_logits = getattr(sel, "needs_logits", False)
    # k and the class counts are checked before any feature is computed (placeholders of width 1; logits we compute)
    placeholder = torch.zeros(len(labels), 1)
    check_pool(sel, placeholder, labels, k, logits if logits is not None else placeholder if needs_logits else None)
    if pool_features is not None and pool_features.shape[0] != len(labels):
        raise DDBenchError(f"pool_features has {pool_features.shape[0]} rows for a pool of {len(labels)} items")
    embed = None if pool_features is not None else embedder(space, ctx.dataset, ctx.registry, ctx.cache_dir, ctx.seed,
                                                            ctx.device, ctx.log, ctx.progress)
    clf = classifier_for(ctx) if needs_logits and logits is None else None
    seed = ctx.seed if seed is None else seed
    owner = ctx.registry.owners["selectors"].get(selector, "?")
    out = []
    for c in torch.unique(labels).tolist():  # one class at a time: a class's pick depends only on its own items
        idx = (labels == c).nonzero(as_tuple=True)[0]
        x = images[idx]
        cls_logits = logits[idx] if logits is not None else (clf.logits(x.float()) if clf is not None else None)
        feats = pool_features[idx].double() if pool_features is not None else embed(x)
        picked = call_plugin(ctx.registry, "selectors", selector, "select()",
                             lambda: sel.select(feats, labels[idx], k, seed, logits=cls_logits))
        out.append(idx[call_plugin(ctx.registry, "selectors", selector, "select()",
                                   lambda: check_picks(f"selector {selector!r} (plugin {owner!r})",
                                                       picked, k, len(idx), c))])
    return torch.cat(out)
