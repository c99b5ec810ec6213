"""Coreset baselines (baselines/coreset.py: herding, k-center, k-means) and a third-party selector written from
docs/plugins.md alone, listed and used through `--set selector=NAME`."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddbench.api import DDBenchError
from ddbench.core.safeload import load_tensors

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("method", ["herding", "k-center", "k-means"])
def test_a_coreset_method_returns_ipc_real_images_per_class(make_ctx, method, one_thread):
    m, ctx = make_ctx(method, ipc=3, space="pixels")
    m.validate(ctx)
    syn = m.distill(ctx)
    ds = ctx.dataset
    idx = torch.tensor(syn.meta["indices"])
    assert syn.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(syn.images, ds.train_x[idx]) and torch.equal(syn.labels, ds.train_y[idx])
    assert syn.meta["selector"] == method and syn.meta["space"] == "pixels"


def test_herding_method_follows_its_selector(make_ctx, registry, one_thread):
    m, ctx = make_ctx("herding", ipc=2, space="pixels")
    syn = m.distill(ctx)
    ds = ctx.dataset
    want = registry.get("selectors", "herding").select(ds.train_x.flatten(1).double(), ds.train_y, 2, 0)
    assert syn.meta["indices"] == want.tolist()


def test_selector_and_space_are_settings(make_ctx, one_thread):
    m, ctx = make_ctx("k-means", ipc=2, space="pixels", selector="random")
    assert m.distill(ctx).meta["selector"] == "random"
    m, ctx = make_ctx("k-means", ipc=2, selector="nope")
    with pytest.raises(DDBenchError, match="unknown selector 'nope'"):
        m.validate(ctx)
    with pytest.raises(DDBenchError, match="space='nope' is not allowed"):
        make_ctx("k-means", space="nope")
    m, ctx = make_ctx("herding", ipc=21)
    with pytest.raises(DDBenchError, match="--ipc 21 is larger than the 20 real training images"):
        m.validate(ctx)


def _guide_selector() -> str:
    """The example selector of docs/plugins.md, as a user would copy it."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = re.split(r"\n#{2,3} ", text.split("### `register_selectors(register)`", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_a_third_party_selector_from_the_guide_is_listed_and_used(tmp_path):
    (tmp_path / "my_selector.py").write_text(_guide_selector())
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin", "my_selector"]\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "plugins"), str(ROOT / "tests")]))
    exe = shutil.which("ddbench", path=str(Path(sys.executable).parent)) or "ddbench"
    listed = subprocess.run([exe, "list", "--config", str(cfg)], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    selectors = listed.stdout.split("selectors:", 1)[1]
    assert re.search(r"farthest-from-mean\s+\[my_selector\]", selectors)
    ran = subprocess.run(
        [exe, "run", "--method", "k-means", "--ipc", "2", "--dataset", "tiny", "--config", str(cfg), "--set",
         "selector=farthest-from-mean", "--set", "space=pixels", "--no-eval", "--out", str(tmp_path / "out"), "--json",
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and result["images"] == 6
    syn = load_tensors(result["artifact"])  # a set file reads as tensors and plain containers
    assert syn["meta"]["selector"] == "farthest-from-mean"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_tiny_dataset

    ds = make_tiny_dataset(num_classes=3, per_class=12, size=28, test_per_class=6)  # tiny_plugin's data
    for c in range(3):
        idx = (ds.train_y == c).nonzero(as_tuple=True)[0]
        x = ds.train_x[idx].flatten(1).double()
        want = idx[torch.argsort(-(x - x.mean(0)).norm(dim=1), stable=True)[:2]]
        assert syn["meta"]["indices"][2 * c:2 * c + 2] == want.tolist()
