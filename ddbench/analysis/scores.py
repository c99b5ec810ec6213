"""DD-Ranking's scores (NUS-HPC-AI-Lab/DD-Ranking, arXiv 2505.13300) and the cross-architecture table,
computed from rows of the results database.

Definitions (DD-Ranking `ddranking/metrics/hard_label.py`, `soft_label.py`, `aug_robust.py`):

- IOR, improvement over random = Acc(synthetic) - Acc(random real subset of the same IPC, evaluated the same
  way: same dataset, architecture, protocol and protocol settings).
- HLR, hard-label recovery = Acc(full real training set, hard labels) - Acc(synthetic). Lower is better.
- LRS, label-robust score = (e^alpha - e^-1) / (e - e^-1) with alpha = w * IOR - (1 - w) * HLR, w = 0.5.
- ARS, augmentation-robust score = the same map of beta = g * (syn_aug - rdm_aug) + (1 - g) * (syn_noaug -
  rdm_noaug), g = 0.5: IOR with augmentation and IOR without it, weighted.

**Units.** Accuracies, IOR and HLR are in percentage points here, as everywhere in ddbench. The exponent takes
them as **fractions** (percentage points / 100): alpha and beta then lie in [-1, 1] and the normalisation
(e^x - e^-1) / (e - e^-1) maps that interval onto [0, 1], with 0 for the worst possible set (no gain over
random and no recovery of the full-data accuracy), 1 for the best, and e^0 -> 0.269 for a set that is as good
as random and as good as the full data weighs out. LRS and ARS are returned as fractions in [0, 1] and shown
x100. DD-Ranking's code feeds percentage points into `np.exp`, which is not what its normalisation assumes: an
IOR of 10 points gives e^5, far outside [0, 1], and the score then ranks by an exponential of the raw gap.
`robust_score` refuses an exponent outside [-1, 1], so that mistake cannot be made here.

Where the references come from: they are runs like any other, in the same database. The random reference is
a `random` run of the same dataset, architecture, protocol, IPC and protocol settings (any seed; its accuracy,
like every cell's, is the mean of the seed means, ddbench/core/stats.py), at equal count: a budget run's IPC is the \
number of images per class it produced, so it is paired
with random real at that IPC. Where the database has none, the table shipped with the package (ddbench/store/shipped.py,
same data fingerprint) stands in, marked `shipped reference` and never pooled with local runs; where neither
has it, `missing` names the command that makes it. The full-data reference is a `full` run \
(ddbench/default_plugins/full_data_method.py) of the same dataset, architecture and
protocol; its IPC and epoch count are ignored (the whole training set is one thing, and it needs far fewer
epochs than a 100-image set). Settings that only choose an implementation or its speed and the number of
networks (a sample size: runs are pooled) are ignored when matching: they do not change what is computed.
Which settings those are, which one counts epochs and which one switches augmentation on (ARS's axis), the
protocol declares (`Param(role=...)`, records.SettingRoles); the scores name no protocol's keys.

The references are the methods registered with `Method.role` "random-real" and "full-data" in the registry
the command loaded (plugins.toml's allow and deny lists applied); a caller that passes no registry gets the
default plugins.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from ..core.errors import DDBenchError
from ..core.records import RunRecord, SettingRoles, evaluation_settings, requested_ipc
from ..core.roles import AUGMENTATION, EPOCHS, FULL_ROLE, RANDOM_ROLE
from ..core.stats import NETWORKS, Spread, spread
from ..host.plugins import Registry, registry_or_default


def reference_names(registry: Registry) -> tuple[str, str]:
    """The names of the methods registered with the random-real and full-data roles (the host names none)."""
    roles = {getattr(m, "role", ""): name for name, m in registry.methods.items()}
    return roles.get(RANDOM_ROLE, ""), roles.get(FULL_ROLE, "")


LRS_WEIGHT = 0.5  # NUS-HPC-AI-Lab/DD-Ranking ddranking/metrics/hard_label.py compute_metrics(lrs_lambda=0.5)
ARS_WEIGHT = 0.5  # NUS-HPC-AI-Lab/DD-Ranking ddranking/metrics/aug_robust.py (ars_lambda, weighting with/without aug)
FULL_EPOCHS = 20  # the suggested epochs of a missing full-data run (default_plugins/full_data_method.py docstring)
FULL_IGNORED_ROLES = frozenset({EPOCHS})  # the full-data reference's epochs are its own (docstring above)


# --------------------------------------------------------------------------------------------------
# The scores, as pure functions
# --------------------------------------------------------------------------------------------------


def _accuracy(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 100.0):
        raise DDBenchError(f"{name}={value!r} is not an accuracy; allowed: a percentage in [0, 100]")
    return value


def _weight(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise DDBenchError(f"{name}={value!r} is not a weight; allowed: [0, 1]")
    return value


def ior(acc_syn: float, acc_random: float) -> float:
    """Improvement over random, in percentage points: Acc(syn) - Acc(random real, same IPC, same evaluation)."""
    return _accuracy("acc_syn", acc_syn) - _accuracy("acc_random", acc_random)


def hlr(acc_full: float, acc_syn: float) -> float:
    """Hard-label recovery, in percentage points: Acc(full real set) - Acc(syn). Lower is better."""
    return _accuracy("acc_full", acc_full) - _accuracy("acc_syn", acc_syn)


def robust_score(exponent: float) -> float:
    """(e^x - e^-1) / (e - e^-1) for x a FRACTION in [-1, 1]; the result is in [0, 1]."""
    x = float(exponent)
    if not (math.isfinite(x) and -1.0 <= x <= 1.0):
        raise DDBenchError(f"exponent {x!r} is outside [-1, 1]; pass fractions (percentage points / 100), "
                           "not percentages")
    return (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def lrs(ior_points: float, hlr_points: float, w: float = LRS_WEIGHT) -> float:
    """Label-robust score in [0, 1] from IOR and HLR in percentage points (converted to fractions for alpha)."""
    w = _weight("w", w)
    for name, v in (("ior", ior_points), ("hlr", hlr_points)):
        if not (math.isfinite(float(v)) and -100.0 <= float(v) <= 100.0):
            raise DDBenchError(f"{name}={v!r} percentage points is impossible; allowed: [-100, 100]")
    alpha = w * float(ior_points) / 100.0 - (1.0 - w) * float(hlr_points) / 100.0
    return robust_score(alpha)


def ars(syn_aug: float, random_aug: float, syn_noaug: float, random_noaug: float, w: float = ARS_WEIGHT) -> float:
    """Augmentation-robust score in [0, 1] from four accuracies in % (the IORs with and without augmentation,
    as fractions, weighted w and 1 - w)."""
    w = _weight("w", w)
    beta = w * ior(syn_aug, random_aug) / 100.0 + (1.0 - w) * ior(syn_noaug, random_noaug) / 100.0
    return robust_score(beta)


# --------------------------------------------------------------------------------------------------
# From database rows
# --------------------------------------------------------------------------------------------------


def as_records(rows: Iterable[Any]) -> list[RunRecord]:
    """Run records as they are; row dicts (scripts, tests) read as the store reads its rows."""
    return [r if isinstance(r, RunRecord) else RunRecord.from_columns(r) for r in rows]


def augmented(row: RunRecord, roles: SettingRoles) -> bool | None:
    """Whether the row's protocol trained with augmentation (None when the protocol has no such switch)."""
    value = roles.value(row, AUGMENTATION)
    return None if value is None else bool(value)


