"""The results store: one SQLite row per finished run (a `RunRecord`). (The saved synthetic sets: synsets.py.)

The store is opened, migrated and test-written *before* any work (`open_store`), so a database that
cannot take a row (a directory, an unwritable path, a corrupt or foreign file, a read-only database)
stops a run at once with one line instead of after hours of distillation. A row is written in one
transaction only when a run ends (ok or failed), so an interrupted run leaves no half row. If the row
still cannot be written then (disk full, the file removed or locked meanwhile), it is kept as JSON in
`OUT/pending/` and the next run that opens the same database stores it (`record_or_keep`).
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Callable

from ..core.atomic import atomic_write_json
from ..core.errors import DDBenchError
from ..core.records import FIELD_NAMES, RunRecord
from .row_checks import row_problem

DEFAULT_OUT = Path("ddbench-results")
DB_NAME = "ddbench.sqlite"
PENDING = "pending"

# Column types of the `runs` table; the names are RunRecord's fields, in order.
_TYPES = {"run_id": "TEXT PRIMARY KEY", "created": "REAL", "status": "TEXT", "method": "TEXT", "dataset": "TEXT",
          "ipc": "INTEGER", "budget": "REAL", "protocol": "TEXT", "model": "TEXT", "seed": "INTEGER",
          "config_hash": "TEXT", "config": "TEXT", "images": "INTEGER", "accuracy_mean": "REAL",
          "accuracy_std": "REAL", "accuracies": "TEXT", "n_eval_models": "INTEGER", "distill_seconds": "REAL",
          "eval_seconds": "REAL", "device": "TEXT", "versions": "TEXT", "meta": "TEXT", "artifact": "TEXT",
          "error": "TEXT"}
COLUMNS = [(name, _TYPES[name]) for name in FIELD_NAMES]
# Columns without which a `runs` table is not ours (a foreign database that happens to have one).
_CORE = {"run_id", "status", "config_hash"}
_PROBE_ID = "__ddbench_write_probe__"


def db_path(out: str | Path | None, db: str | Path | None = None) -> Path:
    """The database a command uses: `--db` if given, else OUT/ddbench.sqlite (the one place this is spelled)."""
    return Path(db) if db else Path(out or DEFAULT_OUT) / DB_NAME


class StoreError(DDBenchError):
    """The results database cannot be used (exit 2, one line)."""


def _why(path: Path, exc: BaseException) -> StoreError:
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        return StoreError(f"--db {path} is not a ddbench results database (corrupt, or not SQLite: {text}); "
                          "move it away or pass another --db")
    if "readonly" in low or "read-only" in low:
        return StoreError(f"--db {path} is read-only ({text}); make it writable or pass another --db")
    if "unable to open" in low:
        return StoreError(f"--db {path} cannot be opened ({text}); check that its folder exists and is writable")
    if "locked" in low:
        return StoreError(f"--db {path} is locked by another process ({text}); try again when it finishes")
    return StoreError(f"--db {path}: {text}")


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30)
    con.row_factory = sqlite3.Row
    return con


def _columns(con: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [r[1] for r in con.execute(f"PRAGMA table_info('{t}')")] for t in tables}


def open_store(path: Path | str, pending_dir: Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Create or open the database, migrate it to today's columns and prove a row can be written.

    Raises StoreError (one line) for a directory, an unwritable path, a corrupt or foreign file, or a
    read-only database. Then stores any rows an earlier run kept in `pending_dir` for this database.
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"--db {path} is a folder; give a file such as {path / DB_NAME}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"--db {path}: cannot create its folder ({exc.strerror or exc})") from None
    existed = path.exists() and path.stat().st_size > 0
    try:
        with closing(_connect(path)) as con:
            tables = _columns(con)
            if existed and "runs" not in tables:
                listed = ", ".join(sorted(tables)) or "none"
                raise StoreError(f"--db {path} is an SQLite database of another application (tables: {listed}); "
                                 "pass another --db")
            if "runs" in tables and not _CORE <= set(tables["runs"]):
                raise StoreError(f"--db {path} has a `runs` table that is not ddbench's (columns: "
                                 f"{', '.join(tables['runs'])}); pass another --db")
            with con:
                con.execute(f"CREATE TABLE IF NOT EXISTS runs ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
                for name, kind in COLUMNS:  # migrate: a database written by older code gains the new columns
                    if "runs" in tables and name not in tables["runs"]:
                        con.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind.replace(' PRIMARY KEY', '')}")
                con.execute("CREATE INDEX IF NOT EXISTS runs_hash ON runs (config_hash, status)")
            con.execute("PRAGMA journal_mode=WAL")  # readers (reports) never block the writer
            con.execute("BEGIN IMMEDIATE")  # the write probe: take the write lock, write, roll back
            con.execute("INSERT OR REPLACE INTO runs (run_id, status) VALUES (?, 'probe')", (_PROBE_ID,))
            con.rollback()
    except StoreError:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise _why(path, exc) from None
    if pending_dir is not None:
        flush_pending(path, pending_dir, log or (lambda msg: None))
    return path


def _insert(path: Path, rec: RunRecord) -> None:
    cols = rec.to_columns()
    with closing(_connect(path)) as con, con:
        con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    list(cols.values()))


def record(path: Path | str, rec: RunRecord) -> None:
    """Insert one finished run in one transaction. Raises StoreError when the database refuses it."""
    path = Path(path)
    open_store(path)  # creates and migrates a new or old database; cheap next to a run
    try:
        _insert(path, rec)
    except (sqlite3.Error, OSError, OverflowError) as exc:
        raise _why(path, exc) from None


def record_or_keep(path: Path | str, rec: RunRecord, pending_dir: Path, log: Callable[[str], None]) -> bool:
    """Record `rec`; if the database refuses it, keep it in `pending_dir` for the next run. True if stored."""
    path = Path(path)
    try:
        record(path, rec)
        return True
    except StoreError as exc:
        target = pending_dir / f"{rec.run_id}.json"
        try:
            atomic_write_json({"db": str(path.absolute()), "record": rec.as_dict()}, target, default=str)
        except OSError as write_exc:
            log(f"ddbench: error: {exc}; could not keep run {rec.run_id} in {target} either ({write_exc}); "
                f"its record: {json.dumps(rec.summary(), default=str)}")
            return False
        log(f"ddbench: error: {exc}; run {rec.run_id} is kept in {target} and stored by the next run with this --db")
        return False


def flush_pending(path: Path, pending_dir: Path, log: Callable[[str], None]) -> int:
    """Store the rows earlier runs kept in `pending_dir` for this database; returns how many."""
    if not pending_dir.is_dir():
        return 0
    stored = 0
    for item in sorted(pending_dir.glob("*.json")):
        try:
            data = json.loads(item.read_text())
            if Path(data["db"]) != path.absolute():
                continue
            _insert(path, RunRecord(**data["record"]))
        except (OSError, ValueError, KeyError, TypeError, sqlite3.Error, OverflowError) as exc:
            log(f"warning: could not store the kept run {item} ({type(exc).__name__}: {exc}); it stays there")
            continue
        item.unlink()
        stored += 1
    if stored:
        log(f"stored {stored} run(s) kept in {pending_dir} by earlier runs")
    return stored


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


_WARNED: set[tuple[str, str]] = set()


def _warn_skipped(path: Path, rec: RunRecord, why: str) -> None:
    """Once per row and process, on stderr: the row `query` left out and why (`ddbench show` still shows it)."""
    key = (str(path.absolute()), rec.run_id)
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: run {rec.run_id} in {path} skipped: {why} (`ddbench show {rec.run_id}` shows it)",
              file=sys.stderr)


def query(path: Path | str, where: str = "", args: tuple = (), trusted: bool = True) -> list[RunRecord]:
    """Records matching an SQL condition, oldest first; [] if there is no database yet.

    Never creates or changes anything; a corrupt or foreign file is a StoreError (one line). With `trusted`
    (reports, sweeps, references) a row that fails ddbench.store.row_checks is skipped with a warning naming it.
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise StoreError(f"--db {path} is a folder; give a file such as {path / DB_NAME}")
    try:
        with closing(_connect(path)) as con:
            tables = _columns(con)
            if "runs" not in tables or not _CORE <= set(tables["runs"]):
                if not tables:
                    return []
                raise StoreError(f"--db {path} is not a ddbench results database (tables: "
                                 f"{', '.join(sorted(tables))}); pass another --db")
            rows = con.execute(f"SELECT * FROM runs {('WHERE ' + where) if where else ''} ORDER BY created",
                               args).fetchall()
    except StoreError:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise _why(path, exc) from None
    records = [RunRecord.from_columns(r) for r in rows]
    if not trusted:
        return records
    kept = []
    for rec in records:
        why = row_problem(rec)
        if why is None:
            kept.append(rec)
        else:
            _warn_skipped(path, rec, why)
    return kept


