"""Launcher plugins: registration, settings, a third-party launcher, the local pool, submitit's local
executor, and a SLURM that does not answer."""
from __future__ import annotations

import os
import sys
import time

import pytest

from ddbench.api import DDBenchError, resolve_params
from ddbench.cli import main
from ddbench.launchers import Job, LocalLauncher, SlurmLauncher, run_job
from ddbench.plugins import load_plugins
from ddbench.results import query

from sweep_plugin import subprocess_env, write_config

TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


def _compare(tmp_path, *argv):
    config = write_config(tmp_path)
    return main(["compare", "--config", config, "--out", str(tmp_path / "out"), *TINY, *argv])


def _job(tmp_path, **changes):
    from ddbench.config import load_config
    from ddbench.runner import RunRequest, registry_for, resolve

    config_path = write_config(tmp_path)
    config = load_config(config_path)
    fields = {"method": "random", "dataset": "tiny", "protocol": "tiny-eval", "ipc": 1, "out": str(tmp_path / "out"),
              "progress": False, **changes}
    request = RunRequest(**fields)
    resolved = resolve(request, config, registry_for(config))
    return Job(0, request, config_path, resolved.config_hash, resolved.config())


def test_built_in_launchers_are_plugins():
    registry = load_plugins()
    assert {"local", "slurm"} <= set(registry.names("launchers"))
    assert registry.owners["launchers"]["local"] == "launchers"  # the entry point in pyproject.toml


def test_a_third_party_launcher_runs_the_sweep(tmp_path):
    assert _compare(tmp_path, "--methods", "random", "--ipc", "1,2", "--launcher", "reverse",
                    "--launcher-set", "tag=mine", "--no-report") == 0
    rows = query(tmp_path / "out" / "ddbench.sqlite")
    assert [r.ipc for r in rows] == [2, 1]  # it ran them last first
    assert all(r.meta["launcher"] == "mine" for r in rows)


def test_worker_rows_are_not_written_by_the_worker(tmp_path):
    row = run_job(_job(tmp_path))
    assert row.status == "ok" and row.accuracies
    assert not (tmp_path / "out" / "ddbench.sqlite").exists()
    assert row.meta["worker"]["pid"] == os.getpid()


def test_a_worker_that_resolves_another_hash_fails_the_cell(tmp_path):
    job = _job(tmp_path)
    wrong = Job(0, job.request, job.config_path, "0" * 16, job.config)
    row = run_job(wrong)
    assert row.status == "failed" and "config hash mismatch" in row.error


def test_a_bad_cell_detected_on_the_worker_is_a_failed_cell(tmp_path):
    row = run_job(_job(tmp_path, ipc=500))  # more than the tiny dataset has per class: method.validate says so
    assert row.status == "failed" and row.error.startswith("bad input:") and "--ipc 500" in row.error


def test_local_settings_are_checked():
    launcher = LocalLauncher()
    with pytest.raises(DDBenchError, match="gpus='zero'"):
        launcher.check(resolve_params("launcher local", launcher.params, {"gpus": "zero"}), 2)
    assert launcher._gpus(resolve_params("launcher local", launcher.params, {"gpus": "1,3"})) == ["1", "3"]
    assert launcher._gpus(resolve_params("launcher local", launcher.params, {"gpus": "none"})) == []


def test_pool_workers_take_one_slot_and_gpu_each(monkeypatch):
    import queue

    from ddbench import launchers

    slots = queue.Queue()
    slots.put(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("DDBENCH_WORKER_SLOT", "")
    threads = __import__("torch").get_num_threads()
    try:
        launchers._pool_init(slots, ["0", "1"], threads)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ["DDBENCH_WORKER_SLOT"] == "3"
    finally:
        __import__("torch").set_num_threads(threads)


def test_local_pool_of_two_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # spawned workers import the test plugin
    assert _compare(tmp_path, "--methods", "random,boom", "--ipc", "1", "--jobs", "2", "--no-report") == 1
    rows = query(tmp_path / "out" / "ddbench.sqlite")
    assert sorted(r.status for r in rows) == ["failed", "ok"]
    workers = {r.meta["worker"]["pid"] for r in rows}
    assert os.getpid() not in workers


def test_submitit_local_executor(tmp_path, monkeypatch, capsys):
    """The slurm launcher's code path (submitit executor, result files, polling) without SLURM."""
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    assert _compare(tmp_path, "--methods", "random", "--ipc", "1,2", "--launcher", "slurm", "--jobs", "2",
                    "--launcher-set", "cluster=local", "--launcher-set", "poll_seconds=0.2", "--no-report") == 0
    rows = query(tmp_path / "out" / "ddbench.sqlite")
    assert sorted(r.ipc for r in rows) == [1, 2] and all(r.status == "ok" for r in rows)
    assert all(r.meta["worker"]["pid"] != os.getpid() for r in rows)
    assert list((tmp_path / "out" / "slurm").glob("*_result.pkl"))


def test_no_slurm_controller_is_a_clear_error_within_seconds(tmp_path, monkeypatch, capsys):
    import shutil
    import socket

    if shutil.which("scontrol"):
        # A slurm.conf whose controller port has nobody listening.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = tmp_path / "slurm.conf"
        conf.write_text(f"ClusterName=nobody\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\n"
                        "NodeName=localhost CPUs=1\nPartitionName=p Nodes=ALL Default=YES\n")
        monkeypatch.setenv("SLURM_CONF", str(conf))
        needle = "no SLURM controller answers"
    else:
        monkeypatch.setenv("PATH", str(tmp_path))
        needle = "not on PATH"
    t0 = time.monotonic()
    rc = _compare(tmp_path, "--methods", "random", "--ipc", "1", "--launcher", "slurm")
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert elapsed < 15
    assert not (tmp_path / "out" / "ddbench.sqlite").exists()


def test_slurm_without_submitit_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    launcher = SlurmLauncher()
    with pytest.raises(DDBenchError, match=r"pip install 'ddbench\[slurm\]'"):
        launcher.check(resolve_params("launcher slurm", launcher.params, {}), 1)
