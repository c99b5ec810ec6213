"""The results store is checked before any work and never loses a finished run (issue 12 item 2; issue 10's
"a database written by the code before this change still reads and reports")."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
from pathlib import Path

import pytest

from ddbench.cli import main
from ddbench.store import results
from ddbench.store.results import StoreError, open_store, query

FAST = ["--protocol", "fast", "--eval-epochs", "1", "--eval-models", "1", "--no-progress"]


@pytest.fixture
def env(tmp_path, tiny_plugin_config):
    cfg = tiny_plugin_config
    out = tmp_path / "out"
    run = ["run", "--method", "random", "--ipc", "1", "--config", str(cfg), "--dataset", "tiny", *FAST]
    return {"out": out, "run": run, "tmp": tmp_path}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _nothing_ran(out: Path) -> None:
    assert not (out / "runs").exists() and not (out / "work").exists()


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not SQLite at all, just text that a user pointed --db at\n" * 50)
    return path


def _foreign(path: Path) -> Path:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE users (id INTEGER, email TEXT)")
        con.execute("INSERT INTO users VALUES (1, 'a@b.c')")
    return path


@pytest.mark.parametrize("make_db, message", [
    (lambda tmp: tmp, "is a folder; give a file such as"),
    (lambda tmp: (tmp / "afile").write_text("x") and tmp / "afile" / "db.sqlite", "cannot create its folder"),
    (lambda tmp: _corrupt(tmp / "c.sqlite"), "is not a ddbench results database (corrupt, or not SQLite"),
    (lambda tmp: _foreign(tmp / "f.sqlite"), "is an SQLite database of another application (tables: users)"),
])
def test_a_bad_db_stops_the_run_before_any_work(env, capsys, make_db, message):
    db = make_db(env["tmp"])
    before = db.read_bytes() if db.is_file() else None
    assert main([*env["run"], "--out", str(env["out"]), "--db", str(db)]) == 2
    err = _one_line_error(capsys)
    assert message in err and str(db) in err
    _nothing_ran(env["out"])
    if before is not None:
        assert db.read_bytes() == before  # a foreign or corrupt file is left as it was


def test_seed_overflow_is_bad_input(env, capsys):
    assert main([*env["run"], "--out", str(env["out"]), "--seed", "99999999999999999999999"]) == 2
    assert "--seed 99999999999999999999999 is out of range; allowed: integers 0..9223372036854775807" in _one_line_error(capsys)
    assert not (env["out"] / "ddbench.sqlite").exists()
    _nothing_ran(env["out"])


def _open_as_unprivileged_user(db: Path) -> str:
    """open_store in a forked child that drops root first (root ignores file modes); returns its error text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter under /root stays usable after dropping root
        code = 1
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                open_store(db)
                message = "opened"
            except StoreError as exc:
                message = str(exc)
            os.write(write, message.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        text = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return text


def test_read_only_database_is_refused():
    folder = Path(tempfile.mkdtemp(prefix="ddbench-ro-"))
    try:
        db = open_store(folder / "ddbench.sqlite")
        os.chmod(db, 0o444)
        os.chmod(folder, 0o555)
        assert f"--db {db} is read-only" in _open_as_unprivileged_user(db)
    finally:
        os.chmod(folder, 0o755)
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_a_record_the_database_refuses_at_the_end_is_kept_and_stored_next_time(env, capsys, monkeypatch):
    real = results._insert
    monkeypatch.setattr(results, "_insert", lambda path, rec: (_ for _ in ()).throw(sqlite3.OperationalError("disk I/O error")))
    assert main([*env["run"], "--out", str(env["out"])]) == 1
    captured = capsys.readouterr()
    pending = list((env["out"] / "pending").glob("*.json"))
    assert len(pending) == 1
    kept = json.loads(pending[0].read_text())
    assert kept["record"]["status"] == "ok" and kept["record"]["accuracies"]  # the evaluation is not lost
    assert "is kept in" in captured.out and "stored by the next run with this --db" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("ddbench: error: run ")
    monkeypatch.setattr(results, "_insert", real)
    assert main([*env["run"], "--out", str(env["out"]), "--seed", "1"]) == 0
    assert "stored 1 run(s) kept in" in capsys.readouterr().out
    rows = query(env["out"] / "ddbench.sqlite")
    assert sorted((r.seed, r.status) for r in rows) == [(0, "ok"), (1, "ok")]
    assert not list((env["out"] / "pending").glob("*.json"))


@pytest.mark.parametrize("command", [
    ["show", "x"], ["report"], ["compare", "--methods", "random", "--dataset", "tiny", "--protocol", "fast"],
])
def test_commands_on_a_corrupt_database_say_so_in_one_line(env, capsys, command):
    db = _corrupt(env["tmp"] / "c.sqlite")
    cfg = ["--config", str(env["tmp"] / "plugins.toml")] if command[0] == "compare" else []
    assert main([*command, *cfg, "--db", str(db)]) == 2
    assert "is not a ddbench results database" in _one_line_error(capsys)


def test_show_ids_are_literal_not_wildcards(env, capsys):
    assert main([*env["run"], "--out", str(env["out"])]) == 0
    capsys.readouterr()
    assert main(["show", "%", "--out", str(env["out"])]) == 2
    assert main(["show", "________", "--out", str(env["out"])]) == 2
    assert "no run '________'" in capsys.readouterr().err


# The `runs` table exactly as the code before RunRecord (git ccc6eae, ddbench/store/results.py COLUMNS) wrote it.
OLD_SCHEMA = ("run_id TEXT PRIMARY KEY, created REAL, status TEXT, method TEXT, dataset TEXT, ipc INTEGER, budget REAL, "
              "protocol TEXT, model TEXT, seed INTEGER, config_hash TEXT, config TEXT, images INTEGER, "
              "accuracy_mean REAL, accuracy_std REAL, accuracies TEXT, n_eval_models INTEGER, distill_seconds REAL, "
              "eval_seconds REAL, device TEXT, versions TEXT, meta TEXT, artifact TEXT, error TEXT")


def _old_row(run_id, method, ipc, accs, status="ok", error=None):
    return {"run_id": run_id, "created": 1.0e9 + ipc, "status": status, "method": method, "dataset": "tiny", "ipc": ipc,
            "budget": None, "protocol": "fast", "model": "convnet", "seed": 0, "config_hash": f"h{method}{ipc}",
            "config": json.dumps({"method": method, "ipc": ipc}), "images": 3 * ipc,
            "accuracy_mean": sum(accs) / len(accs) if accs else None, "accuracy_std": 0.5 if accs else None,
            "accuracies": json.dumps(accs) if accs else None, "n_eval_models": len(accs) or None,
            "distill_seconds": 1.0, "eval_seconds": 2.0, "device": "cpu", "versions": json.dumps({"torch": "x"}),
            "meta": json.dumps({"per_class": [ipc] * 3}), "artifact": None, "error": error}


@pytest.mark.parametrize("schema", [OLD_SCHEMA, OLD_SCHEMA.replace(", artifact TEXT", "").replace(", budget REAL", "")])
def test_a_database_written_by_the_old_code_reads_reports_and_takes_new_runs(env, capsys, schema):
    db = env["out"] / "ddbench.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.execute(f"CREATE TABLE runs ({schema})")
        cols = [c.split()[0] for c in schema.split(", ")]
        for row in (_old_row("old-1", "random", 1, [50.0, 51.0]), _old_row("old-2", "random", 2, [60.0, 61.0]),
                    _old_row("old-3", "boom", 1, [], status="failed", error="Traceback\nRuntimeError: boom")):
            con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols])
    rows = query(db)
    assert [(r.run_id, r.status, r.accuracies) for r in rows] == [
        ("old-1", "ok", [50.0, 51.0]), ("old-3", "failed", []), ("old-2", "ok", [60.0, 61.0])]
    assert main(["show", "old-1", "--out", str(env["out"])]) == 0
    assert "50.50" in capsys.readouterr().out
    assert main(["report", "--out", str(env["out"]), "--report", str(env["tmp"] / "rep")]) == 0
    out = capsys.readouterr().out
    assert "50.50 ± 0.71 (1 seed, 2 nets" in out and "60.50 ± 0.71 (1 seed, 2 nets" in out  # sample std
    assert main([*env["run"], "--out", str(env["out"]), "--ipc", "3"]) == 0  # migrated in place, then recorded
    assert len(query(db)) == 4



