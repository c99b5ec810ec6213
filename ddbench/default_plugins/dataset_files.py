"""What every dataset reader of datasets.py and tiny_imagenet.py shares: the normalisation constants, finding a
user-supplied folder, leaving no empty folder after a failed download, and the decoded-dataset cache folder.

Normalisation constants are those of the DC/DSA/DM reference code, VICO-UoE/DatasetCondensation
`utils.py: get_dataset`, so results are comparable with the published tables.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..api import DDBenchError
from ..helpers import missing_dirs, remove_empty


CACHE_ENV = "DDBENCH_CACHE"

# Mean/std per channel in [0, 1] pixel space: VICO-UoE/DatasetCondensation utils.py get_dataset.
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny-imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe(path: Path) -> str:
    return str(path) if path.exists() else f"{path} (missing)"


def normalise_uint8(x: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised; in place on one buffer to keep peak memory at 1x."""
    # numpy's astype copies into a writable buffer (frombuffer arrays are read-only).
    out = torch.from_numpy(x.astype(np.float32)) if isinstance(x, np.ndarray) else x.to(torch.float32)
    out = out.div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return out.sub_(m).div_(s).contiguous()


def check_labels(y: np.ndarray | Sequence[int], num_classes: int, source: Path) -> torch.Tensor:
    out = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if out.ndim != 1:
        raise DDBenchError(f"{source}: labels must be one-dimensional, got shape {tuple(out.shape)}")
    if out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_classes):
        raise DDBenchError(
            f"{source}: label values must lie in 0..{num_classes - 1}, found {int(out.min())}..{int(out.max())}"
        )
    return out


@contextlib.contextmanager
def no_empty_folders_on_failure(root: Path):
    """A failed download (offline) leaves no empty folder behind: neither `root` nor the layout torchvision made
    in it (an exit-2 error writes nothing). Folders that existed before, or hold a file, stay."""
    made = missing_dirs(root)
    before = {p for p in root.glob("*/") if p.is_dir()} | {p for p in root.glob("*/*/") if p.is_dir()} \
        if root.is_dir() else set()
    try:
        yield
    except BaseException:
        new = [Path(d) for d, _, _ in os.walk(root)] if root.is_dir() else []
        remove_empty([d for d in new if d not in before and d != root] + made)
        raise


def locate(name: str, root: Path | None, download: bool, folder: str, marker: str, fetch: Callable[[], None],
            manual: str) -> Path:
    """The folder of a user-supplied dataset: ROOT/FOLDER or ROOT itself, whichever holds MARKER; fetched first
    when allowed; otherwise one error that says where it looked and how to get it."""
    def find() -> tuple[list[Path], Path | None]:
        dirs = [root / folder, root] if root is not None else []
        return dirs, next((d for d in dirs if (d / marker).is_file()), None)

    dirs, found = find()
    if found is None and download:
        fetch()
        dirs, found = find()
    if found is None:
        looked = "; ".join(describe(d) for d in dirs) or "nowhere (no --data-root given)"
        raise DDBenchError(f"{name} not found (folder {folder}/ with {marker}); looked in: {looked}; "
                           f"get it with `--data-root DIR --download`, or {manual}")
    return found


def cache_dir() -> Path:
    """Where decoded datasets are kept between processes: $DDBENCH_CACHE, else ~/.cache/ddbench."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "ddbench") / "datasets"
