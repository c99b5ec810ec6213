"""Trust under misbehaving plugins and damaged rows: what the database, the results folder and the exit code hold
afterwards (docs/guarantees.md)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddbench.cli import main

HERE = Path(__file__).resolve().parent
FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "plugins"))
    cfg = tmp_path / "plugins.toml"
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin", "hostile_plugin"]\n')
    out = tmp_path / "out"
    return {"out": out, "db": out / "ddbench.sqlite",
            "base": ["--config", str(cfg), "--out", str(out), "--dataset", "tiny"]}


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT run_id, status, method, error FROM runs ORDER BY created").fetchall()


def test_a_bad_row_is_skipped_with_a_warning_never_breaking_a_report_or_a_sweep(env, capsys):
    assert main(["run", "--method", "random", "--ipc", "1", "--seed", "0", *FAST, *env["base"]]) == 0
    assert main(["run", "--method", "random", "--ipc", "1", "--seed", "1", *FAST, *env["base"]]) == 0
    good, damaged = [r[0] for r in _rows(env["db"])]
    # A NaN row written by an older build, and a row whose JSON column was damaged on disk.
    with sqlite3.connect(env["db"]) as con:
        con.execute("UPDATE runs SET accuracies = '[NaN]', accuracy_mean = NULL WHERE run_id = ?", (good,))
        con.execute("UPDATE runs SET meta = '{broken' WHERE run_id = ?", (damaged,))
    capsys.readouterr()
    assert main(["report", "--out", str(env["out"])]) == 0
    err = capsys.readouterr().err
    assert f"warning: run {good} in" in err and "accuracy nan is not a percentage" in err
    assert f"warning: run {damaged} in" in err and "damaged JSON in column(s) meta" in err
    assert main(["show", good, "--out", str(env["out"])]) == 0  # show still shows it
    # The sweep does not count either row as done: it runs both cells again.
    capsys.readouterr()
    assert main(["compare", "--methods", "random", "--ipc", "1", "--seeds", "0,1", "--no-report", *FAST,
                 *env["base"]]) == 0
    assert "0 already in" in capsys.readouterr().out
    assert [r[1] for r in _rows(env["db"])] == ["ok"] * 4


def test_a_plugin_exit_in_a_sweep_is_a_failed_cell_and_the_other_cells_run(env, capsys):
    rc = main(["compare", "--methods", "exit-method,random", "--ipc", "1", "--no-report", *FAST, *env["base"]])
    out = capsys.readouterr().out
    assert rc == 1
    rows = {r[2]: r for r in _rows(env["db"])}
    assert rows["random"][1] == "ok" and rows["exit-method"][1] == "failed"
    assert "called sys.exit(0) in distill()" in rows["exit-method"][3] and "FAILED" in out


def test_sigterm_ends_run_with_143_a_nonempty_log_and_no_row(env, tmp_path):
    # The slow-evaluating `run` of a subprocess, its stdout redirected to a file, killed with SIGTERM.
    log = tmp_path / "run.log"
    code = ("import sys, time; sys.path[:0] = [%r, %r]\n"
            "from ddbench.api import EvalResult\n"
            "from ddbench.default_plugins import dsa_protocols as d\n"
            "def slow(self, syn, ctx, settings):\n    print('evaluating', flush=False); time.sleep(60)\n"
            "for cls in vars(d).values():\n"
            "    if isinstance(cls, type) and hasattr(cls, 'evaluate'): cls.evaluate = slow\n"
            "from ddbench.cli import main; sys.exit(main(sys.argv[1:]))\n") % (str(HERE), str(HERE / "plugins"))
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code, "run", "--method", "random", "--ipc", "1", *FAST,
                                 *env["base"]], stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.monotonic() + 120
        while "evaluating" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
    text = log.read_text()
    assert "evaluating" in text and "terminated (SIGTERM)" in text
    assert _rows(env["db"]) == [] if env["db"].exists() else True
    assert list((env["out"] / "work").glob("*/distilled.pt"))  # the distilled set stays for the resumed run


def test_artifact_paths_are_absolute_so_show_works_from_elsewhere(env, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    base = [a if a != str(env["out"]) else "out" for a in env["base"]]
    assert main(["run", "--method", "random", "--ipc", "1", "--json", *FAST, *base]) == 0
    artifact = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["artifact"]
    assert os.path.isabs(artifact) and Path(artifact).is_file()


def test_the_run_log_says_when_paper_defaults_apply_to_a_dataset_without_presets(env, capsys, tmp_path):
    cfg = tmp_path / "presets.toml"  # presets for fashion-mnist only, as the shipped file has for dm, mtt, minmax
    cfg.write_text('[plugins]\nmodules = ["tiny_plugin"]\n[methods.random.fashion-mnist]\n')
    base = ["--config", str(cfg), "--out", str(env["out"]), "--dataset", "tiny"]
    assert main(["run", "--method", "random", "--ipc", "1", *FAST, *base]) == 0
    assert ("note: plugins.toml has presets for method 'random' on fashion-mnist, none for 'tiny': its paper "
            "defaults apply (presets are keyed by dataset name") in capsys.readouterr().out
    assert main(["run", "--method", "random", "--ipc", "1", "--preset", "paper", *FAST, *base]) == 0
    assert "note: plugins.toml has presets" not in capsys.readouterr().out  # asked for the papers' settings


def test_an_exit_2_error_leaves_no_new_folder(env, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "new" / "results"
    base = [a if a != str(env["out"]) else str(out) for a in env["base"]]
    assert main(["run", "--method", "random", "--ipc", "1", "--db", str(tmp_path / "afile" / "db.sqlite"), *FAST,
                 *base]) == 2
    assert "cannot create its folder" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
