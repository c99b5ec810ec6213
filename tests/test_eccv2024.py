"""The ECCV 2024 challenge: the protocol's settings against the official evaluate.py, the submission contract
and file format, and the challenge run end to end on tiny files in the real CIFAR-100 / Tiny-ImageNet formats."""
from __future__ import annotations

import pickle
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ddbench import hookimpl
from ddbench.api import DDBenchError, ImageDataset, Method, RunContext, RunFailed, SyntheticSet, resolve_params
from ddbench.default_plugins import datasets as D
from ddbench.default_plugins import eccv2024 as C
from ddbench.host.plugins import load_plugins


class BudgetStub(Method):
    """A 'generative' method for the test: under a budget it returns 12 real images per class (declared)."""

    name = "budget-stub"
    description = "test: 12 real images per class under a budget"
    params = {}
    supports_budget = True

    def distill(self, ctx):
        per = 12 if ctx.budget is not None else ctx.ipc
        ds = ctx.dataset
        idx = torch.cat([ds.indices_of_class(c)[:per] for c in range(ds.num_classes)])
        return SyntheticSet(ds.train_x[idx].clone(), ds.train_y[idx].clone(), ipc=per if ctx.budget else None,
                            generation_seconds=0.01 if ctx.budget else None)


@hookimpl
def _register_stub(register):
    register(BudgetStub())


@pytest.fixture(scope="module")
def registry():
    stub = types.SimpleNamespace(register_methods=_register_stub)
    return load_plugins(modules=["ddbench.default_plugins.eccv2024", "ddbench.default_plugins.crossarch_models"], extra=[("budget-stub", stub)])


def fake_dataset(name: str, k: int, size: int, per_class: int = 1) -> ImageDataset:
    spec = C.challenge_dataset(name)
    y = torch.arange(k).repeat_interleave(per_class)
    x = torch.zeros(len(y), 3, size, size)
    return ImageDataset(name, x, y, x[:1], y[:1], k, [str(i) for i in range(k)], spec.mean, spec.std)


def ctx_for(registry, ds, tmp_path, model="convnet-d3") -> RunContext:
    return RunContext(dataset=ds, ipc=10, seed=0, device=torch.device("cpu"), params={}, model=model, registry=registry,
                      work_dir=tmp_path, cache_dir=tmp_path, progress=False, log=lambda m: None)


# --------------------------------------------------------------------------------------------------
# Settings and contract
# --------------------------------------------------------------------------------------------------


def test_protocol_has_the_official_settings(registry):
    from ddbench.default_plugins.dsa_protocols import lr_decay_epoch

    p = registry.get("protocols", "eccv2024")
    s = resolve_params("protocol eccv2024", p.params)
    assert (s["epochs"], s["n_models"], s["lr"], s["momentum"], s["weight_decay"], s["batch_size"]) == (
        1000, 3, 0.01, 0.9, 0.0005, 256)
    assert s["dsa"] is True and s["dsa_strategy"] == "color_crop_cutout_flip_scale_rotate"
    assert s["use_syn_lr"] is False and s["strict"] is True
    assert lr_decay_epoch(s["epochs"]) == 501  # evaluate.py: lr_schedule = [Epoch//2+1]
    assert all("ECCV2024" in p.params[k].source for k in ("epochs", "n_models", "lr", "strict", "dsa", "dsa_strategy"))
    assert all(v.source and "REFERENCE" not in v.source for v in p.params.values())
    if "zca" in s:
        assert s["zca"] is False


def test_normalisation_is_the_official_one():
    for spec in C.DATASETS:
        assert D.NORMALISATION[spec.name] == (spec.mean, spec.std)
    assert C.challenge_dataset("tinyimagenet").name == "tiny-imagenet"
    with pytest.raises(DDBenchError, match="'cifar10' is not part of the ECCV 2024 challenge; allowed: cifar100, tiny-imagenet"):
        C.challenge_dataset("cifar10")


