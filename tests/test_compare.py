"""`ddbench compare`: grid expansion, bad input, failed cells, skipping done cells, kill and resume."""
from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddbench.api import DDBenchError
from ddbench.cli import main
from ddbench.commands.compare import parse_budgets, parse_ints, parse_seeds
from ddbench.core.safeload import load_tensors
from ddbench.store.results import query

from sweep_plugin import subprocess_env, write_config

TINY = ["--dataset", "tiny", "--protocol", "tiny-eval", "--no-progress"]


@pytest.fixture
def sweep(tmp_path):
    """(run(argv) -> (rc, stdout, stderr), db path): `ddbench compare` in this process on the tiny plugin."""
    config = write_config(tmp_path)
    out = tmp_path / "out"

    def run(*argv, capsys=None):
        return main(["compare", "--config", config, "--out", str(out), *TINY, *argv])

    return run, out / "ddbench.sqlite", config, out


def test_parse_lists():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,5,7") == [0, 5, 7]
    assert parse_seeds("4,") == [4]
    assert parse_ints("--ipc", "1, 10,1", 1) == [1, 10]
    assert parse_budgets("30,60,30") == [30.0, 60.0]
    for bad in ("0", "x", "1,,2", ""):
        with pytest.raises(DDBenchError, match="--ipc"):
            parse_ints("--ipc", bad, 1)
    with pytest.raises(DDBenchError, match="--seeds"):
        parse_seeds("0")
    with pytest.raises(DDBenchError, match="--budgets"):
        parse_budgets("10,-1")


