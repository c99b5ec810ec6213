"""The host's dataset plugins: Fashion-MNIST (the default), MNIST, CIFAR-10, CIFAR-100, Tiny-ImageNet.

Files are read in their official formats directly (IDX, the CIFAR python pickles, the tiny-imagenet-200
folder) rather than through torchvision's dataset classes, so that (a) the Debian `dataset-fashion-mnist`
package's gzipped IDX files work offline, and (b) small test-written folders work, where torchvision's
CIFAR classes would refuse them on MD5. torchvision is used only to download.

What the readers share is dataset_files.py's (normalisation constants: the DC/DSA/DM reference code's); the
Tiny-ImageNet reader is tiny_imagenet.py's. CACHE_ENV, NORMALISATION and cache_dir stay importable from here.
"""
from __future__ import annotations

import gzip
import pickle
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import hookimpl
from ..api import DatasetSpec, DDBenchError, ImageDataset
from .dataset_files import (CACHE_ENV, NORMALISATION, cache_dir, check_labels, describe, locate,  # noqa: F401
                            no_empty_folders_on_failure, normalise_uint8, one_line)
from .tiny_imagenet import tiny_loader

# Where system packages put datasets (Debian `dataset-fashion-mnist`).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _as_root(root: Path | str | None) -> Path | None:
    return None if root is None or str(root) == "" else Path(root).expanduser()


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------------


