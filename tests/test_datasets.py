"""Dataset plugins on tiny files written in the real formats, plus one check on the real Fashion-MNIST."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ddbench.default_plugins import datasets as D
from ddbench.default_plugins import tiny_imagenet
from ddbench.api import DDBenchError, ImageDataset

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Each test starts with an empty in-process cache, no system folders and a private disk cache."""
    D.clear_cache()
    monkeypatch.setattr(D, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "no-system"], "mnist": []})
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    yield
    D.clear_cache()


def spec(name: str):
    return next(s for s in D.SPECS if s.name == name)


# --------------------------------------------------------------------------------------------------
# Writers for the real formats
# --------------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_set(folder: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, base in D.IDX_FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{base}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / base).write_bytes(data)
    return arrays


def write_cifar10(root: Path, per_batch: int = 4, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name, n in (("train", 10), ("test", 5)):
        batch = {
            "filenames": [f"{i}.png" for i in range(n)],
            "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            "coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, fh)
    return folder


def write_tiny_imagenet(root: Path, wnids=("n02", "n01", "n03"), per_class: int = 2) -> Path:
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text(
        "n00\tentity\n" + "".join(f"{w}\tname of {w}, synonym\n" for w in wnids)
    )
    ann = []
    for k, w in enumerate(wnids):
        img_dir = folder / "train" / w / "images"
        img_dir.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (64, 64), (40 * k, 100, 200)).save(img_dir / f"{w}_{i}.JPEG")
        Image.new("L", (64, 64), 30 * k).save(folder / "val" / "images" / f"val_{k}.JPEG")  # grey, as some real ones
        ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return folder


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------


def test_plugin_registers_all_datasets(registry):
    assert {"fashion-mnist", "mnist", "cifar10", "cifar100", "tiny-imagenet"} <= set(registry.names("datasets"))
    assert registry.owners["datasets"]["fashion-mnist"] == "datasets"
    from ddbench.api import DEFAULT_DATASET  # the one home of the default (every command and request reads it)

    assert DEFAULT_DATASET == "fashion-mnist" and DEFAULT_DATASET in registry.names("datasets")
    s = registry.get("datasets", "cifar100")
    assert (s.image_size, s.channels, s.num_classes) == (32, 3, 100)


