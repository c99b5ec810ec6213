"""The selection contract: a Selector picks k items of every class from a pool given their features (a coreset of
real images, or the best of an over-generated synthetic pool), and the checks every pick passes (check_picks,
check_pool). ddbench.api re-exports these names for plugins written against it. torch is imported only where a
tensor is touched.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .errors import DDBenchError

if TYPE_CHECKING:  # annotations only
    import torch


class Selector(ABC):
    """Picks `k` items of every class from a pool given their features: a coreset (herding, k-center, k-means...)
    of real images, or the best of an over-generated synthetic pool.

    Subclass, set `name`, `description` and `source` (where the rule comes from: a paper or `owner/repo: file`),
    and implement `select_class`; `select` is the contract the host and methods call. Set `needs_logits = True`
    if the rule ranks by a classifier's outputs (`logits`, e.g. the `confidence` selector).
    """

    name: str = ""
    description: str = ""
    source: str = ""
    needs_logits: bool = False

    def select(self, features: torch.Tensor, labels: torch.Tensor, k: int, seed: int,
               logits: torch.Tensor | None = None) -> torch.Tensor:
        """Indices into the pool of `k` distinct items of every class present in `labels`, class by class in
        ascending class order. `features` (N, D) and `labels` (N,) describe the pool, `logits` (N, K) are a
        classifier's outputs for it (needed when `needs_logits`). The same arguments give the same indices
        (each class draws from its own stream of `seed`, ddbench.core.seeds), and the selection of one class does not
        depend on the other classes in the pool. k larger than a class's pool is bad input (DDBenchError)."""
        import torch

        from .seeds import generator

        check_pool(self, features, labels, k, logits)
        picks = []
        for c in torch.unique(labels).tolist():
            idx = (labels == c).nonzero(as_tuple=True)[0]
            local = self.select_class(features[idx], k, generator(seed, "selector", self.name, c), int(c),
                                      None if logits is None else logits[idx])
            picks.append(idx.cpu()[check_picks(f"selector {self.name!r}", local, k, len(idx), c)])
        return torch.cat(picks)

    @abstractmethod
    def select_class(self, features: torch.Tensor, k: int, generator: torch.Generator, label: int,
                     logits: torch.Tensor | None = None) -> torch.Tensor:
        """Positions (k,) of the chosen items among one class's `features` (n, D), n >= k, using only `generator`
        for randomness. `label` is the class; `logits` (n, K) that class's rows of the pool's logits, or None."""


def check_picks(who: str, picks: Any, k: int, n: int, label: int) -> torch.Tensor:
    """A selector's answer for one class as a LongTensor, or RuntimeError (the plugin's fault) naming `who`.

    Only integer positions pass: floats (`[0.9, 1.9]`) or a nested answer (`[[0], [1]]`) were once truncated and
    flattened into a valid-looking pick."""
    import torch

    rule = f"it must return {k} distinct integer positions among the {n} items of that class"
    try:
        out = torch.as_tensor(picks)
    except (TypeError, ValueError, RuntimeError):
        raise RuntimeError(f"{who} returned {type(picks).__name__} {str(picks)[:80]} "
                           f"for class {label}; {rule}") from None
    if out.ndim != 1:
        raise RuntimeError(f"{who} returned positions of shape {tuple(out.shape)} for class {label}; {rule}")
    if out.dtype == torch.bool or out.is_floating_point() or out.is_complex():
        shown = ([round(float(v), 4) for v in out.flatten()[:10].tolist()] if out.is_floating_point()
                 else out.tolist()[:10])
        raise RuntimeError(f"{who} returned {shown} ({out.dtype}) for class {label}; {rule}")
    out = out.long().cpu()
    if len(out) != k or len(set(out.tolist())) != k or (k and not 0 <= int(out.min()) <= int(out.max()) < n):
        raise RuntimeError(f"{who} returned {out.tolist()[:10]} for class {label}; {rule}")
    return out


def check_pool(selector: Selector, features: torch.Tensor, labels: torch.Tensor, k: int,
               logits: torch.Tensor | None = None) -> None:
    """Refuse a pool a selector cannot pick from, with a one-line DDBenchError naming the bad value."""
    import torch

    name = getattr(selector, "name", "?")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DDBenchError(f"k={k!r} is not allowed for selector {name!r}; give an integer >= 1 (items per class)")
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise DDBenchError(
            f"selector {name!r} needs features of shape (N, D), got "
            f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(features) \
            or labels.is_floating_point():
        raise DDBenchError(f"selector {name!r} needs integer labels of shape ({len(features)},) matching the features")
    if not torch.isfinite(features).all():
        raise DDBenchError(f"selector {name!r} got features with NaN or infinite values")
    if getattr(selector, "needs_logits", False) and logits is None:
        raise DDBenchError(f"selector {name!r} ranks by a classifier's outputs; pass logits (N, num_classes)")
    if logits is not None and (logits.ndim != 2 or len(logits) != len(features)):
        raise DDBenchError(f"selector {name!r} needs logits of shape ({len(features)}, num_classes), "
                           f"got {tuple(logits.shape)}")
    if len(labels) == 0:
        raise DDBenchError(f"selector {name!r} got an empty pool")
    classes, counts = torch.unique(labels, return_counts=True)
    if k > int(counts.min()):
        c = int(classes[counts.argmin()])
        raise DDBenchError(f"k={k} is larger than the {int(counts.min())} items of class {c} in the pool; "
                           f"use k <= {int(counts.min())} (selector {name!r})")
