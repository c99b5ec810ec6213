"""Every class of bad input in tests/bad_inputs.py (the table of docs/bad-input.md): the exit code, one line
of error and no traceback, and nothing recorded by a refused command; broken pipes say nothing."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bad_inputs import CASES, run_case

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    if case.needs_no_gpu and torch.cuda.is_available():
        pytest.skip("the case is a machine without a GPU")
    monkeypatch.syspath_prepend(str(PLUGINS))
    code, out, err = run_case(case, tmp_path)
    message = case.message.replace("TMP", str(tmp_path))
    assert code == case.code, (code, out, err)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error:" in line]  # ours, or argparse's after its usage
    if case.code == 2:
        assert len(errors) == 1, err
        assert message in errors[0], err
        db = tmp_path / "out" / "ddbench.sqlite"
        if db.exists():  # a refused command records nothing
            with sqlite3.connect(db) as con:
                assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())
    elif case.code == 1 and ("crashed in" in case.message or "is broken" in case.message):  # a plugin bug before the run: nothing ran
        assert len(errors) == 1 and message in errors[0], err
        assert not (tmp_path / "out" / "runs").exists() and not (tmp_path / "out" / "work").exists()
    elif case.code == 1:
        assert message in out + err
        with sqlite3.connect(tmp_path / "out" / "ddbench.sqlite") as con:
            assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]  # recorded, as failed
    else:
        assert message in out + err


def test_broken_pipe_is_silent(tmp_path):
    # `ddbench list | head -1`: the reader leaves early; no traceback, exit 0.
    proc = subprocess.run(f"{sys.executable} -m ddbench.cli list --params | head -1", shell=True, capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.stdout.count("\n") == 1 and proc.stderr == "", proc.stderr


def test_slurm_failure_is_summarised_by_its_error_not_its_log_path(tmp_path, monkeypatch):
    from ddbench.default_plugins.slurm_launcher import job_failure

    text = ("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call "
            "last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'ddbench.cli'\n"
            "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n"
            "  - /logs/1_0_log.err\n  - /logs/1_0_log.out")
    monkeypatch.chdir(tmp_path)
    assert job_failure("1_0", text).splitlines()[-1] == "job 1_0 failed: ModuleNotFoundError: No module named 'ddbench.cli'"
    (tmp_path / "ddbench").mkdir()  # a folder named like the package, where the sweep was submitted
    assert f"a folder {tmp_path / 'ddbench'} shadows the ddbench package" in job_failure("1_0", text).splitlines()[-1]
    import ddbench

    monkeypatch.chdir(Path(ddbench.__file__).resolve().parents[1])  # where ddbench/ IS the package: no hint
    assert "shadows" not in job_failure("1_0", text).splitlines()[-1]
