"""`RunRecord`: the one type of a run's result, shared by the runner, the store, sweeps and reports.

It is stored as the columns the results database has always had (one column per field, the dict and list
fields as JSON), so databases written before this type existed still open and report.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping

from .roles import NOT_COMPARED

OK = "ok"
FAILED = "failed"

ROLES_META = "setting_roles"  # meta key: the roles the protocol declared when the run was made


@dataclass(frozen=True)
class SettingRoles:
    """Which protocol setting plays which role, for every protocol: {protocol: {key: role}}.

    `declared` holds the loaded protocols' declarations (`ddbench.host.plugins.Registry.setting_roles`). A run of a
    protocol that is not loaded falls back to the roles it recorded when it ran (meta['setting_roles']); a run
    recorded before protocols declared roles, whose protocol is not loaded either, has none: all its settings
    count as changing accuracy, and it has no augmentation axis, epochs or network count (docs/plugins.md)."""

    declared: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def of(self, record: Any) -> dict[str, str]:
        """{key: role} for the protocol `record` (a RunRecord or a row dict) was evaluated with."""
        protocol = _read(record, "protocol")
        if protocol in self.declared:
            return dict(self.declared[protocol])
        meta = _read(record, "meta")
        recorded = meta.get(ROLES_META) if isinstance(meta, dict) else None
        return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}

    def key(self, record: Any, role: str) -> str | None:
        """The setting that plays `role` (one of SINGLE_ROLES) for `record`'s protocol, or None."""
        return next((k for k, r in self.of(record).items() if r == role), None)

    def value(self, record: Any, role: str) -> Any:
        """The value `record` was evaluated with of the setting that plays `role`; None when there is none."""
        key = self.key(record, role)
        return None if key is None else protocol_settings(record).get(key)


def roles_of(params: Mapping[str, Any]) -> dict[str, str]:
    """{key: role} of a protocol's `params` (its Params that declare a role)."""
    return {k: p.role for k, p in params.items() if getattr(p, "role", "")}


def _read(record: Any, name: str) -> Any:
    """A field of a RunRecord, or a key of a row dict (what scripts and tests pass)."""
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def evaluation_settings(record: Any, roles: SettingRoles, ignore: Iterable[str] = ()) -> tuple:
    """What makes two evaluations comparable: the protocol settings that change accuracy, as a sorted tuple.

    The one definition used by reports (which runs share a cell), scores (which reference matches) and
    `run --reference`. It knows no protocol's keys: the protocol's roles say which settings change only speed
    or the sample size (NOT_COMPARED); `ignore` names more roles to leave out (the full-data reference: EPOCHS)."""
    skip = {k for k, r in roles.of(record).items() if r in NOT_COMPARED or r in set(ignore)}
    return tuple(sorted((k, repr(v)) for k, v in protocol_settings(record).items() if k not in skip))


def protocol_settings(record: Any) -> dict[str, Any]:
    """The protocol settings a run (a RunRecord or a row dict) was evaluated with; {} when it has none."""
    return (_read(record, "config") or {}).get("protocol_settings") or {}


def produced_ipc(record: Any) -> Any:
    """The images per class a run produced: its declared IPC for a budget run, else its `ipc`.

    A run's IPC is what it made, so every reference is paired at equal count. Databases written before the
    runner stored a budget run's declared IPC as `ipc` kept the requested `--ipc` there and the declared one
    in meta['ipc_declared']; this reads them as today's rows."""
    meta = getattr(record, "meta", None)
    declared = meta.get("ipc_declared") if isinstance(meta, dict) else None
    if getattr(record, "budget", None) is not None and isinstance(declared, int) and declared >= 1:
        return declared
    return getattr(record, "ipc", None)


def requested_ipc(record: Any) -> Any:
    """The `--ipc` a run was asked for (its config's; a budget run produces its own): what names its cell."""
    return (_read(record, "config") or {}).get("ipc", _read(record, "ipc"))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass
