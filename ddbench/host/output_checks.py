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

from ..api import ImageDataset, RunFailed, SyntheticSet


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


# --------------------------------------------------------------------------------------------------
# What a protocol returns, and what a dataset loader returns
# --------------------------------------------------------------------------------------------------


class ProtocolOutputError(RunFailed):
    """A protocol returned accuracies that are not accuracies (recorded as a failed run, exit 1)."""


class DatasetOutputError(RunFailed):
    """A dataset loader returned something that is not a usable dataset (exit 1; the runner names the plugin)."""


def check_evaluation(result: object, *, protocol: str, networks: tuple[str, int] | None) -> object:
    """Return `result` if it is an EvalResult of finite percentages, one per network asked for (`networks`: the
    protocol's setting of role NETWORKS and its value; None when the protocol has none).

    A protocol's numbers are what the database stores and every report averages: one NaN used to make every
    later report refuse the whole database, so a bad value is the protocol's failure, caught here."""
    from ..api import EvalResult

    def fail(what: str) -> ProtocolOutputError:
        return ProtocolOutputError(f"protocol {protocol!r} {what}")

    if not isinstance(result, EvalResult):
        raise fail(f"returned {type(result).__name__}, expected ddbench.api.EvalResult")
    accs = result.accuracies
    if not isinstance(accs, (list, tuple)) or not accs:
        raise fail(f"returned accuracies={accs!r}; expected a non-empty list of percentages")
    for a in accs:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or not 0 <= a <= 100:
            raise fail(f"returned the accuracy {a!r}; allowed: a finite percentage in [0, 100] (all: {list(accs)!r})")
    if networks is not None and networks[1] is not None and len(accs) != networks[1]:
        raise fail(f"returned {len(accs)} accuracies for {networks[0]}={networks[1]} networks")
    secs = result.seconds
    if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not math.isfinite(secs) or secs < 0:
        raise fail(f"returned seconds={secs!r}; expected a finite number >= 0")
    return result


def check_dataset(data: object, spec: object | None = None) -> ImageDataset:
    """Return `data` if it is an ImageDataset a run can use: float images of one shape, labels in range, at least
    one training and one test image, a training image of every class, and the size, channels and classes its
    DatasetSpec declared (what `ddbench list` shows). Otherwise the loader's fault, named before any work."""

    def fail(what: str) -> DatasetOutputError:  # the caller (runner._guarded) names the dataset and its plugin
        return DatasetOutputError(what)

    if not isinstance(data, ImageDataset):
        raise fail(f"loader returned {type(data).__name__}, expected ddbench.api.ImageDataset")
    k = data.num_classes
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise fail(f"loader returned num_classes={k!r}; expected an integer >= 1")
    for part in ("train", "test"):
        x, y = getattr(data, f"{part}_x"), getattr(data, f"{part}_y")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise fail(f"loader returned {part} images or labels that are not torch tensors")
        if x.ndim != 4 or not x.is_floating_point():
            raise fail(f"loader returned {part} images of shape {tuple(x.shape)} and dtype {x.dtype}; "
                       "expected floating-point (N, C, H, W)")
        if x.shape[0] == 0:
            raise fail(f"loader returned an empty {part} set")
        if not bool(torch.isfinite(x).all()):  # else the first method to copy a pixel was blamed for the NaN
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise fail(f"loader returned {part} images with NaN or infinite pixels ({bad} of {x.shape[0]} images)")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
            raise fail(f"loader returned {part} labels of shape {tuple(y.shape)} and dtype {y.dtype}; "
                       f"expected {x.shape[0]} integer class indices")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= k:
            raise fail(f"loader returned {part} labels {low}..{high}; num_classes={k} allows 0..{k - 1}")
    if data.test_x.shape[1:] != data.train_x.shape[1:]:
        raise fail(f"loader returned test images of shape {tuple(data.test_x.shape[1:])} and train images of "
                   f"shape {tuple(data.train_x.shape[1:])}")
    counts = torch.bincount(data.train_y, minlength=k)
    empty = [c for c in range(k) if int(counts[c]) == 0]
    if empty:  # else a method asking for IPC images of it failed as if the user's IPC were the problem
        names = list(getattr(data, "class_names", []) or [])
        shown = ", ".join(f"{c} ({names[c]})" if c < len(names) else str(c) for c in empty[:5])
        raise fail(f"loader returned no training image of class {shown}{' and more' if len(empty) > 5 else ''} "
                   f"of num_classes={k}; every class needs at least one")
    # The spec is what `ddbench list` shows and what models are built for; a folder may hold a subset of the
    # classes (the challenge's non-strict mode takes a partial copy), never more, nor other shapes.
    said = getattr(spec, "num_classes", 0)
    if said and k > said:
        raise fail(f"loader returned num_classes={k}, its DatasetSpec declares num_classes={said}")
    declared = {"channels": (getattr(spec, "channels", 0), data.channels),
                "image_size": (getattr(spec, "image_size", 0), data.train_x.shape[-1])}
    for key, (said, got) in declared.items():
        if said and said != got:
            raise fail(f"loader returned {key}={got}, its DatasetSpec declares {key}={said}")
    if data.train_x.shape[-1] != data.train_x.shape[-2] and getattr(spec, "image_size", 0):
        raise fail(f"loader returned {tuple(data.train_x.shape[-2:])} images; its DatasetSpec declares square "
                   f"images of {spec.image_size}")
    return data
