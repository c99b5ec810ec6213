"""Reading the database never trusts a row: what makes a stored row usable by reports, sweeps and references.

A row written by an older or broken build, edited by hand, or damaged on disk must not break every later report
or count as a finished cell. `row_problem` says what is wrong with a row (None when nothing is); the store's
readers skip such rows with a warning naming them, while `ddbench show RUN_ID` still shows them.
"""
from __future__ import annotations

import math
from typing import Any

from ..core.records import FAILED, OK, RunRecord


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def row_problem(rec: RunRecord) -> str | None:
    """Why the row cannot be used (one phrase), or None."""
    unreadable = rec.meta.get("unreadable") if isinstance(rec.meta, dict) else None
    if unreadable:
        return f"damaged JSON in column(s) {', '.join(sorted(unreadable))}"
    for name, kind in (("config", dict), ("versions", dict), ("meta", dict), ("accuracies", list)):
        if not isinstance(getattr(rec, name), kind):
            return f"column {name} holds {type(getattr(rec, name)).__name__}, not a JSON {kind.__name__}"
    if rec.status not in (OK, FAILED):
        return f"status {rec.status!r} is neither {OK!r} nor {FAILED!r}"
    if rec.status == FAILED:
        return None
    if isinstance(rec.ipc, bool) or not isinstance(rec.ipc, int) or rec.ipc < 1:
        return f"ipc={rec.ipc!r} is not an integer >= 1"
    for a in rec.accuracies:
        if not _number(a) or not 0 <= a <= 100:
            return f"accuracy {a!r} is not a percentage in [0, 100]"
    if rec.n_eval_models and len(rec.accuracies) != rec.n_eval_models:
        return f"{len(rec.accuracies)} accuracies for n_eval_models={rec.n_eval_models}"
    if rec.accuracies and not (_number(rec.accuracy_mean) and 0 <= rec.accuracy_mean <= 100):
        return f"accuracy_mean={rec.accuracy_mean!r} is not a percentage in [0, 100]"
    if rec.accuracy_std is not None and not (_number(rec.accuracy_std) and rec.accuracy_std >= 0):
        return f"accuracy_std={rec.accuracy_std!r} is not a number >= 0"
    return None


__all__ = ["row_problem"]