def epochs_of(row: RunRecord, roles: SettingRoles) -> int | None:
    value = roles.value(row, EPOCHS)
    return int(value) if value is not None else None


def _spread(rows: list[RunRecord]) -> Spread:
    """The runs' accuracy as the report computes it (ddbench/core/stats.py): mean of the seed means ± their sample
    std, over seeds; over the networks of a one-seed cell."""
    return spread([[float(a) for a in (r.accuracies or [])] for r in rows])


@dataclass
class Scored:
    """One cell (method, budget, IPC under one dataset/architecture/protocol/settings) and its scores.

    Accuracies, IOR and HLR in percentage points; LRS and ARS as fractions in [0, 1] (None when a reference
    run is missing: `missing` says which, and the command that would make it)."""

    method: str
    dataset: str
    model: str
    protocol: str
    ipc: int
    budget: float | None
    augmented: bool | None
    epochs: int | None
    accuracy: float | None  # mean of the seed means (stats.spread)
    std: float | None  # sample std over seeds, or over the networks of a one-seed cell (`std_over`)
    n: int  # networks, all seeds
    random_accuracy: float | None = None
    full_accuracy: float | None = None
    ior: float | None = None
    hlr: float | None = None
    lrs: float | None = None
    ars: float | None = None
    random_runs: list[str] = field(default_factory=list)
    random_source: str | None = None  # "local", or shipped.LABEL when the shipped table gave the reference
    full_runs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    std_over: str | None = None  # stats.SEEDS or stats.NETWORKS
    n_seeds: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def accuracy_text(self) -> str:
        """`50.62 ± 0.88 (2 seeds)`: what the ± is over, as in the report's tables."""
        if self.accuracy is None:
            return "-"
        sp = Spread(self.accuracy, self.std, self.std_over or NETWORKS, self.n_seeds, self.n)
        return f"{sp.text()} ({sp.label()})"


