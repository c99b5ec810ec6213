"""A run beside a reference method under the same evaluation, from the results database.

`ddbench run --method M --reference R` prints, after M's result, the recorded runs of R with the same
dataset, IPC, protocol, evaluation architecture, number of networks and epochs (any seed), their mean ± std
and a Welch t-test, or the one command that computes the reference once (it is then stored and reused).
The host names no method: R comes from the user (the Makefile passes `random`).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .records import RunRecord, evaluation_settings, protocol_settings
from .results import query


def _same_evaluation(rec: RunRecord) -> tuple:
    """The comparable settings (records.evaluation_settings) and, here, the same number of networks too."""
    return evaluation_settings(rec), protocol_settings(rec).get("n_models")


def matching(db: Path, rec: RunRecord, method: str) -> list[RunRecord]:
    """Successful runs of `method` at `rec`'s IPC (a budget run's nominal --ipc), evaluated exactly as `rec` was."""
    rows = query(db, "method = ? AND dataset = ? AND ipc = ? AND protocol = ? AND model = ? AND status = 'ok'",
                 (method, rec.dataset, rec.ipc, rec.protocol, rec.model))
    want = _same_evaluation(rec)
    return [r for r in rows if _same_evaluation(r) == want]


def reference_lines(db: Path, rec: RunRecord, method: str) -> list[str]:
    """Lines for the terminal: the reference's figure and a Welch test, or how to compute the reference."""
    refs = matching(db, rec, method)
    if not refs:
        cmd = ["ddbench", "run", "--method", method, "--dataset", rec.dataset, "--ipc", str(rec.ipc),
               "--protocol", rec.protocol, "--model", rec.model]
        ev = protocol_settings(rec)
        if ev.get("n_models") is not None:
            cmd += ["--eval-models", str(ev["n_models"])]
        if ev.get("epochs") is not None:
            cmd += ["--eval-epochs", str(ev["epochs"])]
        return [f"reference {method}: no run under the same evaluation in {db}; compute it once with:",
                "  " + " ".join(shlex.quote(c) for c in cmd)]
    pooled = [a for r in refs for a in r.accuracies]
    mean = sum(pooled) / len(pooled)
    std = (sum((a - mean) ** 2 for a in pooled) / len(pooled)) ** 0.5
    line = (f"reference {method}: {mean:.2f} ± {std:.2f} % ({len(refs)} run(s), seeds "
            f"{','.join(str(r.seed) for r in refs)}, {len(pooled)} networks; runs {', '.join(r.run_id for r in refs)})")
    out = [line]
    if len(rec.accuracies) > 1 and len(pooled) > 1:
        from scipy.stats import ttest_ind

        p = float(ttest_ind(rec.accuracies, pooled, equal_var=False).pvalue)
        out.append(f"this run {rec.accuracy_mean:.2f} % vs {method} {mean:.2f} %: {rec.accuracy_mean - mean:+.2f} points, "
                   f"Welch p = {p:.2g} over networks (one seed of this method: compare seeds with `ddbench compare`)")
    return out
