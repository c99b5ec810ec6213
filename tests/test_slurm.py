"""The SLURM launcher against a real single-node SLURM on localhost (Debian's slurm-wlm + munge).

The fixture uses a controller that already answers, or starts one with .ci/slurm-setup.sh --no-install
(root only) and stops it afterwards. Skipped only where slurm-wlm or munge is not installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ddbench.api import resolve_params
from ddbench.cli import main
from ddbench.store.results import query

from sweep_plugin import subprocess_env, write_config

pytestmark = pytest.mark.slurm

SETUP = Path(__file__).resolve().parent.parent / ".ci" / "slurm-setup.sh"
TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


def _answers() -> bool:
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in out.stdout


@pytest.fixture(scope="module")
def slurm():
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"slurm-wlm / munge not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    started = False
    if not _answers():
        if os.geteuid() != 0:
            pytest.fail("slurm-wlm is installed but no controller answers, and starting one needs root "
                        "(run .ci/slurm-setup.sh as root)")
        setup = subprocess.run(["bash", str(SETUP), "--no-install"], capture_output=True, text=True, timeout=120)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        started = True
    yield
    if started:
        subprocess.run(["bash", str(SETUP), "--stop"], capture_output=True, timeout=60)


@pytest.fixture
def on_pythonpath(monkeypatch):
    """SLURM jobs inherit the submitting environment: put the test plugin on PYTHONPATH for them."""
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])


def test_two_cell_sweep_through_slurm(slurm, on_pythonpath, tmp_path, capsys):
    config = write_config(tmp_path)
    out = tmp_path / "out"
    argv = ["compare", "--config", config, "--out", str(out), *TINY, "--methods", "random", "--ipc", "1,2",
            "--launcher", "slurm", "--jobs", "2", "--launcher-set", "cpus_per_task=1",
            "--launcher-set", "poll_seconds=0.3", "--launcher-set", "timeout_min=10"]
    assert main(argv) == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "submitted 2 SLURM job(s) as array" in text
    rows = query(out / "ddbench.sqlite")
    assert sorted(r.ipc for r in rows) == [1, 2] and all(r.status == "ok" for r in rows)
    for r in rows:  # each row came from a SLURM array task, and only the driver wrote it
        worker = r.meta["worker"]
        assert worker.get("slurm_array_job_id") and worker.get("slurm_job_id")
        assert worker["pid"] != os.getpid()
    assert len(list((out / "slurm").glob("*_result.pkl"))) == 2
    assert (out / "report" / "report.md").is_file()
    # A second call finds both cells done and submits nothing.
    assert main(argv) == 0
    assert "2 already in" in capsys.readouterr().out


@pytest.mark.slow
def test_preempted_job_is_requeued_and_its_row_still_comes_back(slurm, on_pythonpath, tmp_path):
    from ddbench.default_plugins.launchers import Job, SlurmLauncher
    from ddbench.run.runner import RunRequest, registry_for, resolve
    from ddbench.store.config import load_config

    config_path = write_config(tmp_path)
    config = load_config(config_path)
    request = RunRequest(method="random", dataset="tiny", protocol="tiny-eval", ipc=1, out=str(tmp_path / "out"),
                         progress=False, eval_sets={"sleep": 6})
    resolved = resolve(request, config, registry_for(config))
    job = Job(0, request, config_path, resolved.config_hash, resolved.config())
    launcher = SlurmLauncher()
    settings = resolve_params("launcher slurm", launcher.params, {"poll_seconds": 0.3, "cpus_per_task": 1})
    launcher.check(settings, 1)
    rows, messages = [], []
    runner = threading.Thread(target=lambda: rows.extend(r for _, r in launcher.run([job], settings, 1, messages.append)),
                              daemon=True)
    runner.start()

    def job_state() -> tuple[str, str]:
        # this test's job only (its batch script lies under tmp_path): a job an earlier test left running has the
        # same name, and signalling that one instead fails as soon as it ends
        out = subprocess.run(["squeue", "-h", "-n", "ddbench", "-o", "%i|%T|%o"], capture_output=True,
                             text=True).stdout.splitlines()
        mine = [line.split("|") for line in out if str(tmp_path) in line]
        return (mine[0][0], mine[0][1]) if mine else ("", "")

    deadline = time.monotonic() + 60
    while job_state()[1] != "RUNNING":
        assert time.monotonic() < deadline and runner.is_alive(), (messages, rows)
        time.sleep(0.2)
    job_id = job_state()[0]
    marker = tmp_path / "out" / "work" / job.config_hash / "evaluating"
    while not marker.exists():  # the worker is evaluating: submitit's signal handlers are in place
        assert time.monotonic() < deadline + 60 and runner.is_alive(), (messages, rows)
        time.sleep(0.2)
    marker.unlink()
    # What SLURM sends on preemption (as submitit's own Job._interrupt does): SIGTERM, then USR2.
    subprocess.run(["scancel", job_id, "--signal", "SIGTERM"], check=True)
    subprocess.run(["scancel", job_id, "--signal", "USR2"], check=True)
    # SLURM holds a requeued job ~2 minutes before it is eligible again; let it start now.
    deadline = time.monotonic() + 60
    while "Restarts=1" not in subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    while runner.is_alive() and job_state()[1] != "RUNNING" and time.monotonic() < deadline:
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], capture_output=True)
        time.sleep(0.5)
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert len(rows) == 1 and rows[0].status == "ok", rows
    assert rows[0].meta["worker"].get("requeues") == 1
    assert marker.exists()  # evaluated again after the requeue
