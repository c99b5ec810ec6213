"""The host's checks of what a method returns, before anything is saved, evaluated or recorded.

A benchmark is only as honest as its accounting: a method that returns 3 images per class under `--ipc 1`
must not be recorded as an IPC-1 result. The host, not the method or the protocol, enforces the contract:

* the images are a float (N, C, H, W) tensor of the dataset's shape, all finite;
* the labels are N class indices in [0, num_classes) (or an (N, num_classes) soft-label matrix, whose
  argmax gives each image's class);
* fixed IPC: exactly `ipc` images of every class;
* budget runs: every class equally often (at least once), as many per class as the method declares in
  `SyntheticSet.ipc`, and, when it declares `generation_seconds`, no more than the budget.

A violation is the method's failure, not the user's: the run is recorded as failed with a message naming
the method and what it returned, and the command exits 1.
"""
from __future__ import annotations

import math

import torch

from .api import ImageDataset, RunFailed, SyntheticSet


class MethodOutputError(RunFailed):
    """A method returned a set that breaks the run's contract (recorded as a failed run, exit 1)."""


def class_of_each(labels: torch.Tensor) -> torch.Tensor:
    """Hard labels as they are; soft labels (N, K) by their argmax."""
    return labels.argmax(1) if labels.ndim == 2 else labels


def check_output(syn: object, *, method: str, dataset: ImageDataset, ipc: int, budget: float | None) -> SyntheticSet:
    """Return `syn` if it honours the run's contract; raise MethodOutputError naming what is wrong."""

    def fail(what: str) -> MethodOutputError:
        return MethodOutputError(f"method {method!r} {what}")

    if not isinstance(syn, SyntheticSet):
        raise fail(f"returned {type(syn).__name__}, expected ddbench.api.SyntheticSet")
    images, labels, k = syn.images, syn.labels, dataset.num_classes
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise fail("returned images or labels that are not torch tensors")
    if not images.is_floating_point():
        raise fail(f"returned images of dtype {images.dtype}; expected a floating-point tensor")
    want = (dataset.channels, dataset.image_size, dataset.image_size)
    if tuple(images.shape[1:]) != want:
        raise fail(f"returned images of shape {tuple(images.shape[1:])}; the {dataset.name} dataset needs {want}")
    if images.shape[0] == 0:
        raise fail("returned an empty synthetic set")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise fail(f"returned {bad} image(s) containing NaN or inf")
    _check_labels(labels, k, fail)
    if syn.lr is not None and not (isinstance(syn.lr, (int, float)) and math.isfinite(syn.lr) and syn.lr > 0):
        raise fail(f"returned an evaluation lr={syn.lr!r}; it must be a positive finite number or None")
    counts = torch.bincount(class_of_each(labels).long().cpu(), minlength=k).tolist()
    shown = _counts_text(counts)
    if budget is None:
        if any(c != ipc for c in counts):
            raise fail(f"broke the IPC contract: --ipc {ipc} asks for exactly {ipc} image(s) of each of the {k} "
                       f"classes; it returned {shown} ({images.shape[0]} images)")
        return syn
    if len(set(counts)) != 1 or counts[0] < 1:
        raise fail(f"returned an unbalanced set under a budget: images per class {shown}; a budget run must give "
                   "every class the same number of images, at least one")
    if syn.ipc is None:
        raise fail("did not declare the IPC it produced under the budget (set SyntheticSet.ipc)")
    if syn.ipc != counts[0]:
        raise fail(f"declared ipc={syn.ipc} but returned {counts[0]} image(s) per class")
    if syn.generation_seconds is not None and syn.generation_seconds > budget:
        raise fail(f"spent {syn.generation_seconds:.3f} s generating, past its budget of {budget:g} s")
    return syn


def _check_labels(labels: torch.Tensor, k: int, fail) -> None:
    if labels.ndim == 2:
        if labels.shape[1] != k or not labels.is_floating_point():
            raise fail(f"returned soft labels of shape {tuple(labels.shape)} and dtype {labels.dtype}; expected "
                       f"floating-point (N, {k})")
        if not bool(torch.isfinite(labels).all()):
            raise fail("returned soft labels containing NaN or inf")
        return
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise fail(f"returned labels of shape {tuple(labels.shape)} and dtype {labels.dtype}; expected N integer "
                   "class indices")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        raise fail(f"returned labels {low}..{high}; the dataset's classes are 0..{k - 1}")


def _counts_text(counts: list[int]) -> str:
    """`3 per class` when balanced, else the count of each class (the first 20)."""
    if len(set(counts)) == 1:
        return f"{counts[0]} per class"
    listed = ", ".join(str(c) for c in counts[:20]) + (", ..." if len(counts) > 20 else "")
    return f"per class [{listed}]"
