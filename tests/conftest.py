"""Shared fixtures: tiny datasets and run contexts, so method tests stay fast."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddbench.api import ImageDataset, RunContext
from ddbench.host.plugins import load_plugins

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def make_tiny_dataset(
    num_classes: int = 3, per_class: int = 20, channels: int = 1, size: int = 28, test_per_class: int = 10, seed: int = 0
) -> ImageDataset:
    """Classes separable by a class-specific pattern plus noise: a distilled set can learn them."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(num_classes, channels, size, size, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        x = protos[y] + 1.5 * torch.randn(len(y), channels, size, size, generator=g)
        return x, y

    tx, ty = draw(per_class)
    vx, vy = draw(test_per_class)
    return ImageDataset(
        name="tiny",
        train_x=tx,
        train_y=ty,
        test_x=vx,
        test_y=vy,
        num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)],
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP spin waits make tiny ops ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def registry():
    return load_plugins()


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    return make_tiny_dataset()


@pytest.fixture
def make_ctx(registry, tmp_path: Path):
    """make_ctx(method_name, dataset=None, ipc=2, **param_overrides) -> (method, RunContext)."""
    from ddbench.api import resolve_params

    def build(method_name: str, dataset: ImageDataset | None = None, ipc: int = 2, seed: int = 0, budget=None, **overrides):
        method = registry.get("methods", method_name)
        params = resolve_params(f"method {method_name}", method.params, overrides)
        ctx = RunContext(
            dataset=dataset or make_tiny_dataset(),
            ipc=ipc,
            seed=seed,
            device=torch.device("cpu"),
            params=params,
            model="convnet",
            registry=registry,
            work_dir=tmp_path / "work",
            cache_dir=tmp_path / "cache",
            budget=budget,
            progress=False,
            log=lambda msg: None,
        )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        return method, ctx

    return build


PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def tiny_plugin_config(tmp_path: Path, monkeypatch) -> Path:
    """A plugins.toml that loads tests/plugins/tiny_plugin.py (the `tiny` dataset), for CLI tests."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin"]\n')
    return cfg