class RunRecord:
    """One finished run (ok or failed): what was asked, what came out, how long it took, where it ran."""

    run_id: str
    created: float
    status: str
    method: str
    dataset: str
    ipc: int  # images per class produced (a budget run: the IPC it declared; `config["ipc"]` is the --ipc asked)
    budget: float | None
    protocol: str
    model: str
    seed: int
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    images: int | None = None
    accuracy_mean: float | None = None
    accuracy_std: float | None = None
    accuracies: list[float] = field(default_factory=list)
    n_eval_models: int | None = None
    distill_seconds: float | None = None
    eval_seconds: float | None = None
    device: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    artifact: str | None = None
    error: str | None = None

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def start(cls, config: Mapping[str, Any], config_hash: str, status: str = FAILED) -> "RunRecord":
        """A fresh record of the cell `config` (run id, time, the identifying fields); status until it ends."""
        keys = ("method", "dataset", "ipc", "budget", "protocol", "model", "seed")
        return cls(run_id=new_run_id(), created=time.time(), status=status, config_hash=config_hash,
                   config=dict(config), **{k: config.get(k) for k in keys})

    @classmethod
    def failure(cls, config: Mapping[str, Any], config_hash: str, error: str,
                where: Mapping[str, Any] | None = None) -> "RunRecord":
        """The record of a cell that failed before or outside the runner (a worker that died, a bad job)."""
        rec = cls.start(config, config_hash)
        rec.error = error
        rec.meta = {"worker": dict(where or {})}
        return rec

    # -- reading ----------------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def error_line(self) -> str:
        """The last line of the error (the exception and its message), for one-line summaries."""
        lines = (self.error or "").strip().splitlines()
        return lines[-1] if lines else ""

    def summary(self) -> dict[str, Any]:
        """What `ddbench run --json` prints."""
        keys = ["run_id", "status", "method", "dataset", "ipc", "budget", "images", "protocol", "model",
                "accuracy_mean", "accuracy_std", "accuracies", "n_eval_models", "distill_seconds", "eval_seconds",
                "device", "seed", "versions", "config_hash", "artifact", "error"]
        out = {k: getattr(self, k) for k in keys}
        out["eval_impl"] = self.eval_detail("impl")
        out["eval_precision"] = self.eval_detail("precision")
        return out

    def eval_detail(self, key: str) -> Any:
        """One entry of the protocol's `details` (meta['eval']), or None."""
        detail = self.meta.get("eval") if isinstance(self.meta, dict) else None
        return detail.get(key) if isinstance(detail, dict) else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- the stored form --------------------------------------------------------------------------

    def to_columns(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = json.dumps(value, sort_keys=True, default=str) if f.name in JSON_FIELDS else value
        return out

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> "RunRecord":
        """From a database row (any schema version: missing columns become None/empty, extra ones are kept
        out). JSON columns that do not parse are kept as text under meta['unreadable']."""
        values: dict[str, Any] = {}
        unreadable: dict[str, str] = {}
        for f in fields(cls):
            value = row[f.name] if f.name in row.keys() else None
            if f.name in JSON_FIELDS:
                if isinstance(value, str):
                    try:
                        value = json.loads(value)
                    except ValueError:
                        unreadable[f.name], value = value, None
                if value is None:
                    value = [] if f.name == "accuracies" else {}
            values[f.name] = value
        rec = cls(**values)
        if unreadable and isinstance(rec.meta, dict):
            rec.meta["unreadable"] = unreadable
        rec.ipc = produced_ipc(rec)
        return rec


JSON_FIELDS = frozenset({"config", "accuracies", "versions", "meta"})
FIELD_NAMES = tuple(f.name for f in fields(RunRecord))

__all__ = ["RunRecord", "OK", "FAILED", "JSON_FIELDS", "FIELD_NAMES", "new_run_id", "produced_ipc", "requested_ipc"]