OLD_DATABASE = Path(__file__).resolve().parent / "old_database"


def test_an_old_database_reports_exactly_as_the_code_before_the_package_move_did(tmp_path, monkeypatch, capsys):
    # results.sql: a real database of four runs written by ddbench 0.2.0 when every module sat flat in ddbench/
    # (commit 2aba003; only the runs' set paths rewritten to a folder that does not exist); report.md, results.csv,
    # scores.json and stdout.txt: what that commit's `ddbench report --out TMP/out --report TMP/out/report` made of
    # it, with the folder and the time written as TMP and DATE. A deliberate change to the report rewrites them.
    out = tmp_path / "out"
    out.mkdir()
    with sqlite3.connect(out / "ddbench.sqlite") as con:
        con.executescript((OLD_DATABASE / "results.sql").read_text())
    argv = ["report", "--out", str(out), "--report", str(out / "report")]
    monkeypatch.setattr("sys.argv", ["ddbench", *argv])  # the report quotes its command line
    monkeypatch.chdir(OLD_DATABASE.parent.parent)  # and shows paths under the working folder relative: not these
    assert main(argv) == 0

    def normal(text: str) -> str:
        return re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "Generated DATE", text.replace(str(tmp_path), "TMP"))

    assert normal(capsys.readouterr().out) == (OLD_DATABASE / "stdout.txt").read_text()
    for name in ("report.md", "results.csv", "scores.json"):
        assert normal((out / "report" / name).read_text()) == (OLD_DATABASE / name).read_text(), name