def find_ok(path: Path | str, config_hash: str) -> RunRecord | None:
    """The latest successful run with this exact configuration, if any (sweeps skip such cells)."""
    rows = query(path, "config_hash = ? AND status = 'ok'", (config_hash,))
    return rows[-1] if rows else None


def latest_failed(path: Path | str, config_hash: str) -> bool:
    return bool(query(path, "config_hash = ? AND status = 'failed'", (config_hash,)))


def get_run(path: Path | str, run_id: str) -> RunRecord | None:
    """A run by id or by a unique id prefix (compared literally: `_` and `%` are not wildcards)."""
    if not run_id:
        raise DDBenchError("run id '' is empty; give a run id or its prefix (`ddbench report` lists them)")
    rows = query(path, "substr(run_id, 1, ?) = ?", (len(run_id), run_id), trusted=False)
    exact = [r for r in rows if r.run_id == run_id]
    if exact:
        return exact[0]
    if len(rows) > 1:
        raise DDBenchError(f"run id prefix {run_id!r} is ambiguous: {', '.join(r.run_id for r in rows[:5])}")
    return rows[0] if rows else None


__all__ = ["RunRecord", "StoreError", "open_store", "record", "record_or_keep", "flush_pending", "query", "find_ok",
           "latest_failed", "get_run", "db_path", "COLUMNS"]


class CellLock:
    """One process at a time per cell (config hash) of one results folder: an advisory `flock` on
    OUT/work/<hash>/cell.lock, held from before the cell starts until its row is stored.

    Two identical `compare`s on one `--out` would otherwise both run every cell (two rows each), and a second
    `run` of a config still running would take the first one's distilled set for an interrupted run's leftover.
    The lock dies with its process (a killed run never leaves it held); the file itself stays."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / "cell.lock"
        self._fh = None

    def acquire(self, wait: bool = True) -> bool:
        """Take the lock; without `wait`, False at once when another process holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """The pid that wrote the lock file last (the holder, while it is held)."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None

    def __enter__(self) -> "CellLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