def test_first_per_class_orders_and_cuts():
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1])
    images = torch.arange(7).float().view(7, 1, 1, 1)
    sub, dropped = C.first_per_class(SyntheticSet(images, labels), 2, ipc=3)
    assert sub.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert sub.images.flatten().tolist() == [1, 3, 5, 0, 2, 4]
    assert dropped == 1
    with pytest.raises(RunFailed, match="needs 4 images of every class; classes with fewer \\(class: count\\): 0: 3"):
        C.first_per_class(SyntheticSet(images, labels), 2, ipc=4)


def test_contract_refuses_what_the_official_script_would(registry, tmp_path):
    ok = fake_dataset("cifar100", 100, 32)
    syn = SyntheticSet(torch.zeros(1000, 3, 32, 32), torch.arange(100).repeat_interleave(10))
    C.check_contract(syn, ok)
    with pytest.raises(DDBenchError, match="has 3 classes .* the challenge's has 100 .*eval.strict=false"):
        C.check_contract(syn, fake_dataset("cifar100", 3, 32))
    with pytest.raises(DDBenchError, match="soft labels"):
        C.check_contract(SyntheticSet(syn.images, torch.ones(1000, 100) / 100), ok)
    tiny = fake_dataset("tiny-imagenet", 200, 64)
    C.check_network(ctx_for(registry, tiny, tmp_path, "convnet-d3"))
    C.check_network(ctx_for(registry, ok, tmp_path, "convnet"))  # depth 3 at 32 px: the same network
    with pytest.raises(DDBenchError, match="--model convnet builds a ConvNet depth 4 here; .*pass --model convnet-d3"):
        C.check_network(ctx_for(registry, tiny, tmp_path, "convnet"))
    with pytest.raises(DDBenchError, match="builds a ResNet18"):
        C.check_network(ctx_for(registry, ok, tmp_path, "resnet18"))


def test_submission_round_trip(tmp_path):
    k = 100
    labels = torch.arange(k).repeat_interleave(11).flip(0)  # class-descending, 11 per class
    images = torch.randn(len(labels), 3, 32, 32)
    path = C.export_submission(SyntheticSet(images, labels), "cifar100", tmp_path)
    assert path.name == "cifar100.pt"
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, torch.Tensor) and raw.shape == (1000, 3, 32, 32)  # what evaluate.py asserts
    back = C.load_submission(path, "cifar100")
    assert back.labels.tolist() == np.repeat(np.arange(k), 10).tolist()  # evaluate.py's implied labels
    first_of_class0 = (labels == 0).nonzero()[0, 0]
    assert torch.equal(back.images[0], images[first_of_class0])
    torch.save(torch.zeros(10, 3, 32, 32), tmp_path / "bad.pt")
    with pytest.raises(DDBenchError, match=r"holds \(10, 3, 32, 32\); a cifar100 submission is one tensor of shape \(1000, 3, 32, 32\)"):
        C.load_submission(tmp_path / "bad.pt", "cifar100")


# --------------------------------------------------------------------------------------------------
# End to end on files in the real formats
# --------------------------------------------------------------------------------------------------


def write_cifar100_balanced(root: Path, per_class: int, test_per_class: int) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), n)
        batch = {"filenames": [f"{i}.png" for i in range(len(labels))], "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist(), "data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}, fh)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    from test_datasets import write_tiny_imagenet

    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "dcache"))
    root = tmp_path / "data"
    write_cifar100_balanced(root, per_class=12, test_per_class=1)
    write_tiny_imagenet(root, wnids=("n01", "n02", "n03", "n04"), per_class=12)
    D.clear_cache()
    yield root
    D.clear_cache()


