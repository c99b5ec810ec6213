"""Issue 28 item 5: exit 2 leaves no folder behind, a full disk says so, `--reference` never compares a run with
itself, a minmax selector name is checked at pool=1, and the SLURM test daemons hold no inherited descriptor."""
from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from ddbench.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "plugins"))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin"]\n')
    return {"out": tmp_path / "out", "base": ["--config", str(cfg), "--out", str(tmp_path / "out"), "--dataset", "tiny",
                                             *FAST]}


def test_compare_refused_by_its_database_leaves_no_report_folder(env, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")  # --db under a file: refused when the store is opened, after the report check
    assert main(["compare", "--methods", "random", "--ipc", "1", "--db", str(tmp_path / "afile" / "db.sqlite"),
                 *env["base"]]) == 2
    assert "cannot create its folder" in capsys.readouterr().err
    assert not (env["out"] / "report").exists() and not env["out"].exists()


def test_a_failed_download_leaves_no_empty_folder(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    from ddbench.default_plugins import datasets

    class Offline:  # what torchvision does offline: make its layout, then fail to fetch
        def __init__(self, root, train=True, download=False):
            (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3]>")

    monkeypatch.setattr(tvd, "FashionMNIST", Offline)
    root = tmp_path / "dlroot"
    with pytest.raises(datasets.DDBenchError, match="downloading fashion-mnist into .* failed"):
        datasets._torchvision_download("fashion-mnist", "FashionMNIST", root)
    assert not root.exists()
    kept = tmp_path / "data"
    (kept / "mine").mkdir(parents=True)  # an existing data root keeps what it had
    with pytest.raises(datasets.DDBenchError):
        datasets._torchvision_download("fashion-mnist", "FashionMNIST", kept)
    assert sorted(p.name for p in kept.iterdir()) == ["mine"]


def test_a_full_disk_is_said_in_words_naming_the_file(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import torch

    from ddbench.core.atomic import DiskFull, atomic_save

    def full(obj, path):
        Path(path).write_bytes(b"x")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 4096))
    target = tmp_path / "runs" / "synset.pt"
    with pytest.raises(DiskFull, match=r"no space left on device writing .*synset.pt \(0.0 MiB free"):
        atomic_save({"x": 1}, target)
    assert list(target.parent.iterdir()) == []  # no temporary file left
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 10**12))
    with pytest.raises(RuntimeError, match="inline_container"):  # plenty of space: torch's own error, unchanged
        atomic_save({"x": 1}, target)


def test_reference_of_the_same_method_never_compares_the_run_with_itself(env, capsys):
    argv = ["run", "--method", "random", "--ipc", "1", "--reference", "random", *env["base"]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no run at IPC 1 under this evaluation" in out, out  # the only run of random is this one
    assert main([*argv, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 run(s) in" in out and "seeds 0," in out, out  # the other run, not itself


def test_a_minmax_selector_name_is_checked_at_pool_1(env, capsys):
    rc = main(["run", "--method", "minmax-diffusion", "--ipc", "1", "--no-eval", "--set", "selector=nosuch", *env["base"]])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown selector 'nosuch'" in err, err


def test_slurm_setup_starts_its_daemons_without_inherited_descriptors(tmp_path):
    script = (ROOT / ".ci" / "slurm-setup.sh").read_text()
    for daemon in ("runuser -u munge -- munged", "slurmctld -i", "slurmd &&"):
        line = next(l for l in script.splitlines() if daemon in l and not l.lstrip().startswith("#"))
        assert "detached " in line, line
    # The helper itself: a daemon started under a held flock does not keep the lock.
    helper = script[script.index("detached() {"):script.index("}\n", script.index("detached() {")) + 2]
    lock = tmp_path / "lock"
    test = (f"{helper}\nexec 9>{lock}\nflock 9\n"
            "detached bash -c 'sleep 5 & disown; exit 0'\n")
    subprocess.run(["bash", "-c", test], check=True, timeout=30)
    free = subprocess.run(["flock", "-n", str(lock), "true"], timeout=10)
    assert free.returncode == 0  # the backgrounded `sleep` did not inherit descriptor 9


def test_a_bad_value_in_a_config_file_names_the_file_in_run(env, tmp_path, capsys):
    cfg = tmp_path / "v.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin"]\n[protocols.fast]\nepochs = -3\n')
    argv = ["run", "--method", "random", "--ipc", "1", "--protocol", "fast", "--no-progress", "--dataset", "tiny",
            "--config", str(cfg), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "epochs=-3 is below the minimum 0" in err and f"(from {cfg}" in err and "[protocols.fast]" in err, err
