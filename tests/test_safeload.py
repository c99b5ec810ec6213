"""No `.pt` ddbench reads can run code: a pickle that writes a marker file when unpickled is planted where each
loader reads, and the marker must never appear; the file is refused in one line (user input) or deleted and
rebuilt with a log line (caches). Old files the project wrote still load."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ddbench.cli import main
from ddbench.core.errors import DDBenchError
from ddbench.core.safeload import UnsafeFile, load_tensors

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


class Marker:
    """Unpickling this calls open(marker, 'w'): the file appearing is code having run at load time."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path, **fields) -> Path:
    """A .pt shaped like the real file (an `images` tensor and the usual keys) with a Marker inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": torch.zeros(2, 1, 28, 28), "labels": torch.tensor([0, 1]), "distill_seconds": 1.0,
                **fields, "meta": {"x": Marker(marker)}}, path)
    return path


def test_a_marker_pickle_is_refused_in_one_line_naming_the_file_and_what_it_holds(tmp_path):
    marker = tmp_path / "MARKER"
    path = plant(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeFile) as info:
        load_tensors(path)
    message = str(info.value)
    assert not marker.exists()
    assert isinstance(info.value, DDBenchError) and "\n" not in message  # exit 2, one line, at the CLI
    assert str(path) in message and re.search(r"holds \S*open", message), message


def test_a_set_written_the_old_way_still_loads(tmp_path):
    # save_synset before safeload: torch.save of the same dict, a method's meta holding numpy scalars as they came.
    from ddbench.store.synsets import load_synset

    path = tmp_path / "synset.pt"
    torch.save({"images": torch.ones(3, 1, 4, 4), "labels": torch.tensor([0, 1, 2]), "lr": 0.01, "ipc": 1,
                "generation_seconds": None, "meta": {"fd": np.float64(101.5), "n": np.int64(3), "nested": [1.5, "a"]},
                "config": {"method": "dm", "protocol_settings": {"epochs": 300}}, "distill_seconds": 2.0,
                "dataset": {"name": "tiny", "mean": (0.0,), "std": (1.0,), "class_names": ["a", "b", "c"]}}, path)
    syn, saved = load_synset(path)
    assert syn.images.shape == (3, 1, 4, 4) and syn.lr == 0.01 and float(syn.meta["fd"]) == 101.5
    assert saved["dataset"]["mean"] == (0.0,) and saved["distill_seconds"] == 2.0


def test_save_synset_writes_plain_data_only(tmp_path):
    # New files: a method's meta is stored as plain data, so what ddbench writes never needs the allow-list.
    from ddbench.api import SyntheticSet
    from ddbench.core.safeload import unsafe_globals
    from ddbench.store.synsets import load_synset, save_synset

    path = tmp_path / "s.pt"
    syn = SyntheticSet(torch.ones(2, 1, 4, 4), torch.tensor([0, 1]), meta={"a": np.float32(0.5), "p": Path("/x"),
                                                                          "arr": np.arange(2)})
    save_synset(syn, path, config={"seed": 0})
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == [] and unsafe_globals(path) == []
    back, _ = load_synset(path)
    assert back.meta == {"a": 0.5, "p": "/x", "arr": [0, 1]}


def test_every_pt_load_goes_through_the_one_helper():
    # One helper per job: no loader of the project calls torch.load itself, let alone with weights_only=False.
    offenders = []
    for folder in ("ddbench", "ddbench_minmax", "baselines", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "safeload.py":
                continue
            text = path.read_text()
            if "torch.load(" in text or "weights_only=False" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# ---- the run's own files: the resumable leftover and the set cache ----------------------------------------


@pytest.fixture
def env(tmp_path, tiny_plugin_config):
    out = tmp_path / "out"
    return {"out": out, "args": ["run", "--method", "random", "--ipc", "1", *FAST, "--config", str(tiny_plugin_config),
                                 "--out", str(out), "--dataset", "tiny"]}


def test_a_planted_leftover_set_is_deleted_unread_and_the_set_distilled_again(env, tmp_path, capsys):
    assert main(env["args"]) == 0
    (work,) = (env["out"] / "work").iterdir()
    marker = tmp_path / "MARKER"
    leftover = plant(work / "distilled.pt", marker)
    capsys.readouterr()
    assert main(env["args"]) == 0
    out = capsys.readouterr().out
    assert not marker.exists()
    assert f"{leftover}: refused to load" in out and "deleted it, distilling again" in out
    assert "resuming" not in out


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_the_set_cache_cannot_load_a_planted_set_nor_point_outside_the_results_folder(env, tmp_path, capsys, where):
    assert main(env["args"]) == 0
    (pointer,) = (env["out"] / "cache" / "sets").glob("*.json")
    marker = tmp_path / "MARKER"
    evil = plant((tmp_path if where == "outside" else env["out"] / "runs" / "x") / "synset.pt", marker)
    entry = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**entry, "config_hash": "another", "artifact": str(evil)}))
    capsys.readouterr()
    assert main(env["args"]) == 0
    out = capsys.readouterr().out
    assert not marker.exists()
    assert "reusing the set" not in out
    if where == "outside":
        assert f"points at {evil}, outside the results folder" in out
    else:
        assert f"{evil}: refused to load" in out and "deleted the cache entry" in out


# ---- caches of the helpers and plugins ------------------------------------------------------------------


def test_the_reference_classifier_cache_is_deleted_unread_and_retrained(tmp_path, tiny_dataset):
    from ddbench.default_plugins.convnet_models import ConvNet
    from ddbench.host.classifier import reference_classifier

    marker, logs = tmp_path / "MARKER", []
    cached = plant(tmp_path / "cache" / "reference-classifier" / "tiny-abc.pt", marker)
    clf = reference_classifier(tiny_dataset, lambda: ConvNet(1, 3, 28, width=8, depth=1), tmp_path / "cache", "abc",
                               log=logs.append, progress=False)
    assert not marker.exists() and clf.net is not None
    assert any(f"{cached}: refused to load" in m and "deleted it" in m for m in logs), logs
    assert load_tensors(cached)["data"] == "abc"  # rebuilt, plain again


def test_a_generator_checkpoint_is_deleted_unread(tmp_path):
    from ddbench_minmax.cache import DenoiserCache
    from ddbench_minmax.train import Phase

    marker, logs = tmp_path / "MARKER", []
    path = plant(tmp_path / "checkpoint.pt", marker)
    assert Phase.resume(object(), path, logs.append) is False  # refused before the phase is touched
    assert not path.exists() and not marker.exists() and "refused to load" in logs[0]
    cache = DenoiserCache(tmp_path / "gen")
    plant(cache.checkpoint_path, marker)
    assert cache.load_checkpoint() is None and not cache.checkpoint_path.exists() and not marker.exists()


def test_zca_mtt_buffer_and_submission_loaders_refuse_it(tmp_path, tiny_dataset, capsys):
    from ddbench_baselines._common import try_load
    from ddbench.default_plugins.eccv2024 import load_submission
    from ddbench.host.zca import _cache_key, fit_zca

    marker = tmp_path / "MARKER"
    zca_file = plant(tmp_path / "cache" / "zca" / f"tiny-{_cache_key(tiny_dataset, 0.1)}.pt", marker)
    fit_zca(tiny_dataset, 0.1, tmp_path / "cache")
    assert f"{zca_file}: refused to load" in capsys.readouterr().err
    state, why = try_load(plant(tmp_path / "expert_0.pt", marker), mmap=True)
    assert state is None and "refused to load" in why
    with pytest.raises(UnsafeFile, match="refused to load"):
        load_submission(plant(tmp_path / "cifar100.pt", marker), "cifar100")
    assert not marker.exists()


def test_feature_and_prototype_caches_are_deleted_unread_and_recomputed(make_ctx, tmp_path):
    from dataclasses import replace

    from ddbench.host.features import training_features
    from ddbench_minmax.sampling import load_prototypes

    marker, logs = tmp_path / "MARKER", []
    _, ctx = make_ctx("minmax-diffusion", prototypes="kmeans")
    ctx = replace(ctx, log=logs.append)
    first = training_features(ctx, "random-convnet")
    protos = load_prototypes(ctx, 1)
    for cache, again in ((next((ctx.cache_dir / "features").glob("*.pt")), lambda: training_features(ctx, "random-convnet")),
                         (next((ctx.cache_dir / "minmax-diffusion" / "prototypes").glob("*.pt")),
                          lambda: load_prototypes(ctx, 1))):
        torch.save(Marker(marker), cache)
        logs.clear()
        result = again()
        assert not marker.exists() and any(f"{cache}: refused to load" in m and "deleted it" in m for m in logs), logs
        assert torch.equal(result, first if "features" in str(cache) else protos)  # recomputed alike


def test_a_warm_start_from_a_planted_set_exits_2_in_one_line_writing_nothing(tmp_path, tiny_plugin_config, capsys):
    marker, out = tmp_path / "MARKER", tmp_path / "out"
    evil = plant(tmp_path / "shared" / "synset.pt", marker)
    rc = main(["run", "--method", "dm", "--ipc", "1", "--set", f"init={evil}", *FAST, "--config", str(tiny_plugin_config),
               "--out", str(out), "--dataset", "tiny"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"{evil}: refused to load, it holds" in err, err
    assert not marker.exists() and not out.exists()
