"""Which runs a report shows, and the cells and sections they form (report.py's first job; the renderers are
report_text.py's, the plots report_plots.py's).

Which runs count: per config hash, the latest `ok` run (else the latest failed one); then per cell, seed and
evaluation settings (records.evaluation_settings: the protocol settings that change accuracy), the latest of
those, so a cell re-run with other method settings shows its newest result, while runs of the same cell under
other evaluation settings (no augmentation, other epochs) form their own section instead of replacing it.

A cell is the mean ± sample std of its method seeds' means (each seed: the mean of its evaluation networks), or,
with one seed, of that seed's networks; it says which (`2 seeds` / `1 seed, 5 nets`). Its p is Welch's t-test
(stats.seed_test) of those seed means against the reference method's at the same IPC, i.e. at equal count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..core.records import RunRecord, SettingRoles, evaluation_settings, requested_ipc
from ..core.roles import EPOCHS
from ..core.stats import Spread, Test, p_text, seed_test, spread, stars
from ..host.plugins import Registry, registry_or_default
from ..store.results import query

# --------------------------------------------------------------------------------------------------
# Selecting rows
# --------------------------------------------------------------------------------------------------


def select_rows(db: Path, hashes: Iterable[str] | None = None, methods: Iterable[str] | None = None,
                dataset: str | None = None, protocol: str | None = None,
                registry: Registry | None = None) -> tuple[list[RunRecord], int]:
    """The runs a report shows, and how many older runs of the same cells and seeds it left out. `registry`: the
    plugins the command loaded (their protocols say which settings tell cells apart, records.SettingRoles)."""
    roles = registry_or_default(registry).setting_roles()
    by_hash = latest_per_config(db, hashes=hashes, methods=methods, dataset=dataset, protocol=protocol)
    by_seed: dict[tuple, RunRecord] = {}
    for r in sorted(by_hash, key=lambda r: r.created or 0):
        by_seed[_cell_key(r, roles) + (r.seed,)] = r
    chosen = sorted(by_seed.values(), key=lambda r: r.created or 0)
    return chosen, len(by_hash) - len(chosen)


def latest_per_config(db: Path, hashes: Iterable[str] | None = None, methods: Iterable[str] | None = None,
                      dataset: str | None = None, protocol: str | None = None) -> list[RunRecord]:
    """Per config hash (settings and seed), its latest `ok` run, else its latest failed one, after the filters:
    every setting a run was made with, before `select_rows` keeps one run per cell and seed
    (report_curves reads iteration sweeps from it)."""
    rows = query(Path(db))
    if hashes is not None:
        wanted = set(hashes)
        rows = [r for r in rows if r.config_hash in wanted]
    if methods is not None:
        keep = set(methods)
        rows = [r for r in rows if r.method in keep]
    if dataset is not None:
        rows = [r for r in rows if r.dataset == dataset]
    if protocol is not None:
        rows = [r for r in rows if r.protocol == protocol]
    by_hash: dict[str, RunRecord] = {}
    for r in rows:  # ordered by `created`: later wins, ok beats failed
        prev = by_hash.get(r.config_hash)
        if prev is None or r.status == "ok" or prev.status != "ok":
            by_hash[r.config_hash] = r
    return list(by_hash.values())


def _cell_key(r: RunRecord, roles: SettingRoles) -> tuple:
    """The cell a run was asked for: a budget run re-run with other settings replaces the older one even when
    it produced another number of images per class."""
    return (r.dataset, r.protocol, r.model, evaluation_settings(r, roles), r.method, r.budget, requested_ipc(r))


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    method: str
    budget: float | None
    ipc: int
    ok: list[RunRecord] = field(default_factory=list)
    failed: list[RunRecord] = field(default_factory=list)
    test: Test | None = None  # against the section's reference at this IPC (stats.seed_test); None: no reference
    is_reference: bool = False
    grid: Path | None = None  # copied image grid, relative to the report folder

    @property
    def accuracies(self) -> list[float]:
        """Every network of every seed, pooled."""
        return [float(a) for r in self.ok for a in (r.accuracies or [])]

    @property
    def per_seed(self) -> list[list[float]]:
        """One list of network accuracies per method seed (a run): the samples of `spread` and `test`."""
        return [[float(a) for a in r.accuracies] for r in self.ok if r.accuracies]

    @property
    def spread(self) -> Spread:
        """mean ± sample std over seeds (over the networks of a one-seed cell), and what it is over."""
        return spread(self.per_seed)

    @property
    def mean(self) -> float | None:
        return self.spread.mean

    @property
    def std(self) -> float | None:
        return self.spread.std

    @property
    def p_value(self) -> float | None:
        """Welch over seed means (None with fewer than 2 seeds on a side: `test.reason`)."""
        return None if self.test is None else self.test.p

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.ok})

    def _avg(self, key: str) -> float | None:
        vals = [float(getattr(r, key)) for r in self.ok if getattr(r, key) is not None]
        return sum(vals) / len(vals) if vals else None

    @property
    def distill_seconds(self) -> float | None:
        return self._avg("distill_seconds")

    @property
    def eval_seconds(self) -> float | None:
        return self._avg("eval_seconds")

    @property
    def images(self) -> int | None:
        vals = [r.images for r in self.ok if r.images is not None]
        return vals[0] if vals else None

    @property
    def stars(self) -> str:
        return stars(self.p_value)

    def text(self, digits: int = 2) -> str:
        """`78.20 ± 1.30 (3 seeds, p=0.004 **)`, `61.00 ± 0.71 (1 seed, 2 nets, no p)`; FAILED when no seed
        succeeded."""
        if self.mean is None:
            if self.failed:
                error = last_line(self.failed[-1].error)
                return f"FAILED: {error[:57] + '...' if len(error) > 60 else error}"
            return "no eval" if self.ok else "-"
        sp = self.spread
        notes = [sp.label()]
        if self.is_reference:
            notes.append("ref")
        elif self.test is not None:
            p = self.p_value
            notes.append("no p" if p is None or math.isnan(p)
                         else f"p={p_text(p)}{' ' + self.stars if self.stars else ''}")
        out = f"{sp.text(digits)} ({', '.join(notes)})"
        if self.failed:
            out += f" [{len(self.failed)} failed]"
        return out


@dataclass
class Section:
    dataset: str
    protocol: str
    model: str
    reference: str | None
    settings: tuple = ()  # records.evaluation_settings of every run in the section
    distinct: tuple = ()  # the settings that tell this section from its siblings (same dataset/protocol/model)
    cells: dict[tuple, Cell] = field(default_factory=dict)  # (method, budget, ipc) -> Cell
    variants: list[tuple[str, float | None]] = field(default_factory=list)
    ipcs: list[int] = field(default_factory=list)
    rows: list[RunRecord] = field(default_factory=list)
    roles: SettingRoles = field(default_factory=SettingRoles, repr=False)  # of the protocols, as summarise read them
    standard_epochs: int | None = None  # the protocol's Protocol.standard_epochs, when it is loaded and claims one

    @property
    def title(self) -> str:
        extra = "".join(f" · {k}={v}" for k, v in self.distinct)
        cut = f" · cut protocol: {self.cut[0]} of {self.cut[1]} epochs" if self.cut else ""
        return f"{self.dataset} · protocol {self.protocol} · {self.model}{extra}{cut}"

    @property
    def cut(self) -> tuple[str, int] | None:
        """(the epochs its networks trained, the published protocol's) when every run trained fewer epochs than the
        protocol it follows claims (Protocol.standard_epochs): its accuracies are not comparable with the papers'."""
        if not self.standard_epochs:
            return None
        epochs = {self.roles.value(r, EPOCHS) for r in self.rows}
        if not epochs or not all(isinstance(e, int) and not isinstance(e, bool) for e in epochs):
            return None
        if max(epochs) >= self.standard_epochs:
            return None
        return "/".join(str(e) for e in sorted(epochs)), self.standard_epochs

    @property
    def slug(self) -> str:
        extra = "".join(f"-{k}{v}" for k, v in self.distinct)
        return "".join(c if c.isalnum() or c in "-_." else "_"
                       for c in f"{self.dataset}-{self.protocol}-{self.model}{extra}")

    def cell(self, variant: tuple[str, float | None], ipc: int) -> Cell | None:
        return self.cells.get((variant[0], variant[1], ipc))

    @property
    def budgets(self) -> list[float]:
        return sorted({b for _, b in self.variants if b is not None})


def variant_name(variant: tuple[str, float | None]) -> str:
    method, budget = variant
    return method if budget is None else f"{method} ({budget:g} s)"


def summarise(rows: list[RunRecord], reference: str | None = None, method_order: list[str] | None = None,
              registry: Registry | None = None) -> list[Section]:
    registry = registry_or_default(registry)
    roles = registry.setting_roles()
    standard = {name: getattr(p, "standard_epochs", None) for name, p in registry.protocols.items()}
    sections: dict[tuple, Section] = {}
    order = list(method_order or [])
    for r in rows:
        if r.method not in order:
            order.append(r.method)
    if reference is None:
        reference = order[0] if order else None  # the first method listed (or seen) is the reference
    for r in rows:
        key = (r.dataset, r.protocol, r.model, evaluation_settings(r, roles))
        sec = sections.setdefault(key, Section(*key[:3], reference=reference, settings=key[3], roles=roles,
                                               standard_epochs=standard.get(r.protocol)))
        sec.rows.append(r)
        ck = (r.method, r.budget, r.ipc)
        cell = sec.cells.setdefault(ck, Cell(*ck))
        (cell.ok if r.status == "ok" else cell.failed).append(r)
    _name_siblings(list(sections.values()))
    for sec in sections.values():
        sec.ipcs = sorted({ipc for _, _, ipc in sec.cells})
        variants = {(m, b) for m, b, _ in sec.cells}
        sec.variants = sorted(variants, key=lambda v: (order.index(v[0]) if v[0] in order else len(order),
                                                       -1 if v[1] is None else v[1]))
        if reference is None:
            continue
        for (method, budget, ipc), cell in sec.cells.items():
            ref = sec.cells.get((reference, None, ipc))
            if ref is None:
                continue
            if cell is ref:
                cell.is_reference = True
                continue
            if cell.per_seed:
                cell.test = seed_test(cell.per_seed, ref.per_seed)
    return [sections[k] for k in sorted(sections, key=lambda k: tuple(str(x) for x in k))]


def shipped_name(method: str) -> str:
    """The row name of a reference taken from the shipped table (shipped.row_name)."""
    from ..store.shipped import row_name

    return row_name(method)


def add_shipped_references(sections: list[Section]) -> None:
    """Where a section has no reference run at an IPC its cells reached, the shipped table's rows of the same data
    (fingerprint) and evaluation stand in: a row of their own, `random (shipped reference)`, that the cells of
    that IPC are t-tested against. Never pooled with local runs: an IPC with a local reference keeps it."""
    from ..store.shipped import fingerprint, shipped_records

    tables: dict[str, list[RunRecord]] = {}
    for sec in sections:
        if sec.reference is None:
            continue
        rows = tables.setdefault(sec.dataset, shipped_records(sec.dataset))
        variant = (shipped_name(sec.reference), None)
        for ipc in list(sec.ipcs):
            if (sec.reference, None, ipc) in sec.cells:
                continue
            cells = [c for (_, _, i), c in sec.cells.items() if i == ipc and c.accuracies]
            data = {fingerprint(r) for c in cells for r in c.ok} - {None}
            refs = [r for r in rows if r.method == sec.reference and r.ipc == ipc and fingerprint(r) in data
                    and (r.protocol, r.model, evaluation_settings(r, sec.roles))
                    == (sec.protocol, sec.model, sec.settings)]
            if not refs:
                continue
            ref = sec.cells[(variant[0], None, ipc)] = Cell(variant[0], None, ipc, ok=refs, is_reference=True)
            for cell in cells:
                cell.test = seed_test(cell.per_seed, ref.per_seed)
            if variant not in sec.variants:
                sec.variants.append(variant)


def missing_references(sec: Section) -> list[str]:
    """`IPC 57: ddbench run --method random --ipc 57 ...` for each IPC whose cells have no reference run."""
    if sec.reference is None:
        return []
    from .reference import reference_command

    out = []
    for ipc in sec.ipcs:
        if any(m in (sec.reference, shipped_name(sec.reference)) and b is None and i == ipc for m, b, i in sec.cells):
            continue
        cell = next((c for (m, b, i), c in sorted(sec.cells.items(), key=lambda kv: str(kv[0]))
                     if i == ipc and c.ok and c.accuracies), None)
        if cell is not None:
            out.append(f"IPC {ipc}: {reference_command(cell.ok[0], sec.reference, sec.roles)}")
    return out


def _name_siblings(sections: list[Section]) -> None:
    """Sections of one dataset/protocol/model under different evaluation settings get the differing keys in
    their titles (`dsa=False`, `epochs=300`), so no two sections read alike."""
    groups: dict[tuple, list[Section]] = {}
    for sec in sections:
        groups.setdefault((sec.dataset, sec.protocol, sec.model), []).append(sec)
    for group in groups.values():
        if len(group) < 2:
            continue
        dicts = [dict(sec.settings) for sec in group]
        keys = sorted({k for d in dicts for k in d})
        differing = [k for k in keys if len({d.get(k, "-") for d in dicts}) > 1]
        for sec, d in zip(group, dicts):
            sec.distinct = tuple((k, d.get(k, "-")) for k in differing)


def last_line(text: str | None) -> str:
    """The last line of an error (its message under a traceback), or `unknown error`."""
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "unknown error"