def read_idx(path: Path | str) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gz or raw); any defect is a one-line error naming the file.

    We parse it ourselves because the Debian package ships only .gz files, which torchvision would
    try to re-download.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DDBenchError(f"cannot read IDX file {path}: {one_line(exc)}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DDBenchError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    if data[2] != 0x08:
        raise DDBenchError(f"{path}: IDX element type 0x{data[2]:02x} is not supported; only unsigned bytes (0x08)")
    ndim = data[3]
    if ndim not in (1, 3):
        raise DDBenchError(f"{path}: IDX file has {ndim} dimensions; expected 1 (labels) or 3 (images)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DDBenchError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DDBenchError(
            f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} for shape {dims}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx_dir(dirs: Sequence[Path]) -> tuple[Path, dict[str, Path]] | None:
    """The first folder holding all four IDX files (raw preferred over .gz); a partial set is an error."""
    for d in dirs:
        if not d.is_dir():
            continue
        found: dict[str, Path] = {}
        for key, base in IDX_FILES.items():
            for candidate in (d / base, d / f"{base}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return d, found
        if found:
            missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
            raise DDBenchError(f"{d} holds an incomplete IDX set: missing {', '.join(missing)} (or .gz)")
    return None


def _idx_loader(
    name: str, subdir: str, class_names: list[str], tv_class: str, apt_hint: str | None
) -> Callable[..., ImageDataset]:
    mean, std = NORMALISATION[name]

    def candidates(root: Path | None) -> list[Path]:
        # An explicit --data-root is where the data must be: falling back to the system copy would record a
        # result computed on other data than the user named.
        return [root, root / subdir / "raw"] if root is not None else list(SYSTEM_DIRS.get(name, []))

    def load(root: Path | None, download: bool) -> ImageDataset:
        dirs = candidates(root)
        hit = _find_idx_dir(dirs)
        if hit is None and download:
            _torchvision_download(name, tv_class, root)
            hit = _find_idx_dir(dirs)
        if hit is None:
            looked = "; ".join(describe(d) for d in dirs) or "(no folder)"
            how = f"`apt-get install {apt_hint}`, or " if apt_hint else ""
            system = [str(d) for d in SYSTEM_DIRS.get(name, []) if d.is_dir()]
            other = f"; drop --data-root to use the system copy in {system[0]}" if root is not None and system else ""
            raise DDBenchError(
                f"{name} not found (IDX files {IDX_FILES['train_x']}[.gz] etc.); looked in: {looked}; "
                f"get it with {how}`--data-root DIR --download`{other}"
            )
        _, files = hit
        arrays = {k: read_idx(p) for k, p in files.items()}
        for split in ("train", "test"):
            x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if x.ndim != 3 or y.ndim != 1:
                raise DDBenchError(f"{files[split + '_x']}: expected 3-d images and 1-d labels")
            if len(x) != len(y):
                raise DDBenchError(
                    f"{files[split + '_x']} has {len(x)} images but {files[split + '_y']} has {len(y)} labels"
                )
        return ImageDataset(
            name=name,
            train_x=normalise_uint8(arrays["train_x"][:, None], mean, std),
            train_y=check_labels(arrays["train_y"], len(class_names), files["train_y"]),
            test_x=normalise_uint8(arrays["test_x"][:, None], mean, std),
            test_y=check_labels(arrays["test_y"], len(class_names), files["test_y"]),
            num_classes=len(class_names),
            class_names=list(class_names),
            mean=mean,
            std=std,
        )

    return load


def _torchvision_download(name: str, tv_class: str, root: Path | None) -> None:
    """Download with torchvision's own class, which writes the layout our readers look for."""
    if root is None:
        raise DDBenchError(f"downloading {name} needs a folder: pass `--data-root DIR --download`")
    with no_empty_folders_on_failure(root):
        try:
            import torchvision.datasets as tvd

            root.mkdir(parents=True, exist_ok=True)
            cls = getattr(tvd, tv_class)
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
        except DDBenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - network/disk failures become one readable line
            raise DDBenchError(f"downloading {name} into {root} failed: {one_line(exc)}") from None


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (official python pickles)
# --------------------------------------------------------------------------------------------------


class _CifarUnpickler(pickle.Unpickler):
    """Only what the CIFAR batches contain (numpy arrays), so a hostile file cannot run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _CifarUnpickler(fh, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise DDBenchError(f"cannot read CIFAR file {path}: {one_line(exc)}") from None
    if not isinstance(obj, dict):
        raise DDBenchError(f"{path} is not a CIFAR batch (a pickled dict), got {type(obj).__name__}")
    return obj


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    batch = _read_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise DDBenchError(f"{path} lacks the key {key!r}; keys: {', '.join(map(str, batch))}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DDBenchError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    labels = check_labels(batch[label_key], num_classes, path)
    if len(labels) != len(data):
        raise DDBenchError(f"{path} has {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


@dataclass(frozen=True)
class _CifarFormat:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    tv_class: str


CIFAR_FORMATS = {
    "cifar10": _CifarFormat(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
        "labels", "label_names", 10, "CIFAR10",
    ),
    "cifar100": _CifarFormat(
        "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names", 100, "CIFAR100",
    ),
}


def _cifar_loader(name: str) -> Callable[..., ImageDataset]:
    fmt = CIFAR_FORMATS[name]
    mean, std = NORMALISATION[name]

    def load(root: Path | None, download: bool) -> ImageDataset:
        folder = locate(name, root, download, fmt.folder, fmt.train_files[0],
                         lambda: _torchvision_download(name, fmt.tv_class, root),
                         "unpack the official python archive into DIR")
        missing = [f for f in (*fmt.train_files, fmt.test_file, fmt.meta_file) if not (folder / f).is_file()]
        if missing:
            raise DDBenchError(f"{folder} is incomplete: missing {', '.join(missing)}")
        train = [_cifar_batch(folder / f, fmt.label_key, fmt.num_classes) for f in fmt.train_files]
        tx, ty = _cifar_batch(folder / fmt.test_file, fmt.label_key, fmt.num_classes)
        meta = _read_pickle(folder / fmt.meta_file)
        names = meta.get(fmt.names_key)
        if not isinstance(names, list) or len(names) != fmt.num_classes:
            raise DDBenchError(
                f"{folder / fmt.meta_file}: {fmt.names_key!r} must list {fmt.num_classes} class names"
            )
        return ImageDataset(
            name=name,
            train_x=normalise_uint8(np.concatenate([x for x, _ in train]), mean, std),
            train_y=torch.cat([y for _, y in train]),
            test_x=normalise_uint8(tx, mean, std),
            test_y=ty,
            num_classes=fmt.num_classes,
            class_names=[str(n) for n in names],
            mean=mean,
            std=std,
        )

    return load


# --------------------------------------------------------------------------------------------------
# Tiny-ImageNet (tiny-imagenet-200/ folder, decoded once into a .pt cache)
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# In-process cache and the plugin hook
# --------------------------------------------------------------------------------------------------

_LOADED: dict[tuple[str, str], ImageDataset] = {}
_LOCK = threading.Lock()


def _cached(name: str, raw_load: Callable[[Path | None, bool], ImageDataset]) -> Callable[..., ImageDataset]:
    """One process loading the same dataset twice (sweeps, evaluation) should pay once."""

    def load(root: Path | str | None = None, download: bool = False) -> ImageDataset:
        r = _as_root(root)
        if r is not None and r.exists() and not r.is_dir():
            raise DDBenchError(f"data root {r} is a file; pass a folder (--data-root DIR)")
        key = (name, str(r.resolve()) if r is not None else "")
        with _LOCK:
            hit = _LOADED.get(key)
            if hit is None:
                hit = raw_load(r, download)
                _LOADED[key] = hit
        # A fresh wrapper sharing the tensors: reassigning a field does not leak into the cache.
        return replace(hit, class_names=list(hit.class_names))

    load.__doc__ = f"Load {name}: load(root=None, download=False) -> ImageDataset (normalised, CPU)."
    return load


def clear_cache() -> None:
    """Drop the in-process cache (tests; freeing memory between datasets)."""
    with _LOCK:
        _LOADED.clear()


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "fashion-mnist",
        _cached("fashion-mnist", _idx_loader("fashion-mnist", "FashionMNIST", FASHION_CLASSES, "FashionMNIST",
                                             "dataset-fashion-mnist")),
        "Fashion-MNIST (Zalando), 60k/10k 28x28 grey, 10 classes; the default dataset",
        image_size=28, channels=1, num_classes=10,
    ),
    DatasetSpec(
        "mnist",
        _cached("mnist", _idx_loader("mnist", "MNIST", MNIST_CLASSES, "MNIST", None)),
        "MNIST, 60k/10k 28x28 grey, 10 classes",
        image_size=28, channels=1, num_classes=10,
    ),
    DatasetSpec(
        "cifar10", _cached("cifar10", _cifar_loader("cifar10")),
        "CIFAR-10, 50k/10k 32x32 RGB, 10 classes (python pickle batches)",
        image_size=32, channels=3, num_classes=10,
    ),
    DatasetSpec(
        "cifar100", _cached("cifar100", _cifar_loader("cifar100")),
        "CIFAR-100, 50k/10k 32x32 RGB, 100 fine classes (python pickle batches)",
        image_size=32, channels=3, num_classes=100,
    ),
    DatasetSpec(
        "tiny-imagenet", _cached("tiny-imagenet", tiny_loader()),
        "Tiny-ImageNet-200, 100k train / 10k val (used as test) 64x64 RGB, 200 classes",
        image_size=64, channels=3, num_classes=200,
    ),
]


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    for spec in SPECS:
        register(spec)
