"""Launcher plugins: registration, settings, a third-party launcher, the local pool, submitit's local
executor, and a SLURM that does not answer."""
from __future__ import annotations

import os
import sys
import time

import pytest

from ddbench.api import DDBenchError, resolve_params
from ddbench.cli import main
from ddbench.default_plugins.launchers import LocalLauncher, SlurmLauncher
from ddbench.host.plugins import load_plugins
from ddbench.run.sweeps import Job, run_job
from ddbench.store.results import query

from sweep_plugin import subprocess_env, write_config

TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


def _compare(tmp_path, *argv):
    config = write_config(tmp_path)
    return main(["compare", "--config", config, "--out", str(tmp_path / "out"), *TINY, *argv])


def _job(tmp_path, **changes):
    from ddbench.run.runner import RunRequest, registry_for, resolve
    from ddbench.store.config import load_config

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

    from ddbench.default_plugins import launchers

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


def test_a_killed_drivers_slurm_jobs_are_collected_not_submitted_again(tmp_path, monkeypatch, capsys):
    # Issue 12.10: after a SIGKILL of the driver its jobs keep running; the restarted sweep must collect them.
    import json

    from submitit.core import utils
    from submitit.slurm.slurm import SlurmJob

    import ddbench.default_plugins.slurm_launcher as L

    done, running, gone = _job(tmp_path, ipc=1), _job(tmp_path, ipc=2), _job(tmp_path, ipc=3)
    folder = tmp_path / "slurm"
    folder.mkdir()
    (folder / L.LEDGER).write_text(json.dumps({done.config_hash: "700_0", running.config_hash: "700_1",
                                               gone.config_hash: "700_2"}))
    utils.cloudpickle_dump(("success", run_job(done)), SlurmJob(folder, "700_0").paths.result_pickle)
    squeue = [{"700_1"}]
    monkeypatch.setattr(L, "_squeue_ids", lambda: squeue[0])
    submitted = []

    class Executor:
        def batch(self):
            import contextlib

            return contextlib.nullcontext()

        def submit(self, fn, job):
            submitted.append(job.config_hash)
            return SlurmJob(folder, f"701_{len(submitted) - 1}")

    monkeypatch.setattr(SlurmLauncher, "_executor", lambda self, settings, folder, parallelism: Executor())
    launcher = SlurmLauncher()
    settings = resolve_params("launcher slurm", launcher.params, {"folder": str(folder), "poll_seconds": 0.05})
    runs = launcher.run([done, running, gone], settings, 2, print)
    job, rec = next(runs)
    assert job is done and rec.status == "ok"  # finished while nobody watched: collected
    assert submitted == [gone.config_hash]  # only the cell whose job left no trace is submitted again
    assert "collecting 2 SLURM job(s) an earlier, killed driver submitted: 700_0, 700_1" in capsys.readouterr().out
    utils.cloudpickle_dump(("success", run_job(running)), SlurmJob(folder, "700_1").paths.result_pickle)
    job, rec = next(runs)
    assert job is running and rec.status == "ok"
    # A collected job leaves the ledger once the driver has taken its record (it asks for the next one).
    assert json.loads((folder / L.LEDGER).read_text()) == {running.config_hash: "700_1", gone.config_hash: "701_0"}
    monkeypatch.setattr(SlurmJob, "cancel", lambda self, check=True: None)
    runs.close()  # interrupted: the last job is cancelled and leaves the ledger
    assert json.loads((folder / L.LEDGER).read_text()) == {}
