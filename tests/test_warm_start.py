"""Warm starts of the matching baselines (init=PATH, init=run:RUN_ID): every bad set refused in one line before any
work, provenance recorded, and a run from a stored set starts from exactly its images."""
from __future__ import annotations

import json
import pickle
import sqlite3

import pytest
import torch

from conftest import make_tiny_dataset
from ddbench.api import DDBenchError, SyntheticSet
from ddbench.cli import main
from ddbench.store.identity import file_sha256
from ddbench.store.synsets import save_synset

pytestmark = pytest.mark.usefixtures("one_thread")

MTT_TINY = dict(num_experts=1, train_epochs=2, expert_batch=10, expert_epochs=1, max_start_epoch=1, syn_steps=2,
                dsa_strategy="none", iterations=0)


def _stored(path, ds=None, ipc=2, num_classes=None, size=None, labels=None, **extra):
    """A synset.pt as the runner writes it: class-interleaved labels (as a generated set), on `ds`."""
    ds = ds or make_tiny_dataset()
    k = num_classes or ds.num_classes
    s = size or ds.image_size
    y = torch.arange(k).repeat(ipc) if labels is None else labels
    x = torch.randn(len(y), ds.channels, s, s, generator=torch.Generator().manual_seed(7))
    save_synset(SyntheticSet(x, y), path, dataset={"name": ds.name, "mean": ds.mean, "std": ds.std,
                                                   "class_names": ds.class_names}, **extra)
    return x, y


def _refused(make_ctx, method, value, key="init", **kw):
    """The one-line DDBenchError the value gets, at resolve time or in validate (both before any work)."""
    with pytest.raises(DDBenchError) as err:
        m, ctx = make_ctx(method, **{key: value}, **kw)
        m.validate(ctx)
    msg = str(err.value)
    assert "\n" not in msg and f"{key}=" in msg
    return msg


def test_dm_from_a_stored_set_starts_from_exactly_its_images(make_ctx, tmp_path):
    path = tmp_path / "synset.pt"
    x, y = _stored(path)
    method, ctx = make_ctx("dm", ipc=2, init=str(path), iterations=0)
    method.validate(ctx)
    syn = method.distill(ctx)
    order = torch.argsort(y, stable=True)  # the set comes back class-major, as DM lays its images out
    assert torch.equal(syn.images, x[order]) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    prov = syn.meta["init_provenance"]
    assert prov["init"] == str(path) and prov["path"] == str(path.absolute())
    assert prov["sha256"] == file_sha256(path) and len(prov["sha256"]) == 64
    # and iterations move them, from there
    method, ctx = make_ctx("dm", ipc=2, init=str(path), iterations=2, batch_real=6)
    moved = method.distill(ctx)
    assert not torch.equal(moved.images, x[order]) and moved.meta["init_provenance"]["sha256"] == prov["sha256"]


def test_a_changed_file_at_the_same_path_does_not_resume_the_old_checkpoint(make_ctx, tmp_path):
    path = tmp_path / "synset.pt"
    _stored(path)
    method, ctx = make_ctx("dm", ipc=2, init=str(path))
    before = method._fingerprint(ctx, file_sha256(path))
    _stored(path, labels=torch.tensor([2, 1, 0, 0, 1, 2]))
    assert method._fingerprint(ctx, file_sha256(path)) != before
    _, real = make_ctx("dm", ipc=2)
    assert method._fingerprint(real) == method._fingerprint(real, None)  # real/noise checkpoints keep their key


def test_mtt_pix_init_from_a_stored_set(make_ctx, tmp_path):
    path = tmp_path / "synset.pt"
    x, y = _stored(path, ipc=1)
    method, ctx = make_ctx("mtt", ipc=1, pix_init=str(path), **MTT_TINY)
    method.validate(ctx)
    syn = method.distill(ctx)
    assert torch.equal(syn.images, x[torch.argsort(y, stable=True)])
    assert syn.meta["init_provenance"]["sha256"] == file_sha256(path)


@pytest.mark.parametrize("case,message", [
    ("shape", "images of shape (1, 32, 32); the dataset tiny has (1, 28, 28)"),
    ("classes", "labels 0..3; the dataset tiny has classes 0..2"),
    ("fewer-classes", "images per class [2, 2, 0]; this run's --ipc is 2"),
    ("ipc", "images per class [3, 3, 3]; this run's --ipc is 2"),
    ("dataset", "a set made on dataset 'other'; this run is on 'tiny'"),
    ("soft", "a warm start needs one integer class per image"),
    ("nan", "NaN or infinite pixels"),
])
def test_a_stored_set_that_does_not_fit_the_run_is_refused(make_ctx, tmp_path, case, message):
    path = tmp_path / "synset.pt"
    if case == "shape":
        _stored(path, size=32)
    elif case == "classes":
        _stored(path, num_classes=4)
    elif case == "fewer-classes":
        _stored(path, num_classes=2)
    elif case == "ipc":
        _stored(path, ipc=3)
    elif case == "dataset":
        ds = make_tiny_dataset()
        ds.name = "other"
        _stored(path, ds=ds)
    elif case == "soft":
        _stored(path, labels=torch.eye(3).repeat(2, 1))
    else:
        x, y = _stored(path)
        x[0, 0, 0, 0] = float("nan")
        save_synset(SyntheticSet(x, y), path)
    for method, key, extra in (("dm", "init", {}), ("mtt", "pix_init", MTT_TINY)):
        msg = _refused(make_ctx, method, str(path), key=key, ipc=2, **extra)
        assert message in msg and str(path) in msg