def test_unknown_method_names_it_and_runs_nothing(sweep, capsys):
    run, db, _, out = sweep
    assert run("--methods", "random,nope,boom,alsonope", "--ipc", "1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'nope'" in err and "'alsonope'" in err and "valid:" in err and "random" in err
    assert not db.exists() and not (out / "runs").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--methods", "random", "--ipc", "0"], "--ipc"),
    (["--methods", "random", "--ipc", "1,,2"], "--ipc"),
    (["--methods", "random,", "--ipc", "1"], "--methods"),
    (["--methods", "random", "--seeds", "zero"], "--seeds"),
    (["--methods", "random", "--jobs", "0"], "--jobs"),
    (["--methods", "random", "--reference", "boom"], "--reference"),
    (["--methods", "random", "--set", "eval.nonsense=1"], "nonsense"),
    (["--methods", "random", "--launcher", "moon"], "moon"),
    (["--methods", "random", "--launcher-set", "gpus=zero"], "gpus"),
    (["--methods", "random", "--launcher-set", "color=red"], "color"),
])
def test_bad_input_is_one_line_and_runs_nothing(sweep, capsys, flags, needle):
    run, db, _, _ = sweep
    assert run(*flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not db.exists()


def test_duplicates_are_merged(sweep, capsys):
    run, db, _, _ = sweep
    assert run("--methods", "random,random", "--ipc", "1,2,1", "--seeds", "0,0,1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "grid: 4 cells" in out and "14 duplicate(s) merged" in out
    assert len(re.findall("would run", out)) == 4
    assert len(re.findall(r"\n      protocol: .*epochs=\d+", out)) == 4  # the resolved settings of each cell
    assert not db.exists()


def test_failed_cells_are_recorded_and_the_sweep_goes_on(sweep, capsys):
    run, db, _, out = sweep
    # boom fails at distillation; tiny-eval fails at IPC 2: both are failed cells, the others finish.
    rc = run("--methods", "boom,random", "--ipc", "1,2,3", "--set", "eval.fail_ipc=2")
    assert rc == 1
    rows = query(db)
    assert len(rows) == 6
    ok = {(r.method, r.ipc) for r in rows if r.status == "ok"}
    assert ok == {("random", 1), ("random", 3)}
    by_cell = {(r.method, r.ipc): r for r in rows}
    assert "boom: this method always fails" in by_cell[("boom", 1)].error
    assert "told to fail at IPC 2" in by_cell[("random", 2)].error
    text = capsys.readouterr().out
    assert "FAILED" in text and "ran 6 cell(s)" in text
    report = (out / "report" / "report.md").read_text()
    assert "boom: this method always fails" in report and "told to fail at IPC 2" in report

    # Done cells are skipped; failed ones are retried by default, kept with --retry none.
    assert run("--methods", "random", "--ipc", "1,3", "--set", "eval.fail_ipc=2", "--no-report") == 0
    assert "2 already in" in capsys.readouterr().out and len(query(db)) == 6
    assert run("--methods", "boom,random", "--ipc", "1,2,3", "--set", "eval.fail_ipc=2", "--retry", "none",
               "--no-report") == 0
    assert "6 already in" in capsys.readouterr().out and len(query(db)) == 6
    assert run("--methods", "boom,random", "--ipc", "1,2,3", "--set", "eval.fail_ipc=2", "--no-report") == 1
    assert "2 already in" in capsys.readouterr().out and len(query(db)) == 10


def test_second_call_is_instant_and_reports_only_its_grid(sweep, capsys):
    run, db, _, out = sweep
    assert run("--methods", "random", "--ipc", "1", "--seeds", "2") == 0
    assert run("--methods", "random", "--ipc", "2", "--no-report") == 0  # another grid, same database
    capsys.readouterr()
    t0 = time.perf_counter()
    assert run("--methods", "random", "--ipc", "1", "--seeds", "2") == 0
    assert time.perf_counter() - t0 < 5
    text = capsys.readouterr().out
    assert "2 already in" in text and "0 to run" in text
    csv_text = (out / "report" / "results.csv").read_text()
    assert ",1,ok,2," in csv_text and ",2,ok," not in csv_text  # the report covers this grid only


def _ok_rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT run_id, config_hash FROM runs WHERE status = 'ok'").fetchall()
    except sqlite3.OperationalError:  # the table is not created yet
        return []


def test_killed_sweep_resumes_with_only_the_missing_cells(tmp_path, capsys):
    """Kill a real `ddbench compare` process (SIGKILL) halfway, restart it, check nothing is lost or redone."""
    config = write_config(tmp_path)
    out = tmp_path / "out"
    db = out / "ddbench.sqlite"
    argv = [sys.executable, "-m", "ddbench.cli", "compare", "--config", config, "--out", str(out), *TINY,
            "--methods", "random", "--ipc", "1,2,3", "--seeds", "2", "--set", "eval.sleep=0.6", "--no-report"]
    proc = subprocess.Popen(argv, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_ok_rows(db)) < 2:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the sweep did not finish two cells in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _ok_rows(db)
    assert 2 <= len(before) < 6, "killed too late to test resuming"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM runs WHERE status != 'ok'").fetchone()[0] == 0  # no half rows

    # The same command again (in this process, to save a start-up): only the missing cells run.
    assert main(argv[3:]) == 0
    text = capsys.readouterr().out
    assert f"{len(before)} already in" in text and f"{6 - len(before)} to run" in text
    assert text.count(" ok  ") == 6 - len(before)
    after = _ok_rows(db)
    assert set(before) <= set(after)  # no finished cell lost or replaced
    assert len(after) == 6 and len({h for _, h in after}) == 6  # each cell exactly once
    rows = query(db)
    assert len(rows) == 6
    assert sorted((r.ipc, r.seed) for r in rows) == [(i, s) for i in (1, 2, 3) for s in (0, 1)]


def test_two_identical_sweeps_on_one_out_run_each_cell_once(tmp_path):
    """Two `compare`s of the same grid at once on one --out: no cell runs twice (the second
    waits for the cells the first holds and skips those it stored)."""
    config = write_config(tmp_path)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "ddbench.cli", "compare", "--config", config, "--out", str(out), *TINY,
            "--methods", "random", "--ipc", "1,2", "--seeds", "2", "--set", "eval.sleep=2", "--no-report"]
    procs = [subprocess.Popen(argv, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    texts = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], texts
    rows = _ok_rows(out / "ddbench.sqlite")
    assert len(rows) == 4 and len({h for _, h in rows}) == 4, texts  # each of the 4 cells exactly once
    ran = sum(t.count(" ok  ") for t in texts)
    assert ran == 4 and sum(t.count("done by another process") for t in texts) >= 1, texts


def test_a_run_of_a_config_another_process_is_running_waits_for_it(tmp_path):
    from ddbench.store.results import CellLock

    config = write_config(tmp_path)
    out = tmp_path / "out"
    argv = ["run", "--config", config, "--out", str(out), *TINY, "--method", "random", "--ipc", "1"]
    dry = subprocess.run([sys.executable, "-m", "ddbench.cli", "compare", *argv[1:3], *argv[3:5], *TINY,
                          "--methods", "random", "--ipc", "1", "--seeds", "1", "--dry-run"],
                         env=subprocess_env(), capture_output=True, text=True)
    config_hash = re.search(r"\[([0-9a-f]+)\]", dry.stdout).group(1)
    lock = CellLock(out / "work" / config_hash)
    assert lock.acquire(wait=False)
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "ddbench.cli", *argv], env={**subprocess_env(), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("waiting for it" in line for line in lines):  # it reached the lock and waits
            assert proc.poll() is None, "".join(lines)  # not finished or failed meanwhile
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        time.sleep(1)
        assert proc.poll() is None and not _ok_rows(out / "ddbench.sqlite")  # still waiting, nothing recorded
    finally:
        lock.release()
    proc.wait(timeout=120)
    reader.join(timeout=30)
    err = "".join(lines)
    assert proc.returncode == 0 and "is running this config" in err, err
    assert "resuming" not in err  # the other process's work is not taken for an interrupted run's leftover
    assert len(_ok_rows(out / "ddbench.sqlite")) == 1


def test_budgets_apply_to_methods_that_take_one(sweep, capsys):
    run, db, _, out = sweep
    assert run("--methods", "random,gen", "--ipc", "2", "--budgets", "1,5", "--seeds", "2") == 0
    text = capsys.readouterr().out
    assert "grid: 6 cells" in text and "random take no generation budget" in text
    rows = query(db)
    assert sorted((r.method, r.budget) for r in rows) == [
        ("gen", 1.0), ("gen", 1.0), ("gen", 5.0), ("gen", 5.0), ("random", None), ("random", None)]
    md = (out / "report" / "report.md").read_text()
    assert "| gen (1 s) |" in md and "| gen (5 s) |" in md
    assert (out / "report" / "budget_vs_reference.png").is_file()


def test_budgets_without_a_method_that_takes_one(sweep, capsys):
    run, db, _, _ = sweep
    assert run("--methods", "random", "--budget", "10") == 2
    err = capsys.readouterr().err.strip()
    assert "none of random takes a generation budget" in err and "gen" in err and len(err.splitlines()) == 1
    assert not db.exists()


@pytest.mark.parametrize("flags, needle", [
    (["--methods", "random", "--ipc", "1,6001"], "cell random ipc=6001 seed=0: --ipc 6001 is larger than"),
    (["--methods", "random", "--ipc", "1", "--device", "cuda"], "--device cuda was asked for but no CUDA device"),
])
@pytest.mark.parametrize("dry", [False, True])
def test_every_cell_is_validated_before_anything_runs(sweep, capsys, flags, needle, dry):
    # Issue 12.5: what `run` refuses with exit 2, `compare` refuses too (dry run included), recording nothing.
    if "cuda" in flags:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")  # the CPU-only case is the one under test
    run, db, _, out = sweep
    assert run(*flags, *(["--dry-run"] if dry else [])) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Nothing was run" in err, err
    assert "would run" not in captured.out
    assert not db.exists() and not (out / "runs").exists() and not (out / "work").exists()


def test_a_cell_recorded_by_other_plugin_code_or_data_is_not_reused(sweep, capsys):
    # Issue 12.8: compare never reuses a result computed with other plugin versions or on other data.
    import json
    import sqlite3

    run, db, _, out = sweep
    assert run("--methods", "random", "--ipc", "1", "--no-report") == 0
    assert run("--methods", "random", "--ipc", "1", "--no-report") == 0
    assert "1 already in" in capsys.readouterr().out
    with sqlite3.connect(db) as con:
        (versions,) = con.execute("SELECT versions FROM runs").fetchone()
        versions = json.loads(versions)
        assert "plugin:random" in versions and "plugin:sweep_plugin" in versions  # method and dataset plugins
        versions["plugin:random"] = "0.0.0-older"
        con.execute("UPDATE runs SET versions = ?", (json.dumps(versions),))
    assert run("--methods", "random", "--ipc", "1", "--no-report") == 0
    assert "0 already in" in capsys.readouterr().out and len(query(db)) == 2
    assert run("--methods", "random", "--ipc", "1", "--no-report", "--data-root", str(out.parent)) == 0
    assert "0 already in" in capsys.readouterr().out  # another data root is another cell
    rows = query(db)
    assert len(rows) == 3 and rows[-1].config["data_root"] == str(out.parent.absolute())


def test_models_axis_distils_once_and_evaluates_the_same_set_on_each(sweep, capsys):
    # compare --models makes one cell per evaluation architecture; the set does not depend on it, so the second
    # cell reuses the first cell's set (same images, same recorded distillation time) instead of distilling.
    run, db, _, out = sweep
    assert run("--methods", "gen", "--ipc", "2", "--models", "convnet,mlp") == 0
    rows = sorted(query(db), key=lambda r: r.model)
    assert [r.model for r in rows] == ["convnet", "mlp"] and all(r.ok for r in rows)
    import torch

    a, b = (load_tensors(r.artifact) for r in rows)
    assert torch.equal(a["images"], b["images"])
    assert rows[0].distill_seconds == rows[1].distill_seconds
    assert rows[0].config_hash != rows[1].config_hash  # still two runs, each with its own record


def test_sets_are_shared_within_a_seed_only(sweep, capsys):
    import torch

    run, db, _, out = sweep
    assert run("--methods", "gen", "--ipc", "2", "--models", "convnet,mlp", "--seeds", "0,1") == 0
    sets = {(r.seed, r.model): load_tensors(r.artifact)["images"] for r in query(db)}
    assert len(sets) == 4
    assert torch.equal(sets[0, "convnet"], sets[0, "mlp"]) and torch.equal(sets[1, "convnet"], sets[1, "mlp"])
    assert not torch.equal(sets[0, "convnet"], sets[1, "convnet"])
