"""The one file format of a synthetic set, and its image grid: what a run leaves under OUT/runs/RUN_ID.

`save_synset` writes the SyntheticSet's fields (plus free extras: config, dataset, distill time) with the one
atomic-write helper; `load_synset` reads it back; `save_grid` draws one row per class as a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..api import SyntheticSet
from ..core.atomic import atomic_save, atomic_write
from ..core.errors import DDBenchError
from ..core.safeload import load_tensors


SYNSET_FIELDS = ("images", "labels", "meta", "lr", "ipc", "generation_seconds")


def save_synset(syn: SyntheticSet, path: Path, **extra: Any) -> None:
    """The one file format of a synthetic set (the resumable leftover and OUT/runs/RUN_ID/synset.pt alike):
    the SyntheticSet's fields on the CPU, plus `extra` (config, dataset, distill_seconds...), all as tensors and
    plain containers (`plain`), so that `load_synset` reads it back without unpickling any object."""
    atomic_save(plain({"images": syn.images.detach().cpu(), "labels": syn.labels.detach().cpu(), "meta": syn.meta,
                       "lr": syn.lr, "ipc": syn.ipc, "generation_seconds": syn.generation_seconds, **extra}), path)


def plain(value: Any) -> Any:
    """`value` as tensors, dicts, lists, tuples, strings, numbers and None: a method's free `meta` may hold other
    objects (a numpy scalar, a Path); numpy values become Python numbers and lists, anything else its `str`."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int, float, bool)) else str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if type(value) in (list, tuple) else [plain(v) for v in value]
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return plain(value.tolist())  # numpy scalars and arrays: Python numbers and lists
    return str(value)


def load_synset(path: Path) -> tuple[SyntheticSet, dict[str, Any]]:
    """(the set, everything the file holds) from a file `save_synset` wrote: tensors and plain containers only
    (ddbench/core/safeload.py; a file holding anything else raises UnsafeFile, one line, exit 2 at the CLI)."""
    saved = load_tensors(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("images"), torch.Tensor):
        raise DDBenchError(f"{path} is not a synthetic set (a dict with an 'images' tensor); it holds "
                           f"{type(saved).__name__}")
    return SyntheticSet(*(saved.get(k) if k != "meta" else saved.get(k) or {} for k in SYNSET_FIELDS)), saved


def save_grid(images01: torch.Tensor, labels: torch.Tensor, num_classes: int, target: Path,
              max_per_class: int = 10) -> None:
    """A PNG grid, one row per class (at most `max_per_class` images each), images already in [0, 1]."""
    from PIL import Image
    from torchvision.utils import make_grid

    if labels.ndim == 2:  # soft labels: each image's class is its argmax
        labels = labels.argmax(1)
    rows = []
    for c in range(num_classes):
        idx = (labels == c).nonzero(as_tuple=True)[0][:max_per_class]
        row = images01[idx]
        if len(row) < max_per_class:  # pad short rows so the grid stays rectangular
            pad = torch.zeros(max_per_class - len(row), *images01.shape[1:], dtype=images01.dtype)
            row = torch.cat([row, pad])
        rows.append(row)
    grid = make_grid(torch.cat(rows), nrow=max_per_class, padding=1, pad_value=1.0)
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    atomic_write(target, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


__all__ = ["save_synset", "load_synset", "save_grid", "plain", "SYNSET_FIELDS"]