def test_missing_unreadable_and_foreign_files_are_refused(make_ctx, tmp_path):
    assert "no such file" in _refused(make_ctx, "dm", str(tmp_path / "nope.pt"))
    assert "no such file" in _refused(make_ctx, "dm", "zeros")  # a typo of real/noise reads as a path
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    assert "is not a readable synthetic set" in _refused(make_ctx, "dm", str(junk))
    plain = tmp_path / "plain.pt"
    torch.save(torch.zeros(3), plain)
    assert "holds no synthetic set" in _refused(make_ctx, "dm", str(plain))
    assert "names no run" in _refused(make_ctx, "dm", "run:")
    assert "is not allowed" in _refused(make_ctx, "dm", "")


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/ddbench-warm-start-was-unpickled", "w"))


def test_a_file_holding_arbitrary_objects_is_not_unpickled(make_ctx, tmp_path):
    import os

    marker = "/tmp/ddbench-warm-start-was-unpickled"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"images": _Exploit(), "labels": torch.zeros(6)}, f)
    assert f"{evil}: refused to load, it holds io.open" in _refused(make_ctx, "dm", str(evil))  # ddbench.core.safeload
    assert not os.path.exists(marker)


def test_an_unknown_or_unusable_run_id_is_refused(make_ctx, tmp_path):
    from ddbench.core.records import RunRecord
    from ddbench.store.results import record

    msg = _refused(make_ctx, "dm", "run:20990101-000000-abcdef")  # the context has no database
    assert "needs a results database" in msg
    db = tmp_path / "ddbench.sqlite"
    method, ctx = make_ctx("dm", init="run:20990101-000000-abcdef")
    ctx.results_db = db
    with pytest.raises(DDBenchError, match=r"no run '20990101-000000-abcdef' in .*ddbench.sqlite; give a run id"):
        method.validate(ctx)
    failed = RunRecord.start({"method": "dm", "dataset": "tiny", "ipc": 2, "seed": 0}, "h")
    record(db, failed)
    method, ctx = make_ctx("dm", init=f"run:{failed.run_id}")
    ctx.results_db = db
    with pytest.raises(DDBenchError, match="ended 'failed' and left no synthetic set"):
        method.validate(ctx)


FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


def test_run_id_warm_start_end_to_end_and_bad_values_exit_2_writing_nothing(tmp_path, tiny_plugin_config, capsys):
    """From the command line: a bad init exits 2 in one line and leaves nothing; init=run:ID starts DM from that
    run's set and records its provenance."""
    out = tmp_path / "out"
    base = ["--config", str(tiny_plugin_config), "--out", str(out), "--dataset", "tiny", *FAST]
    for bad, message in ((f"init=run:nope", "no run 'nope' in"), (f"init={tmp_path / 'missing.pt'}", "no such file")):
        assert main(["run", "--method", "dm", "--ipc", "1", "--set", bad, *base]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    assert main(["run", "--method", "random", "--ipc", "1", "--json", *base]) == 0
    first = json.loads(capsys.readouterr().out)
    # the wrong IPC for that run's set, refused before any work: the database keeps one row
    assert main(["run", "--method", "dm", "--ipc", "2", "--set", f"init=run:{first['run_id']}", *base]) == 2
    assert "this run's --ipc is 2" in capsys.readouterr().err
    assert main(["run", "--method", "dm", "--ipc", "1", "--json", "--set", f"init=run:{first['run_id']}",
                 "--set", "iterations=0", *base]) == 0
    second = json.loads(capsys.readouterr().out)
    with sqlite3.connect(out / "ddbench.sqlite") as con:
        meta = json.loads(con.execute("SELECT meta FROM runs WHERE run_id = ?", (second["run_id"],)).fetchone()[0])
    prov = meta["init_provenance"]
    assert prov["run_id"] == first["run_id"] and prov["method"] == "random"
    assert prov["sha256"] == file_sha256(first["artifact"]) and prov["path"] == first["artifact"]
    start = torch.load(first["artifact"], weights_only=True)
    got = torch.load(second["artifact"], weights_only=True)
    assert torch.equal(got["images"], start["images"])
