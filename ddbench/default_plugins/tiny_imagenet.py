"""Tiny-ImageNet-200 for datasets.py: the tiny-imagenet-200/ folder (train/WNID/images, val with its annotations,
used as the test set), decoded once into a .pt cache keyed on the folder, so later runs load tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..api import DDBenchError, ImageDataset
from ..helpers import UnsafeFile, atomic_save, config_hash, drop_refused, load_tensors
from .dataset_files import NORMALISATION, locate, no_empty_folders_on_failure, normalise_uint8, one_line, cache_dir


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _decode_jpeg(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DDBenchError(f"cannot decode image {path}: {one_line(exc)}") from None
    if arr.shape != (64, 64, 3):
        raise DDBenchError(f"{path} is {arr.shape[1]}x{arr.shape[0]}; Tiny-ImageNet images must be 64x64")
    return arr


def _decode_all(paths: list[Path], desc: str) -> torch.Tensor:
    out = np.empty((len(paths), 64, 64, 3), dtype=np.uint8)
    iterator: Any = paths
    if len(paths) > 1000:
        from tqdm import tqdm

        iterator = tqdm(paths, desc=desc, unit="img", leave=False)
    for i, p in enumerate(iterator):
        out[i] = _decode_jpeg(p)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _tiny_decode(folder: Path) -> dict[str, Any]:
    """Read the folder layout into uint8 tensors; classes are the sorted wnids, as torchvision ImageFolder."""
    wnids_file = folder / "wnids.txt"
    wnids = sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()})
    if not wnids:
        raise DDBenchError(f"{wnids_file} lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    words: dict[str, str] = {}
    words_file = folder / "words.txt"
    if words_file.is_file():
        for line in words_file.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            if wnid in index:
                words[wnid] = text.split(",")[0].strip() or wnid
    names = [words.get(w, w) for w in wnids]

    train_paths: list[Path] = []
    train_labels: list[int] = []
    for w in wnids:
        img_dir = folder / "train" / w / "images"
        files = sorted(p for p in img_dir.glob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        if not files:
            raise DDBenchError(f"no training images for class {w} in {img_dir}")
        train_paths += files
        train_labels += [index[w]] * len(files)

    ann = folder / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DDBenchError(f"{ann} is missing; the validation split (used as the test set) needs it")
    val_paths: list[Path] = []
    val_labels: list[int] = []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DDBenchError(f"{ann} line {n}: expected 'FILE<TAB>WNID...' with a wnid from wnids.txt, got {line!r}")
        val_paths.append(folder / "val" / "images" / parts[0])
        val_labels.append(index[parts[1]])

    return {
        "train_x": _decode_all(train_paths, "decoding tiny-imagenet train"),
        "train_y": torch.tensor(train_labels, dtype=torch.int64),
        "test_x": _decode_all(val_paths, "decoding tiny-imagenet val"),
        "test_y": torch.tensor(val_labels, dtype=torch.int64),
        "class_names": names,
    }


def _tiny_cache_file(folder: Path) -> Path:
    """Keyed on the folder and the mtimes of its index files, so a replaced copy is decoded again."""
    folder = folder.resolve()
    stamp = [str(folder)]
    for rel in ("wnids.txt", "val/val_annotations.txt", "train", "val/images"):
        p = folder / rel
        stamp.append(f"{rel}:{p.stat().st_mtime_ns if p.exists() else 0}")
    key = config_hash(stamp)
    return cache_dir() / f"tiny-imagenet-{key}.pt"


def tiny_loader() -> Callable[..., ImageDataset]:
    name = "tiny-imagenet"
    mean, std = NORMALISATION[name]

    def fetch(root: Path | None) -> None:
        if root is None:
            raise DDBenchError(f"downloading {name} needs a folder: pass `--data-root DIR --download`")
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            with no_empty_folders_on_failure(root):
                download_and_extract_archive(TINY_IMAGENET_URL, str(root))
        except Exception as exc:  # noqa: BLE001
            raise DDBenchError(f"downloading {name} into {root} failed: {one_line(exc)}") from None

    def load(root: Path | None, download: bool) -> ImageDataset:
        folder = locate(name, root, download, "tiny-imagenet-200", "wnids.txt", lambda: fetch(root),
                         f"unzip {TINY_IMAGENET_URL} into DIR")
        cache = _tiny_cache_file(folder)
        data: dict[str, Any] | None = None
        if cache.is_file():
            try:
                data = load_tensors(cache)
            except UnsafeFile as exc:
                drop_refused(exc, then="decoding the images again")
            except Exception:  # noqa: BLE001 - a broken cache is rebuilt, not fatal
                data = None
        if data is None:
            data = _tiny_decode(folder)
            try:
                atomic_save(data, cache)
            except OSError:
                pass  # read-only cache: still usable, just decoded again next time
        return ImageDataset(
            name=name,
            train_x=normalise_uint8(data["train_x"], mean, std),
            train_y=data["train_y"],
            test_x=normalise_uint8(data["test_x"], mean, std),
            test_y=data["test_y"],
            num_classes=len(data["class_names"]),
            class_names=list(data["class_names"]),
            mean=mean,
            std=std,
        )

    return load
