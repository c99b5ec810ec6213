"""A run beside a reference method at equal count and under the same evaluation.

`ddbench run --method M --reference R` ends with a short block: M's accuracy, R's at the run's own IPC (the
images per class it produced; for a budget run the IPC it declared) under the same dataset, protocol,
evaluation architecture, number of networks and epochs, and the difference. The run's own figure is its
networks' mean ± population std (as the reference code's np.std, like every run's summary); R's is the mean of
its seed means ± their sample std over seeds (ddbench/core/stats.py; with one seed, over its networks), each labelled.
No p-value: one run is one method seed, and the test is over method-seed means (>= 2 per side, `ddbench
compare`); the block says so. R's figure comes from the results database (any seed), else from the table
shipped with the package (labelled `shipped reference`, ddbench/store/shipped.py), else the block names the one
command that computes it.
The host names no method: R comes from the user (the Makefile passes `random`).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ..api import DEFAULT_DATASET, DEFAULT_MODEL  # the CLI's defaults, left out of the commands it prints
from ..core.records import RunRecord, SettingRoles, evaluation_settings
from ..core.roles import EPOCHS, EVAL_FLAGS, NETWORKS
from ..core.stats import MIN_SEEDS, SEEDS, population_std, spread
from ..host.plugins import Registry, registry_or_default
from ..store.results import query

# The evaluation a reference command repeats: epochs, then networks (roles.EVAL_FLAGS names their flags).
ROLE_FLAGS = tuple((role, next(flag for r, flag, _, _ in EVAL_FLAGS if r == role)) for role in (EPOCHS, NETWORKS))


def same_evaluation(rec: RunRecord, roles: SettingRoles) -> tuple:
    """The comparable settings (records.evaluation_settings) and, here, the same number of networks too."""
    return evaluation_settings(rec, roles), roles.value(rec, NETWORKS)


def reference_command(rec: RunRecord, method: str, roles: SettingRoles, seed: int = 0, *, ipc: str | None = None,
                      epochs: int | None = None, extra: tuple[str, ...] = ()) -> str:
    """The one `ddbench run` that measures `method` at `rec`'s IPC (or `ipc`) under `rec`'s evaluation (its
    epochs replaced by `epochs` when given), with `extra` flags after it."""
    cmd = ["ddbench", "run", "--method", method]
    if rec.dataset != DEFAULT_DATASET:
        cmd += ["--dataset", str(rec.dataset)]
    cmd += ["--ipc", ipc or str(rec.ipc), "--seed", str(seed), "--protocol", str(rec.protocol)]
    if rec.model != DEFAULT_MODEL:
        cmd += ["--model", str(rec.model)]
    for role, flag in ROLE_FLAGS:
        value = epochs if role == EPOCHS and epochs is not None else roles.value(rec, role)
        if value is not None:
            cmd += [flag, str(value)]
    return " ".join(shlex.quote(c) for c in (*cmd, *extra))


def matching(db: Path, rec: RunRecord, method: str, roles: SettingRoles) -> list[RunRecord]:
    """Successful runs of `method` at `rec`'s IPC (the images per class it produced), evaluated exactly as `rec` was."""
    rows = query(db, "method = ? AND dataset = ? AND ipc = ? AND protocol = ? AND model = ? AND status = 'ok'",
                 (method, rec.dataset, rec.ipc, rec.protocol, rec.model))
    want = same_evaluation(rec, roles)
    # never the run itself: `run --method random --reference random` compares with the other runs of random
    return [r for r in rows if same_evaluation(r, roles) == want and r.budget is None and r.run_id != rec.run_id]


def _seeds(refs: list[RunRecord]) -> str:
    return ",".join(str(s) for s in sorted({r.seed for r in refs}))


def reference_lines(db: Path, rec: RunRecord, method: str, label: str | None = None,
                    registry: Registry | None = None) -> list[str]:
    """Lines for the terminal, ending with this run's accuracy, the reference's at equal count, the difference.
    `registry`: the plugins the command loaded (their protocols declare which settings count, records.SettingRoles)."""
    from ..store import shipped

    label = label or method
    roles = registry_or_default(registry).setting_roles()
    evaluation = ", ".join(f"{roles.key(rec, role)} {roles.value(rec, role)}" for role, _ in ROLE_FLAGS
                           if roles.value(rec, role) is not None)
    out = [f"== equal count: {rec.method} vs {label} at IPC {rec.ipc} (images per class"
           + (f" this run produced under its {rec.budget:g} s budget" if rec.budget is not None else "")
           + f"), {rec.dataset}, protocol {rec.protocol} ({evaluation}), {rec.model}"]
    width = max(len(rec.method), len(label), len("difference"))
    own = sum(rec.accuracies) / len(rec.accuracies)
    own_std = population_std(list(rec.accuracies)) or 0.0
    out.append(f"  {rec.method:<{width}}  {own:.2f} ± {own_std:.2f} %   this run "
               f"(seed {rec.seed}; ± population std of its {len(rec.accuracies)} networks, as np.std)")
    refs, source = matching(db, rec, method, roles), "local"
    if not refs:
        refs, source = shipped.matching(rec, method, roles), shipped.LABEL
    if not refs:
        out.append(f"  {label:<{width}}  -   no run at IPC {rec.ipc} under this evaluation in {db}; make it with:")
        out.append(f"  {'':<{width}}      {reference_command(rec, method, roles)}")
        out.append(f"  {'difference':<{width}}  -")
        return out
    sp = spread([list(r.accuracies) for r in refs])
    seeds = f"seed{'s' if len(refs) > 1 else ''} {_seeds(refs)}: ± sample std " + (
        f"over seeds ({sp.n_networks} networks)" if sp.over == SEEDS else f"over its {sp.n_networks} networks")
    if source == "local":
        where = f"{len(refs)} run(s) in {db}, {seeds}"
    else:
        where = (f"{shipped.LABEL}, {Path(refs[0].meta['shipped']).name}, {seeds}, "
                 f"made by e.g. `{refs[0].meta['command']}`")
    out.append(f"  {label:<{width}}  {sp.text()} %   {where}")
    out.append(f"  {'difference':<{width}}  {own - sp.mean:+.2f} points   no p-value: one run is one seed of "
               f"{rec.method}, and the t-test is over method-seed means (>= {MIN_SEEDS} per side; networks trained "
               "on one set are not independent samples): `ddbench compare --seeds 0,1` tests them")
    return out