def _key(row: RunRecord, roles: SettingRoles, ignore: Iterable[str] = ()) -> tuple:
    return (row.dataset, row.model, row.protocol, evaluation_settings(row, roles, ignore))


def _reference_index(refs: list[RunRecord], shipped: list[RunRecord], random_method: str, full_method: str,
                     roles: SettingRoles) -> tuple[dict, dict, dict]:
    """(random_of, full_of, shipped_of): the reference runs by the key of the cells they serve (a random run at
    its IPC; a full-data run whatever its epochs; a shipped random row at its IPC)."""
    random_of: dict[tuple, list[RunRecord]] = {}
    full_of: dict[tuple, list[RunRecord]] = {}
    shipped_of: dict[tuple, list[RunRecord]] = {}
    for r in shipped:
        if r.method == random_method:
            shipped_of.setdefault((r.ipc,) + _key(r, roles), []).append(r)
    for r in refs:
        if r.method == random_method:
            random_of.setdefault((r.ipc,) + _key(r, roles), []).append(r)
        if r.method == full_method:
            full_of.setdefault(_key(r, roles, FULL_IGNORED_ROLES), []).append(r)
    return random_of, full_of, shipped_of


def score_rows(rows: list, w: float = LRS_WEIGHT, ars_w: float = ARS_WEIGHT,
               random_method: str | None = None, full_method: str | None = None,
               references: list | None = None, shipped: list | None = None,
               registry: Registry | None = None) -> list[Scored]:
    """IOR/HLR/LRS/ARS of every cell in `rows` (successful runs; mean of the seed means), references looked up in
    `references` (default: `rows`).

    Rows are run records or row dicts. A cell's accuracy is that of its runs in `rows` only; the random-real
    and full-data references, and the other augmentation setting ARS pairs a cell with, come from `references`
    (pass the whole database): matched, not computed. A cell without its reference gets None and says which run
    is missing and the command that makes it; `shipped` (rows of the shipped reference table) stands in for a
    random reference the database lacks. `registry` names the references and the protocols' setting roles.
    """
    registry = registry_or_default(registry)
    roles = registry.setting_roles()
    if random_method is None or full_method is None:
        names = reference_names(registry)
        random_method, full_method = random_method or names[0], full_method or names[1]
    rows = as_records(rows)
    refs = [r for r in (rows if references is None else as_records(references)) if r.ok and r.accuracies]
    random_of, full_of, shipped_of = _reference_index(refs, as_records(shipped or []), random_method, full_method,
                                                      roles)

    switch: dict[tuple, str | None] = {}  # a cell's augmentation setting (its protocol's, or its runs')
    firsts: dict[tuple, RunRecord] = {}  # a run of each cell: the missing twin's command is made from it

    def scored_cells(source: list[RunRecord]) -> dict[tuple, Scored]:
        cells: dict[tuple, list[RunRecord]] = {}
        for r in source:
            if r.ok and r.accuracies and r.method != full_method:
                cells.setdefault((r.method, r.budget, r.ipc) + _key(r, roles), []).append(r)
        switch.update({key: roles.key(members[0], AUGMENTATION) for key, members in cells.items()})
        firsts.update({key: members[0] for key, members in cells.items()})
        return {key: _score_cell(key, members, random_of, full_of, w, roles, shipped_of, random_method, full_method)
                for key, members in cells.items()}

    index = scored_cells(rows)
    others: dict[tuple, Scored] | None = None  # the references' cells, scored only if a twin is not in `rows`
    # ARS: pair each cell with its twin under the other augmentation setting.
    for key, s in index.items():
        if s.augmented is None:
            continue
        twin = _twin(index, key, switch[key])
        if twin is None and references is not None:
            others = scored_cells(refs) if others is None else others
            twin = _twin(others, key, switch[key])
        if twin is None:
            s.missing.append(_twin_missing(s, firsts[key], switch[key], roles))
            continue
        aug, noaug = (s, twin) if s.augmented else (twin, s)
        if aug.random_accuracy is not None and noaug.random_accuracy is not None:
            s.ars = ars(aug.accuracy, aug.random_accuracy, noaug.accuracy, noaug.random_accuracy, ars_w)
    return list(index.values())


