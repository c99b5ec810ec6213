"""Records say what ran, and a fault names the plugin whose code failed (issue 28 item 4).

Every plugin that took part in a run (the selector a coreset method was told to use, too) is in the run's
`versions` and in the cell key `compare` reuses rows by; a selector's fault is the selector's, a dataset's NaN
pixels the dataset's; a selector's positions must be integers.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.store.results import query
from test_minmax import tiny_arch  # noqa: F401 - autouse: the tiny UNet layout for test_budget_prototypes

HERE = Path(__file__).resolve().parent
FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]

SELECTORS = '''
import sys
import torch
from ddbench import hookimpl
from ddbench.api import DatasetSpec, Sampler, Selector, Throughput


class _PlainSampler(Sampler):  # declares no levers: it would ignore prototypes and strength
    name = "plain-sampler"

    def measure(self, model, num_classes, image_shape, batch_size, guidance=1.0):
        return Throughput(0.01, 0.001, num_classes, batch_size)

    def generate(self, model, request):
        raise NotImplementedError


@hookimpl
def register_samplers(register):
    register(_PlainSampler())


class _Sel(Selector):
    description = "misbehaves (tests)"

    def __init__(self, name, answer):
        self.name, self.answer = name, answer

    def select_class(self, features, k, generator, label, logits=None):
        if self.answer == "exit":
            sys.exit(0)
        if self.answer == "first":
            return torch.arange(k)
        return torch.tensor(self.answer)


def _nan_data(root=None, download=False):
    from conftest import make_tiny_dataset

    ds = make_tiny_dataset(num_classes=3, per_class=12, size=28, test_per_class=6)
    ds.train_x[0, 0, 0, 0] = float("nan")
    return ds


def _liar(root=None, download=False):
    from conftest import make_tiny_dataset

    return make_tiny_dataset(num_classes=3, per_class=12, size=20, test_per_class=6)  # 20 px, the spec says 28


def _hole(root=None, download=False):
    from conftest import make_tiny_dataset

    ds = make_tiny_dataset(num_classes=3, per_class=12, size=28, test_per_class=6)
    keep = ds.train_y != 1  # class 1 has no training image
    ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]
    return ds


@hookimpl
def register_selectors(register):
    register(_Sel("first-k", "first"))
    register(_Sel("exit-sel", "exit"))
    register(_Sel("float-sel", [0.9, 1.9]))
    register(_Sel("nested-sel", [[0], [1]]))


@hookimpl
def register_datasets(register):
    register(DatasetSpec("nan-data", _nan_data, "NaN pixels (tests)", 28, 1, 3))
    register(DatasetSpec("liar-data", _liar, "declares 28 px, loads 20 (tests)", 28, 1, 3))
    register(DatasetSpec("hole-data", _hole, "class 1 has no training image (tests)", 28, 1, 3))
'''


@pytest.fixture
def env(tmp_path, monkeypatch):
    (tmp_path / "third_selectors.py").write_text(SELECTORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(HERE / "plugins"))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin", "third_selectors"]\n')
    out = tmp_path / "out"
    return {"out": out, "db": out / "ddbench.sqlite",
            "base": ["--config", str(cfg), "--out", str(out), "--dataset", "tiny", *FAST]}


def test_the_selector_plugin_is_in_versions_and_in_the_cell_key(env, capsys):
    sweep = ["compare", "--methods", "k-means", "--ipc", "2", "--set", "selector=first-k", "--set", "space=pixels",
             "--no-report", *env["base"]]
    assert main(sweep) == 0
    (row,) = query(env["db"])
    assert row.ok and row.versions.get("plugin:third_selectors") == "plugins.toml", row.versions
    assert "plugin:coreset" in row.versions  # the method's plugin, as before
    assert main(sweep) == 0 and "1 already in" in capsys.readouterr().out
    # A row made by other code of the selector plugin is not reused; nor is a row that does not say (older rows).
    for change in ("0.0.1-older", None):
        with sqlite3.connect(env["db"]) as con:
            versions = json.loads(con.execute("SELECT versions FROM runs ORDER BY created DESC").fetchone()[0])
            if change is None:
                del versions["plugin:third_selectors"]
            else:
                versions["plugin:third_selectors"] = change
            con.execute("UPDATE runs SET versions = ?", (json.dumps(versions),))
        assert main(sweep) == 0
        assert "0 already in" in capsys.readouterr().out


@pytest.mark.parametrize("selector, needle", [
    ("exit-sel", "selector 'exit-sel' (plugin 'third_selectors') called sys.exit(0) in select()"),
    ("float-sel", "returned [0.9, 1.9] (torch.float32) for class 0; it must return 2 distinct integer positions"),
    ("nested-sel", "returned positions of shape (2, 1) for class 0; it must return 2 distinct integer positions"),
])
def test_a_selector_fault_names_the_selector_and_positions_must_be_integers(env, capsys, selector, needle):
    rc = main(["run", "--method", "k-means", "--ipc", "2", "--set", f"selector={selector}", "--set", "space=pixels",
               *env["base"]])
    assert rc == 1
    (row,) = query(env["db"])
    assert row.status == "failed" and needle in row.error, row.error
    assert row.error_line.startswith(f"PluginExit: selector {selector!r} (plugin 'third_selectors')"
                                     if selector == "exit-sel" else
                                     f"PluginCrashed: selector {selector!r} (plugin 'third_selectors')"), row.error_line
    assert "method 'k-means'" not in row.error_line


def test_nan_pixels_from_a_dataset_are_the_dataset_plugins_fault(env, capsys):
    base = [a if a != "tiny" else "nan-data" for a in env["base"]]
    assert main(["run", "--method", "random", "--ipc", "1", *base]) == 1
    err = capsys.readouterr().err
    assert "dataset 'nan-data' (plugin 'third_selectors')" in err and "NaN" in err, err
    assert "method 'random'" not in err


@pytest.mark.parametrize("dataset, needle", [
    ("liar-data", "image_size=20, its DatasetSpec declares image_size=28"),
    ("hole-data", "no training image of class 1 (c1)"),
])
def test_a_dataset_that_contradicts_its_spec_or_lacks_a_class_is_the_dataset_plugins_fault(env, capsys, dataset, needle):
    base = [a if a != "tiny" else dataset for a in env["base"]]
    assert main(["run", "--method", "random", "--ipc", "1", *base]) == 1
    err = capsys.readouterr().err
    assert f"dataset {dataset!r} (plugin 'third_selectors')" in err and needle in err, err
    assert "--ipc" not in err and "method 'random'" not in err


def test_shipped_table_rows_are_validated_like_database_rows_and_warned_about_once(tmp_path, capsys):
    import hashlib

    from ddbench.store import shipped

    table = json.loads(shipped.table_path("fashion-mnist").read_text())
    good, bad, odd = (dict(r) for r in table["rows"][:3])
    bad["accuracies"] = ["abc", 70.0, 71.0]  # crashed `report` with a traceback
    odd["accuracy_mean"] = 250.0  # not a percentage: skipped as a database row would be
    path = tmp_path / "fashion-mnist.json"
    path.write_text(json.dumps({**table, "rows": [good, bad, odd]}))
    (tmp_path / "fashion-mnist.json.sha256").write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  fashion-mnist.json\n")  # re-hashed: the check passes
    for _ in range(3):  # report, scores and reference each read it: one warning per problem, not one per read
        rows = shipped.shipped_records("fashion-mnist", tmp_path)
        assert [r.run_id for r in rows] == [f"shipped:{good['config_hash']}"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert f"row {bad['config_hash']}" in err[0] and "'abc'" in err[0] and "skipped" in err[0]
    assert f"row {odd['config_hash']}" in err[1] and "accuracy_mean=250.0" in err[1]


def test_a_lever_the_sampler_does_not_declare_is_refused_before_any_work(env, capsys):
    from ddbench_minmax.sampler import LEVERS_OFF, DSRSampler

    rc = main(["run", "--method", "minmax-diffusion", "--ipc", "1", "--no-eval", "--set", "sampler=plain-sampler",
               "--set", "prototypes=kmeans", "--set", "strength=0.7", *env["base"]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "sampler 'plain-sampler' (plugin 'third_selectors') does not honour prototypes=kmeans, strength=0.7" in err
    assert not env["out"].exists()
    assert set(LEVERS_OFF) <= set(DSRSampler.params)  # the bundled sampler honours every lever


def test_budget_prototypes_are_capped_so_the_set_up_before_the_clock_is_bounded(make_ctx, monkeypatch):
    import torch

    from ddbench.api import Decision, SampleResult, Throughput
    from ddbench_minmax import sampling
    from test_minmax import SIZE, TINY, tiny_ds, tiny_model

    ks, logs, shapes = [], [], []
    real = sampling.class_prototypes
    monkeypatch.setattr(sampling, "class_prototypes", lambda x, y, n, k, seed: ks.append(k) or real(x, y, n, k, seed))

    class Recorder:
        name, params = "recorder", {}

        def generate(self, model, request):
            shapes.append(tuple(request.inputs["prototypes"].shape[:2]))
            return SampleResult(torch.zeros(3, 1, SIZE, SIZE), torch.arange(3))

    _, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), budget=5.0,
                      **{**TINY, "prototypes": "kmeans", "strength": 0.7})
    ctx.log = logs.append
    decision = Decision("max-images", 3, "budget", 5000, "a budget that plans 5000 images per class")
    sampling.sample_set(ctx, Recorder(), tiny_model(), decision, Throughput(0.01, 0.001, 3, 12))
    assert ks == [8] and shapes == [(3, 8)]  # the smallest class (8 images), not 5000 k-means centroids
    assert any("capped" in line and "not the 5000" in line for line in logs), logs
    assert sampling.BUDGET_PROTOTYPES == 50


def test_a_sampler_fault_names_the_sampler_not_the_method(make_ctx, monkeypatch):
    from ddbench.api import Decision, Throughput
    from ddbench.host.guard import PluginCrashed
    from ddbench_minmax.sampling import sample_set
    from test_minmax import TINY, tiny_ds, tiny_model

    class Broken:
        name, params = "broken-sampler", {}

        def generate(self, model, request):
            raise ValueError("a bug in the sampler")

    _, ctx = make_ctx("minmax-diffusion", dataset=tiny_ds(), sampler="broken-sampler", **TINY)
    monkeypatch.setitem(ctx.registry.items["samplers"], "broken-sampler", Broken())
    monkeypatch.setitem(ctx.registry.owners["samplers"], "broken-sampler", "third")
    decision = Decision("fixed-steps", 3, "ipc", 2, "fixed")
    with pytest.raises(PluginCrashed, match=r"sampler 'broken-sampler' \(plugin 'third'\) crashed in generate\(\): "
                                            "ValueError: a bug in the sampler"):
        sample_set(ctx, Broken(), tiny_model(), decision, Throughput(0.01, 0.001, 3, 12))
