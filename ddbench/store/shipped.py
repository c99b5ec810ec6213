"""The reference table shipped with the package: random real subsets of the default dataset, measured once.

`make run` should say how its result compares with random real images at equal count without first spending
the CPU time to compute them. ddbench/data/reference/<dataset>.json holds one row per (method, dataset
fingerprint, IPC, protocol settings, seed): the per-network accuracies and the exact `ddbench run` command that
made the row (benchmarks/make_reference.py regenerates the table from its stored cells). Its sha256 is stored
beside it (`<dataset>.json.sha256`, `sha256sum -c` format) and checked at every load: a table that does not
match is ignored with a one-line warning on stderr (the run's own result is never lost over it), so an edited
table is never shown as measured. Rows are used only where the database has no run of its own under the same
evaluation, and every place that shows one labels it `shipped reference`; they are never pooled with local runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from ..core.records import OK, RunRecord, SettingRoles, evaluation_settings
from ..core.roles import NETWORKS
from .identity import file_sha256

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"  # ddbench/data/reference
LABEL = "shipped reference"


def row_name(method: str) -> str:
    """The row name of a reference taken from the shipped table: labelled wherever it is shown."""
    return f"{method} ({LABEL})"


def table_path(dataset: str, directory: Path | None = None) -> Path:
    return (directory or DATA_DIR) / f"{dataset}.json"


_said: set[str] = set()


def _warn(message: str) -> None:
    """One warning per problem per process: report, scores and references each read the table."""
    if message not in _said:
        _said.add(message)
        print(f"warning: {message}", file=sys.stderr)


def load_table(path: Path, warn: Callable[[str], None] = _warn) -> dict[str, Any] | None:
    """The table at `path` if its sha256 matches the one stored beside it; else None (and one warning)."""
    if not path.is_file():
        return None
    digest_file = path.with_name(path.name + ".sha256")
    try:
        want = digest_file.read_text().split()[0]
    except (OSError, IndexError):
        warn(f"{LABEL} table {path} has no sha256 in {digest_file.name}; it is ignored")
        return None
    got = file_sha256(path)
    if got != want:
        warn(f"{LABEL} table {path} does not match its sha256 (file {got[:12]}..., recorded {want[:12]}...); "
             "it is ignored")
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        warn(f"{LABEL} table {path} is not JSON ({exc}); it is ignored")
        return None


def as_record(row: dict[str, Any], source: Path) -> RunRecord:
    """One table row as a run record (run id `shipped:<config hash>`, meta['shipped'] naming the table)."""
    config = {"method": row["method"], "dataset": row["dataset"], "ipc": row["ipc"], "budget": None,
              "protocol": row["protocol"], "model": row["model"], "seed": row["seed"],
              "protocol_settings": row["protocol_settings"]}
    rec = RunRecord.start(config, row["config_hash"], status=OK)
    rec.run_id = f"shipped:{row['config_hash']}"
    rec.created = 0.0
    rec.accuracies = [float(a) for a in row["accuracies"]]
    rec.accuracy_mean, rec.accuracy_std = row["accuracy_mean"], row["accuracy_std"]
    rec.n_eval_models = len(rec.accuracies)
    rec.images = row.get("images")
    rec.meta = {"dataset_fingerprint": row["dataset_fingerprint"], "shipped": str(source), "command": row["command"]}
    return rec


def shipped_records(dataset: str, directory: Path | None = None,
                    warn: Callable[[str], None] = _warn) -> list[RunRecord]:
    """Every usable row of the dataset's shipped table as records; [] when there is none or it fails its check.

    The sha256 only says the table is the one shipped beside it (anyone can re-hash an edited table): each row is
    also checked as a database row is (ddbench/store/row_checks.py), and a bad one skipped with a warning."""
    from .row_checks import row_problem

    path = table_path(dataset, directory)
    table = load_table(path, warn)
    rows = (table or {}).get("rows", []) if isinstance(table, dict) else []
    if not isinstance(rows, list):
        warn(f"{LABEL} table {path}: 'rows' is {type(rows).__name__}, not a list; it is ignored")
        return []
    out = []
    for n, row in enumerate(rows):
        name = f"row {row.get('config_hash', n) if isinstance(row, dict) else n}"
        try:
            rec = as_record(row, path)
            problem = row_problem(rec)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else f"no field {exc}"
        if problem:
            warn(f"{LABEL} table {path}: {name} skipped ({problem})")
            continue
        out.append(rec)
    return out


def is_shipped(record: RunRecord) -> bool:
    return bool(isinstance(record.meta, dict) and record.meta.get("shipped"))


def fingerprint(record: RunRecord) -> str | None:
    return record.meta.get("dataset_fingerprint") if isinstance(record.meta, dict) else None


def matching(rec: RunRecord, method: str, roles: SettingRoles, same_networks: bool = True,
             directory: Path | None = None, warn: Callable[[str], None] = _warn) -> list[RunRecord]:
    """Shipped rows of `method` at `rec`'s IPC on the very same data (fingerprint), protocol, architecture and
    evaluation settings (`roles`: which settings count), and number of networks unless `same_networks` is False."""
    want = fingerprint(rec)
    if want is None:
        return []
    return [r for r in shipped_records(rec.dataset, directory, warn)
            if r.method == method and fingerprint(r) == want and r.ipc == rec.ipc
            and r.protocol == rec.protocol and r.model == rec.model
            and evaluation_settings(r, roles) == evaluation_settings(rec, roles)
            and (not same_networks or roles.value(r, NETWORKS) == roles.value(rec, NETWORKS))]


__all__ = ["LABEL", "DATA_DIR", "load_table", "shipped_records", "matching", "is_shipped", "table_path"]
