"""The host's dataset plugins: Fashion-MNIST (the default), MNIST, CIFAR-10, CIFAR-100, Tiny-ImageNet.

Files are read in their official formats directly (IDX, the CIFAR python pickles, the tiny-imagenet-200
folder) rather than through torchvision's dataset classes, so that (a) the Debian `dataset-fashion-mnist`
package's gzipped IDX files work offline, and (b) small test-written folders work, where torchvision's
CIFAR classes would refuse them on MD5. torchvision is used only to download.

Normalisation constants are those of the DC/DSA/DM reference code, VICO-UoE/DatasetCondensation
`utils.py: get_dataset`, so results are comparable with the published tables.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import hookimpl
from ..api import DatasetSpec, DDBenchError, ImageDataset
from ..identity import config_hash
from ..atomic import atomic_save, missing_dirs, remove_empty
from ..safeload import UnsafeFile, drop_refused, load_tensors

CACHE_ENV = "DDBENCH_CACHE"

# Where system packages put datasets (Debian `dataset-fashion-mnist`).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
}

# Mean/std per channel in [0, 1] pixel space: VICO-UoE/DatasetCondensation utils.py get_dataset.
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny-imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
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

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_root(root: Path | str | None) -> Path | None:
    return None if root is None or str(root) == "" else Path(root).expanduser()


def _describe(path: Path) -> str:
    return str(path) if path.exists() else f"{path} (missing)"


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


def _normalise_uint8(x: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised; in place on one buffer to keep peak memory at 1x."""
    # numpy's astype copies into a writable buffer (frombuffer arrays are read-only).
    out = torch.from_numpy(x.astype(np.float32)) if isinstance(x, np.ndarray) else x.to(torch.float32)
    out = out.div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return out.sub_(m).div_(s).contiguous()


def _labels(y: np.ndarray | Sequence[int], num_classes: int, source: Path) -> torch.Tensor:
    out = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if out.ndim != 1:
        raise DDBenchError(f"{source}: labels must be one-dimensional, got shape {tuple(out.shape)}")
    if out.numel() and (int(out.min()) < 0 or int(out.max()) >= num_classes):
        raise DDBenchError(
            f"{source}: label values must lie in 0..{num_classes - 1}, found {int(out.min())}..{int(out.max())}"
        )
    return out


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
        raise DDBenchError(f"cannot read IDX file {path}: {_one_line(exc)}") from None
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
            looked = "; ".join(_describe(d) for d in dirs) or "(no folder)"
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
            train_x=_normalise_uint8(arrays["train_x"][:, None], mean, std),
            train_y=_labels(arrays["train_y"], len(class_names), files["train_y"]),
            test_x=_normalise_uint8(arrays["test_x"][:, None], mean, std),
            test_y=_labels(arrays["test_y"], len(class_names), files["test_y"]),
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
    with _no_empty_folders_on_failure(root):
        try:
            import torchvision.datasets as tvd

            root.mkdir(parents=True, exist_ok=True)
            cls = getattr(tvd, tv_class)
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
        except DDBenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - network/disk failures become one readable line
            raise DDBenchError(f"downloading {name} into {root} failed: {_one_line(exc)}") from None


@contextlib.contextmanager
def _no_empty_folders_on_failure(root: Path):
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
        raise DDBenchError(f"cannot read CIFAR file {path}: {_one_line(exc)}") from None
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
    labels = _labels(batch[label_key], num_classes, path)
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


def _locate(name: str, root: Path | None, download: bool, folder: str, marker: str, fetch: Callable[[], None],
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
        looked = "; ".join(_describe(d) for d in dirs) or "nowhere (no --data-root given)"
        raise DDBenchError(f"{name} not found (folder {folder}/ with {marker}); looked in: {looked}; "
                           f"get it with `--data-root DIR --download`, or {manual}")
    return found


def _cifar_loader(name: str) -> Callable[..., ImageDataset]:
    fmt = CIFAR_FORMATS[name]
    mean, std = NORMALISATION[name]

    def load(root: Path | None, download: bool) -> ImageDataset:
        folder = _locate(name, root, download, fmt.folder, fmt.train_files[0],
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
            train_x=_normalise_uint8(np.concatenate([x for x, _ in train]), mean, std),
            train_y=torch.cat([y for _, y in train]),
            test_x=_normalise_uint8(tx, mean, std),
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


def cache_dir() -> Path:
    """Where decoded datasets are kept between processes: $DDBENCH_CACHE, else ~/.cache/ddbench."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "ddbench") / "datasets"


def _decode_jpeg(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DDBenchError(f"cannot decode image {path}: {_one_line(exc)}") from None
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


def _tiny_loader() -> Callable[..., ImageDataset]:
    name = "tiny-imagenet"
    mean, std = NORMALISATION[name]

    def fetch(root: Path | None) -> None:
        if root is None:
            raise DDBenchError(f"downloading {name} needs a folder: pass `--data-root DIR --download`")
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            with _no_empty_folders_on_failure(root):
                download_and_extract_archive(TINY_IMAGENET_URL, str(root))
        except Exception as exc:  # noqa: BLE001
            raise DDBenchError(f"downloading {name} into {root} failed: {_one_line(exc)}") from None

    def load(root: Path | None, download: bool) -> ImageDataset:
        folder = _locate(name, root, download, "tiny-imagenet-200", "wnids.txt", lambda: fetch(root),
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
            train_x=_normalise_uint8(data["train_x"], mean, std),
            train_y=data["train_y"],
            test_x=_normalise_uint8(data["test_x"], mean, std),
            test_y=data["test_y"],
            num_classes=len(data["class_names"]),
            class_names=list(data["class_names"]),
            mean=mean,
            std=std,
        )

    return load


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
        "tiny-imagenet", _cached("tiny-imagenet", _tiny_loader()),
        "Tiny-ImageNet-200, 100k train / 10k val (used as test) 64x64 RGB, 200 classes",
        image_size=64, channels=3, num_classes=200,
    ),
]


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    for spec in SPECS:
        register(spec)
