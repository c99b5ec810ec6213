"""The results store: one SQLite row per finished run, and the saved synthetic sets.

A row is written in one transaction only when a run ends (ok or failed), so an interrupted run leaves
no half row and never touches the rows of finished runs. Synthetic sets are written to a temporary
file and renamed into place, so a file that exists is whole.
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import torch

DEFAULT_DB = Path("ddbench-results") / "ddbench.sqlite"

COLUMNS = [
    ("run_id", "TEXT PRIMARY KEY"),
    ("created", "REAL"),
    ("status", "TEXT"),
    ("method", "TEXT"),
    ("dataset", "TEXT"),
    ("ipc", "INTEGER"),
    ("budget", "REAL"),
    ("protocol", "TEXT"),
    ("model", "TEXT"),
    ("seed", "INTEGER"),
    ("config_hash", "TEXT"),
    ("config", "TEXT"),
    ("images", "INTEGER"),
    ("accuracy_mean", "REAL"),
    ("accuracy_std", "REAL"),
    ("accuracies", "TEXT"),
    ("n_eval_models", "INTEGER"),
    ("distill_seconds", "REAL"),
    ("eval_seconds", "REAL"),
    ("device", "TEXT"),
    ("versions", "TEXT"),
    ("meta", "TEXT"),
    ("artifact", "TEXT"),
    ("error", "TEXT"),
]
JSON_COLUMNS = {"config", "accuracies", "versions", "meta"}


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")  # readers (reports) never block the writer
    con.execute(f"CREATE TABLE IF NOT EXISTS runs ({', '.join(f'{n} {t}' for n, t in COLUMNS)})")
    con.execute("CREATE INDEX IF NOT EXISTS runs_hash ON runs (config_hash, status)")
    return con


def record(path: Path, row: dict[str, Any]) -> None:
    """Insert one finished run, atomically."""
    values = []
    for name, _ in COLUMNS:
        value = row.get(name)
        if name in JSON_COLUMNS and value is not None:
            value = json.dumps(value, sort_keys=True, default=str)
        values.append(value)
    with closing(connect(path)) as con, con:
        con.execute(
            f"INSERT OR REPLACE INTO runs ({', '.join(n for n, _ in COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            values,
        )


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in JSON_COLUMNS:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out


def query(path: Path, where: str = "", args: tuple = ()) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with closing(connect(path)) as con:
        con.row_factory = sqlite3.Row
        rows = con.execute(f"SELECT * FROM runs {where} ORDER BY created", args).fetchall()
    return [_decode(r) for r in rows]


def iter_runs(path: Path) -> Iterator[dict[str, Any]]:
    yield from query(path)


def find_ok(path: Path, config_hash: str) -> dict[str, Any] | None:
    """The latest successful run with this exact configuration, if any (sweeps skip such cells)."""
    rows = query(path, "WHERE config_hash = ? AND status = 'ok'", (config_hash,))
    return rows[-1] if rows else None


def get_run(path: Path, run_id: str) -> dict[str, Any] | None:
    """A run by id or by a unique id prefix."""
    rows = query(path, "WHERE run_id LIKE ?", (run_id.replace("%", "") + "%",))
    exact = [r for r in rows if r["run_id"] == run_id]
    if exact:
        return exact[0]
    if len(rows) > 1:
        from .api import DDBenchError

        raise DDBenchError(f"run id prefix {run_id!r} is ambiguous: {', '.join(r['run_id'] for r in rows[:5])}")
    return rows[0] if rows else None


def atomic_save(obj: Any, target: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: the file is whole or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(text: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_grid(images01: torch.Tensor, labels: torch.Tensor, num_classes: int, target: Path, max_per_class: int = 10) -> None:
    """A PNG grid, one row per class (at most `max_per_class` images each), images already in [0, 1]."""
    from torchvision.utils import make_grid
    from PIL import Image

    rows = []
    for c in range(num_classes):
        idx = (labels == c).nonzero(as_tuple=True)[0][:max_per_class]
        row = images01[idx]
        if len(row) < max_per_class:  # pad short rows so the grid stays rectangular
            pad = torch.zeros(max_per_class - len(row), *images01.shape[1:], dtype=images01.dtype)
            row = torch.cat([row, pad])
        rows.append(row)
    grid = make_grid(torch.cat(rows), nrow=max_per_class, padding=1, pad_value=1.0)
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.png")
    Image.fromarray(array).save(tmp)
    os.replace(tmp, target)


def now() -> float:
    return time.time()