def test_challenge_end_to_end(registry, data_root, tmp_path, one_thread):
    from ddbench.run.runner import RunRequest
    from ddbench.store.config import load_config

    cfg_path = tmp_path / "plugins.toml"
    cfg_path.write_text("[plugins]\nmodules = []\n")
    config = load_config(str(cfg_path))
    base = RunRequest(method="budget-stub", model="convnet-d3", device="cpu", data_root=str(data_root),
                      out=str(tmp_path / "out"), progress=False,
                      eval_sets={"strict": "false", "epochs": "0", "n_models": "1", "impl": "loop"})
    logs: list[str] = []
    result = C.run_challenge("budget-stub", base, config, registry, log=logs.append)
    assert result.budget == C.BUDGET_SECONDS  # the generative track's 10 minutes, since the method takes a budget
    assert set(result.per_dataset) == {"cifar100", "tiny-imagenet"} and not result.errors
    assert all(0.0 <= v <= 100.0 for v in result.per_dataset.values())
    assert result.score == pytest.approx(sum(result.per_dataset.values()) / 2)
    text = result.text()
    assert "score" in text and "cifar100" in text and "budget 600 s" in text

    from ddbench.store.results import query

    rows = query(tmp_path / "out" / "ddbench.sqlite")
    assert len(rows) == 2
    for r in rows:
        assert r.protocol == "eccv2024" and r.budget == 600.0
        assert r.ipc == 12 and r.config["ipc"] == 10  # the IPC it produced; --ipc 10 as asked
        ev = r.meta["eval"]
        k = 100 if r.dataset == "cifar100" else 4
        assert ev["submitted"] == 10 * k and ev["dropped"] == 2 * k  # 12 generated per class, 10 submitted
        assert ev["n_models"] == 1

    again = C.run_challenge("budget-stub", base, config, registry, log=logs.append)
    assert again.per_dataset == result.per_dataset
    assert sum("reusing run" in m for m in logs) == 2
    assert len(query(tmp_path / "out" / "ddbench.sqlite")) == 2


def test_strict_challenge_refuses_a_partial_copy(registry, data_root, tmp_path, one_thread):
    from ddbench.run.runner import RunRequest, execute, resolve
    from ddbench.store.config import load_config

    cfg_path = tmp_path / "plugins.toml"
    cfg_path.write_text("[plugins]\nmodules = []\n")
    config = load_config(str(cfg_path))
    req = RunRequest(method="random", dataset="tiny-imagenet", ipc=10, protocol="eccv2024", model="convnet-d3",
                     device="cpu", data_root=str(data_root), out=str(tmp_path / "out"), progress=False)
    with pytest.raises(DDBenchError, match="tiny-imagenet has 4 classes"):
        execute(resolve(req, config, registry), registry, log=lambda m: None)


def test_challenge_command(data_root, tmp_path, one_thread, capsys):
    """`ddbench challenge` as the CLI will call it (the parser is added by eccv2024.add_parser)."""
    import json

    from ddbench.cli import build_parser, commands_for

    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["ddbench.default_plugins.eccv2024", "ddbench.default_plugins.crossarch_models"]\n')
    parser = build_parser(commands_for([]))  # `challenge` registers itself like every command
    common = ["--config", str(cfg), "--data-root", str(data_root), "--out", str(tmp_path / "out"), "--device", "cpu",
              "--no-progress", "--set", "eval.strict=false", "--set", "eval.epochs=0", "--set", "eval.n_models=1",
              "--set", "eval.impl=loop"]
    args = parser.parse_args(["challenge", "--method", "random", "--json"] + common)
    assert (args.protocol, args.model) == ("eccv2024", "convnet-d3")
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["budget"] is None  # random takes no budget: track 1
    assert set(out["per_dataset"]) == {"cifar100", "tiny-imagenet"}
    assert out["score"] == pytest.approx(sum(out["per_dataset"].values()) / 2)
    with pytest.raises(DDBenchError, match="drop --dataset"):
        bad = parser.parse_args(["challenge", "--method", "random", "--dataset", "cifar100"] + common)
        bad.handler(bad)