# --------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_from_root(tmp_path, gz, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    arrays = write_idx_set(folder, gz=gz)
    ds = spec("fashion-mnist").load(tmp_path)
    assert isinstance(ds, ImageDataset)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_x.shape == (6, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == arrays["train_y"].tolist()
    assert ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10 and len(ds.class_names) == 10
    assert ds.mean == (0.2861,) and ds.std == (0.3530,)
    pixels = ds.denormalise(ds.train_x) * 255
    assert torch.allclose(pixels[:, 0], torch.from_numpy(arrays["train_x"]).float(), atol=1e-3)


def test_mnist_from_torchvision_layout(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", gz=False)
    ds = spec("mnist").load(str(tmp_path))
    assert ds.name == "mnist" and ds.class_names == [str(i) for i in range(10)]
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)


def test_system_folder_is_used_without_a_root_and_never_behind_one(tmp_path, monkeypatch):
    # Issue 12.8: an empty or missing --data-root is an error, not a silent fallback to other data.
    system = tmp_path / "system"
    write_idx_set(system)
    monkeypatch.setattr(D, "SYSTEM_DIRS", {"fashion-mnist": [system]})
    assert len(spec("fashion-mnist").load().train_x) == 12
    for root in (tmp_path / "missing", tmp_path):
        D.clear_cache()
        with pytest.raises(DDBenchError, match=rf"looked in: {root}.*drop --data-root to use the system copy in {system}"):
            spec("fashion-mnist").load(root)


def test_in_process_cache_pays_once(tmp_path, monkeypatch):
    write_idx_set(tmp_path)
    a = spec("fashion-mnist").load(tmp_path)
    monkeypatch.setattr(D, "read_idx", lambda p: pytest.fail("read twice"))
    b = spec("fashion-mnist").load(tmp_path)
    assert b.train_x is a.train_x
    b.class_names.append("x")  # a caller's edit does not reach the cached copy
    assert len(spec("fashion-mnist").load(tmp_path).class_names) == 10


def test_missing_dataset_lists_every_place(tmp_path):
    with pytest.raises(DDBenchError) as err:
        spec("fashion-mnist").load(tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    for place in (tmp_path / "nowhere", tmp_path / "nowhere" / "FashionMNIST" / "raw"):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-root DIR --download" in msg
    with pytest.raises(DDBenchError) as err:
        spec("fashion-mnist").load()  # without a root: the system folders
    assert str(tmp_path / "no-system") in str(err.value)


def test_download_without_root_is_refused():
    with pytest.raises(DDBenchError, match="--data-root"):
        spec("mnist").load(None, download=True)


def test_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DDBenchError, match="is a file"):
        spec("mnist").load(tmp_path / "f")


def test_download_uses_torchvision_layout(tmp_path, monkeypatch):
    """No network in tests: a stand-in for torchvision's class writes what the real one would."""
    import torchvision.datasets as tvd

    calls = []

    class FakeFashion:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            if not (Path(root) / "FashionMNIST" / "raw").exists():
                write_idx_set(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashion)
    ds = spec("fashion-mnist").load(tmp_path / "new", download=True)
    assert len(ds.train_x) == 12 and calls[0] == (str(tmp_path / "new"), True, True)


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirrors")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DDBenchError) as err:
        spec("mnist").load(tmp_path, download=True)
    assert "downloading mnist" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "bad-magic", "bad-gzip", "empty"],
)
def test_corrupt_idx_names_the_file(tmp_path, damage):
    write_idx_set(tmp_path, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(bad.read_bytes())
    if damage == "truncated":
        bad.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "bad-magic":
        bad.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    elif damage == "bad-gzip":
        bad.write_bytes(gzip.compress(raw)[:50])
    else:
        bad.write_bytes(gzip.compress(b""))
    with pytest.raises(DDBenchError) as err:
        spec("fashion-mnist").load(tmp_path)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_incomplete_idx_set_names_missing_file(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DDBenchError, match="t10k-labels-idx1-ubyte"):
        spec("fashion-mnist").load(tmp_path)


def test_image_label_count_mismatch(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(DDBenchError, match="6 images but .* 5 labels"):
        spec("fashion-mnist").load(tmp_path)


# --------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_pickles(tmp_path, protocol):
    write_cifar10(tmp_path, protocol=protocol)
    ds = spec("cifar10").load(tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_y.dtype == torch.int64 and ds.class_names[0] == "airplane" and ds.num_classes == 10
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        first = pickle.load(fh)
    expect = torch.from_numpy(first["data"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(ds.denormalise(ds.train_x[:1])[0], expect, atol=1e-5)
    assert ds.train_y[:4].tolist() == first["labels"]


def test_cifar10_folder_given_directly(tmp_path):
    folder = write_cifar10(tmp_path)
    assert spec("cifar10").load(folder).test_x.shape[0] == 4


def test_cifar100_pickles(tmp_path):
    write_cifar100(tmp_path)
    ds = spec("cifar100").load(tmp_path)
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.num_classes == 100
    assert ds.class_names[:2] == ["fine0", "fine1"]
    assert ds.mean == (0.5071, 0.4866, 0.4409)


def test_cifar_corrupt_and_hostile_files(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DDBenchError, match="data_batch_3"):
        spec("cifar10").load(tmp_path)
    D.clear_cache()
    (folder / "data_batch_3").write_bytes(pickle.dumps(Path("x")))  # a global outside numpy: refused
    with pytest.raises(DDBenchError, match="not allowed"):
        spec("cifar10").load(tmp_path)


def test_cifar_missing_lists_places(tmp_path):
    with pytest.raises(DDBenchError) as err:
        spec("cifar100").load(tmp_path)
    assert str(tmp_path / "cifar-100-python") in str(err.value) and "--download" in str(err.value)


# --------------------------------------------------------------------------------------------------
# Tiny-ImageNet
# --------------------------------------------------------------------------------------------------


def test_tiny_imagenet_folder_and_disk_cache(tmp_path, monkeypatch):
    write_tiny_imagenet(tmp_path)
    ds = spec("tiny-imagenet").load(tmp_path)
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.test_x.shape == (3, 3, 64, 64)
    assert ds.num_classes == 3 and ds.class_names == ["name of n01", "name of n02", "name of n03"]
    # classes are the sorted wnids: n02 was listed first but is label 1
    assert ds.train_y.tolist() == [0, 0, 1, 1, 2, 2] and ds.test_y.tolist() == [1, 0, 2]
    assert ds.test_x.shape[1] == 3  # grey JPEGs come back as RGB
    assert ds.mean == (0.485, 0.456, 0.406)
    assert list((tmp_path / "cache" / "datasets").glob("tiny-imagenet-*.pt"))

    D.clear_cache()
    monkeypatch.setattr(tiny_imagenet, "_decode_jpeg", lambda p: pytest.fail("decoded again despite the .pt cache"))
    again = spec("tiny-imagenet").load(tmp_path)
    assert torch.equal(again.train_x, ds.train_x)


def test_tiny_imagenet_wrong_size_image(tmp_path):
    from PIL import Image

    folder = write_tiny_imagenet(tmp_path)
    bad = folder / "train" / "n01" / "images" / "n01_0.JPEG"
    Image.new("RGB", (32, 32)).save(bad)
    with pytest.raises(DDBenchError, match="n01_0.JPEG is 32x32"):
        spec("tiny-imagenet").load(tmp_path)


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DDBenchError, match="tiny-imagenet-200"):
        spec("tiny-imagenet").load(tmp_path)


# --------------------------------------------------------------------------------------------------
# The real Fashion-MNIST (Debian package dataset-fashion-mnist)
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="needs `apt-get install dataset-fashion-mnist`")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(D, "SYSTEM_DIRS", {"fashion-mnist": [FASHION_SYSTEM]})
    ds = spec("fashion-mnist").load()
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.class_counts().tolist() == [6000] * 10
    assert abs(float(ds.train_x.mean())) < 0.01 and abs(float(ds.train_x.std()) - 1.0) < 0.01