def _score_cell(key: tuple, members: list[RunRecord], random_of: dict, full_of: dict, w: float,
                roles: SettingRoles, shipped_of: dict | None = None, random_method: str = "",
                full_method: str = "") -> Scored:
    method, budget, ipc = key[:3]
    first = members[0]
    sp = _spread(members)
    s = Scored(method, first.dataset, first.model, first.protocol, ipc, budget,
               augmented(first, roles), epochs_of(first, roles), sp.mean, sp.std, sp.n_networks,
               std_over=sp.over, n_seeds=sp.n_seeds)
    rnd, s.random_source = random_of.get((ipc,) + _key(first, roles), []), "local"
    if not rnd:  # the shipped table, on the very same data only
        from ..store.shipped import LABEL, fingerprint

        data = fingerprint(first)
        rnd = [r for r in (shipped_of or {}).get((ipc,) + _key(first, roles), []) if data and fingerprint(r) == data]
        s.random_source = LABEL
    full = full_of.get(_key(first, roles, FULL_IGNORED_ROLES), [])
    if rnd:
        s.random_accuracy = _spread(rnd).mean
        s.random_runs = [r.run_id for r in rnd]
        s.ior = ior(s.accuracy, s.random_accuracy)
    else:
        from .reference import reference_command

        s.random_source = None
        s.missing.append(f"random IPC {ipc} (equal count): {reference_command(first, random_method, roles)}")
    if full:
        s.full_accuracy = _spread(full).mean
        s.full_runs = [r.run_id for r in full]
        s.hlr = hlr(s.full_accuracy, s.accuracy)
    else:
        from .reference import reference_command

        s.missing.append("full data (N = the training set's images per class; `full` names it if wrong): "
                         + reference_command(first, full_method or "full", roles, ipc="N", epochs=FULL_EPOCHS))
    if s.ior is not None and s.hlr is not None:
        s.lrs = lrs(s.ior, s.hlr, w)
    return s


def _twin_missing(s: Scored, first: RunRecord, switch: str | None, roles: SettingRoles) -> str:
    """What ARS lacks: the same cell under the other augmentation setting, and the command that makes it."""
    from .reference import reference_command

    what = "no-augmentation twin" if s.augmented else "augmentation twin"
    extra = ("--set", f"eval.{switch}={'false' if s.augmented else 'true'}")
    if first.budget is not None:  # the same budget run: its --ipc is the one asked for, not the one it made
        extra = ("--budget", f"{first.budget:g}", *extra)
    return f"{what}: {reference_command(first, first.method, roles, ipc=str(requested_ipc(first)), extra=extra)}"


def _twin(index: dict[tuple, Scored], key: tuple, switch: str | None) -> Scored | None:
    """The cell that differs from `key` only in its augmentation setting (`switch`, the protocol's key)."""
    method, budget, ipc, dataset, model, protocol, settings = key
    flipped = []
    for k, v in settings:
        if k == switch:
            v = repr(not (v == "True"))
        flipped.append((k, v))
    return index.get((method, budget, ipc, dataset, model, protocol, tuple(flipped)))


__all__ = ["ior", "hlr", "lrs", "ars", "robust_score", "score_rows", "augmented", "reference_names", "Scored",
           "LRS_WEIGHT", "ARS_WEIGHT"]
