"""Reports from the results database alone: terminal table, report.md, results.csv, plots, image grids.

One section per (dataset, protocol, evaluation model, evaluation settings). In a section, one row per method (and per
generation budget, for methods given one), one column per IPC: the images per class a run produced (a budget
run's IPC is the one it declared, so its row fills the columns of the IPCs it reached). A cell is the mean ± sample
std of its method seeds' means (each seed: the mean of its evaluation networks), or, with one seed, of that seed's
networks; it says which (`2 seeds` / `1 seed, 5 nets`). Its p is Welch's t-test (scipy.stats.ttest_ind,
equal_var=False) of those seed means against the reference method's at the same IPC, i.e. at equal count:
* p < 0.05, ** p < 0.01, *** p < 0.001; with fewer than 2 seeds on a side there is none, and the report says
why. The test over every network pooled (which treats networks trained on one set as independent) is in
report.md and results.csv, labelled as such. The statistics are ddbench/stats.py's, as data (`Cell.spread`,
`Cell.test`), for any other view of the same cells. A cell whose equal-count reference is missing says so,
with the command that makes it.

Which runs count: per config hash, the latest `ok` run (else the latest failed one); then per cell, seed and
evaluation settings (records.evaluation_settings: the protocol settings that change accuracy), the latest of
those, so a cell re-run with other method settings shows its newest result, while runs of the same cell under
other evaluation settings (no augmentation, other epochs) form their own section instead of replacing it.
"""
from __future__ import annotations

import csv
import io
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .atomic import atomic_write_json, atomic_write_text
from .plugins import Registry, registry_or_default
from .records import RunRecord, SettingRoles, evaluation_settings, requested_ipc
from .roles import EPOCHS
from .plots import figure, finish
from .report_curves import plot_accuracy_vs_seconds
from .results import query
from .stats import STARS, Spread, Test, p_text, seed_test, spread, stars, welch  # noqa: F401 - STARS re-exported
from .tables import markdown_table, plain_table

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
        """`78.20 ± 1.30 (3 seeds, p=0.004 **)`, `61.00 ± 0.71 (1 seed, 2 nets, no p)`; FAILED when no seed succeeded."""
        if self.mean is None:
            if self.failed:
                error = _last_line(self.failed[-1].error)
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
    standard = {name: getattr(p, "standard_epochs", None) for name, p in registry.items["protocols"].items()}
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
    from .shipped import row_name

    return row_name(method)


def add_shipped_references(sections: list[Section]) -> None:
    """Where a section has no reference run at an IPC its cells reached, the shipped table's rows of the same data
    (fingerprint) and evaluation stand in: a row of their own, `random (shipped reference)`, that the cells of
    that IPC are t-tested against. Never pooled with local runs: an IPC with a local reference keeps it."""
    from .shipped import fingerprint, shipped_records

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


# --------------------------------------------------------------------------------------------------
# Text tables
# --------------------------------------------------------------------------------------------------


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def accuracy_table(sec: Section) -> tuple[list[str], list[list[str]]]:
    header = ["method"] + [f"IPC {ipc}" for ipc in sec.ipcs]
    body = []
    for v in sec.variants:
        body.append([variant_name(v)] + [(c.text() if (c := sec.cell(v, ipc)) else "-") for ipc in sec.ipcs])
    return header, body


def time_table(sec: Section) -> tuple[list[str], list[list[str]]]:
    header = ["method"] + [f"IPC {ipc}" for ipc in sec.ipcs]
    body = []
    for v in sec.variants:
        cells = []
        for ipc in sec.ipcs:
            c = sec.cell(v, ipc)
            cells.append("-" if c is None or not c.ok
                         else f"{_seconds(c.distill_seconds)} / {_seconds(c.eval_seconds)}")
        body.append([variant_name(v)] + cells)
    return header, body


def _settings_text(sec: Section, kind: str, method: str | None = None) -> str:
    """`epochs=300, n_models=5`, or which keys differ between runs."""
    values: dict[str, set] = {}
    for r in sec.rows:
        if method is not None and r.method != method:
            continue
        for k, v in ((r.config or {}).get(kind) or {}).items():
            values.setdefault(k, set()).add(repr(v) if isinstance(v, (list, dict)) else str(v))
    if not values:
        return "(defaults, none)"
    parts = []
    for k in sorted(values):
        vs = sorted(values[k])
        parts.append(f"{k}={vs[0]}" if len(vs) == 1 else f"{k}={{{', '.join(vs)}}} (differs between runs)")
    return ", ".join(parts)


def _n_text(sec: Section) -> str:
    seeds = sorted({len(c.seeds) for c in sec.cells.values() if c.ok})
    nets = sorted({r.n_eval_models for r in sec.rows if r.status == "ok" and r.n_eval_models})
    seeds_t = "/".join(map(str, seeds)) or "0"
    nets_t = "/".join(map(str, nets)) or "0"
    return f"{seeds_t} seed(s) x {nets_t} evaluation network(s) per cell"


def tested(sec: Section) -> list[tuple[tuple[str, float | None], int, Cell]]:
    """(variant, IPC, cell) of every cell tested against the reference, in table order."""
    return [(v, ipc, c) for v in sec.variants for ipc in sec.ipcs
            if (c := sec.cell(v, ipc)) is not None and c.test is not None and c.mean is not None]


def no_p_text(sec: Section) -> str | None:
    """One line: which cells have no p and why (fewer than 2 method seeds on a side)."""
    missing = [f"{variant_name(v)} IPC {ipc}" for v, ipc, c in tested(sec) if c.p_value is None]
    if not missing:
        return None
    return (f"no p-value for {', '.join(missing)}: fewer than 2 method seeds on a side (this cell's or "
            f"{sec.reference}'s); the t-test is over method-seed means, since networks trained on one set are not "
            "independent samples (more seeds: `compare --seeds 0,1`)")


def pooled_text(sec: Section) -> str | None:
    """The Welch p over all networks pooled, per tested cell, labelled: shown beside the seed-mean test, never
    instead of it."""
    parts = [f"{variant_name(v)} IPC {ipc} p={p_text(c.test.p_pooled)}" for v, ipc, c in tested(sec)
             if c.test.p_pooled is not None]
    if not parts:
        return None
    return ("Welch p over all networks pooled (counts networks trained on one set as independent samples, so it "
            "overstates; for comparison only): " + "; ".join(parts))


def _header(sec: Section) -> str:
    return (f"accuracy % (mean ± sample std over method seeds, each seed the mean of its networks; a one-seed cell: "
            f"over its networks; {_n_text(sec)}; Welch t-test of seed means vs {sec.reference} at equal count: "
            "the same IPC)")


def terminal_text(sections: list[Section]) -> str:
    if not sections:
        return "(no runs to report)"
    out = []
    for sec in sections:
        out.append(f"== {sec.title} — {_header(sec)}")
        out.append(plain_table(*accuracy_table(sec)))
        if (why := no_p_text(sec)) is not None:
            out.append(f"   {why}")
        missing = missing_references(sec)
        if missing:
            out.append(f"   no {sec.reference} run at equal count for these IPCs; make each with:")
            out += [f"     {m}" for m in missing]
        out.append("")
        out.append("   time per run, seconds (distill / eval, mean over seeds)")
        out.append(plain_table(*time_table(sec)))
        failed = [c for c in sec.cells.values() if c.failed]
        for c in failed:
            for r in c.failed:
                out.append(f"   FAILED {r.method} ipc={r.ipc} seed={r.seed} "
                           f"(run {r.run_id}): {_last_line(r.error)}")
        out.append("")
    out.append("p-value marks: * < 0.05, ** < 0.01, *** < 0.001")
    return "\n".join(out)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "unknown error"


# --------------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------------

# accuracy_mean / accuracy_std: over seeds (std_over "seeds", sample std of the seed means), or over the networks
# of a one-seed cell (std_over "networks"); p_value: Welch over seed means ("ref" for the reference, empty with
# fewer than 2 seeds on a side: no_p_reason); p_value_pooled_networks: Welch over every network pooled, labelled.
CSV_COLUMNS = ["dataset", "protocol", "model", "method", "budget", "ipc", "status", "n_seeds", "n_failed",
               "n_accuracies", "accuracy_mean", "accuracy_std", "std_over", "reference", "p_value", "significance",
               "p_value_pooled_networks", "no_p_reason",
               "distill_seconds_mean", "eval_seconds_mean", "images", "run_ids", "error", "eval_settings"]


def csv_text(sections: list[Section]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for sec in sections:
        for v in sec.variants:
            for ipc in sec.ipcs:
                c = sec.cell(v, ipc)
                if c is None:
                    continue
                status = "ok" if c.ok and not c.failed else ("failed" if not c.ok else "partial")
                w.writerow([
                    sec.dataset, sec.protocol, sec.model, c.method, "" if c.budget is None else c.budget, ipc, status,
                    len(c.seeds), len(c.failed), len(c.accuracies), _num(c.mean), _num(c.std),
                    c.spread.over if c.accuracies else "", sec.reference,
                    "ref" if c.is_reference else _num(c.p_value, 6), c.stars,
                    "" if c.test is None else _num(c.test.p_pooled, 6),
                    "" if c.test is None or c.test.p is not None else c.test.reason, _num(c.distill_seconds, 3),
                    _num(c.eval_seconds, 3), "" if c.images is None else c.images,
                    " ".join(r.run_id for r in c.ok + c.failed),
                    " | ".join(_last_line(r.error) for r in c.failed),
                    " ".join(f"{k}={v}" for k, v in sec.settings),
                ])
    return buf.getvalue()


def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no global backend state, no display needed)
# --------------------------------------------------------------------------------------------------



def plot_accuracy_vs_ipc(sec: Section, target: Path) -> Path:
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    for v in sec.variants:
        xs, ys, es = [], [], []
        for ipc in sec.ipcs:
            c = sec.cell(v, ipc)
            if c is not None and c.mean is not None:
                xs.append(ipc)
                ys.append(c.mean)
                es.append(c.std or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=variant_name(v))
    if sec.ipcs and max(sec.ipcs) / min(sec.ipcs) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(sec.ipcs)
    ax.set_xticklabels([str(i) for i in sec.ipcs])
    return finish(fig, ax, "images per class (IPC)", f"{sec.dataset}, protocol {sec.protocol}: accuracy vs IPC", target)


def plot_budget_vs_reference(sec: Section, target: Path) -> Path | None:
    """Budget runs at the images per class each produced, against the reference's accuracy-vs-IPC curve.

    A budget buys images; whether they are worth more than real ones is a question at equal count, so the x
    axis is images per class and the reference method (random real) is the line every point is read against."""
    budgets = sec.budgets
    if not budgets:
        return None
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, style in ((sec.reference, "--"), (shipped_name(str(sec.reference)), ":")):
        ref = [(ipc, c) for ipc in sec.ipcs if (c := sec.cells.get((name, None, ipc))) and c.mean is not None]
        if ref:
            ax.errorbar([i for i, _ in ref], [c.mean for _, c in ref], yerr=[c.std or 0.0 for _, c in ref],
                        color="0.3", linestyle=style, marker="s", capsize=3, label=f"{name}, reference")
    for method, budget in [v for v in sec.variants if v[1] is not None]:
        runs = [r for (m, b, _), c in sec.cells.items() if (m, b) == (method, budget) for r in c.ok if r.accuracies]
        if runs:
            ax.plot([r.ipc for r in runs], [sum(r.accuracies) / len(r.accuracies) for r in runs], "o",
                    label=f"{variant_name((method, budget))}, one point per run")
    ax.set_xscale("log")
    return finish(fig, ax, "images per class (IPC; a budget run's: the IPC it produced)",
                   f"{sec.dataset}, protocol {sec.protocol}: budget runs at equal count", target)




# --------------------------------------------------------------------------------------------------
# Image grids
# --------------------------------------------------------------------------------------------------


def copy_grids(sec: Section, report_dir: Path, folder: str) -> None:
    """For each method and IPC, the image grid of its lowest-seed ok run (saved as runs/<run_id>/grid.png)."""
    for (method, budget, ipc), cell in sec.cells.items():
        for r in sorted(cell.ok, key=lambda r: (r.seed or 0)):
            src = Path(r.artifact).parent / "grid.png" if r.artifact else None
            if src is None or not src.is_file():
                continue
            name = f"{method}{'' if budget is None else f'-b{budget:g}'}-ipc{ipc}.png"
            dst = report_dir / folder / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            cell.grid = dst.relative_to(report_dir)
            break


# --------------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------------


def _section_markdown(sec: Section, plots: dict[str, list[Path]], report_dir: Path) -> list[str]:
    """One section of report.md: accuracy and time tables, plots, settings, failed runs, image grids."""
    md: list[str] = []
    md += ["", f"## {sec.title}", ""]
    md.append(f"Reference for the t-test: **{sec.reference}** at equal count (the same IPC). "
              f"{_n_text(sec).capitalize()}.")
    if sec.cut:
        md += ["", f"**Cut protocol**: these networks trained {sec.cut[0]} of the {sec.cut[1]} epochs of the published "
                  "protocol, so the accuracies sit below what the standard protocol gives and are not comparable "
                  "with the papers' figures "
                  "(docs/evaluation.md#does-a-cut-protocol-rank-methods-like-the-standard-one)."]
    md += ["", "### Accuracy (%)", "", markdown_table(*accuracy_table(sec)), ""]
    for line in (no_p_text(sec), pooled_text(sec)):
        if line:
            md += [f"{line[0].upper()}{line[1:]}.", ""]
    missing = missing_references(sec)
    if missing:
        md += [f"No `{sec.reference}` run at equal count for these IPCs; make each with:", ""]
        md += [f"- {m.split(': ', 1)[0]}: `{m.split(': ', 1)[1]}`" for m in missing] + [""]
    md += ["### Time per run (seconds, distill / eval, mean over seeds)", "", markdown_table(*time_table(sec)), ""]
    for p in plots.get(sec.slug, []):
        md += [f"![{p.stem}]({p.relative_to(report_dir).as_posix()})", ""]
    md += ["### Settings", "", f"- protocol `{sec.protocol}`: {_settings_text(sec, 'protocol_settings')}"]
    for method in dict.fromkeys(m for m, _ in sec.variants):
        md.append(f"- method `{method}`: {_settings_text(sec, 'method_params', method)}")
    failed = [r for c in sec.cells.values() for r in c.failed]
    if failed:
        md += ["", "### Failed runs", "", "| method | IPC | seed | run | error |", "| --- | ---: | ---: | --- | --- |"]
        for r in sorted(failed, key=lambda r: (str(r.method), r.ipc or 0, r.seed or 0)):
            err = _last_line(r.error).replace("|", "\\|")
            md.append(f"| {r.method} | {r.ipc} | {r.seed} | `{r.run_id}` | {err} |")
        md += ["", "Full tracebacks: `ddbench show RUN_ID`."]
    with_grid = [c for c in sec.cells.values() if c.grid is not None]
    if with_grid:
        md += ["", "### Synthetic images (lowest seed; one row per class)", ""]
        header = ["method"] + [f"IPC {ipc}" for ipc in sec.ipcs]
        body = []
        for v in sec.variants:
            line = [variant_name(v)]
            for ipc in sec.ipcs:
                c = sec.cell(v, ipc)
                line.append(f"![{variant_name(v)} IPC {ipc}]({c.grid.as_posix()})" if c and c.grid else "-")
            body.append(line)
        md.append(markdown_table(header, body))
    return md


def markdown_text(sections: list[Section], db: Path, command: str | None, superseded: int,
                  plots: dict[str, list[Path]], report_dir: Path) -> str:
    rows = [r for s in sections for r in s.rows]
    ok = [r for r in rows if r.status == "ok"]
    md = ["# ddbench comparison", ""]
    shown = db.relative_to(Path.cwd()) if db.is_absolute() and db.is_relative_to(Path.cwd()) else db
    md.append(f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} from `{shown}` "
              f"({len(rows)} runs: {len(ok)} ok, {len(rows) - len(ok)} failed).")
    if command:
        md += ["", "Produced by:", "", "```", command, "```"]
    if superseded:
        md += ["", f"{superseded} older run(s) of the same cells and seeds (other settings) are left out; "
                   "each cell shows its newest runs."]
    if not sections:
        md += ["", "No runs to report."]
        return "\n".join(md) + "\n"
    versions = (ok or rows)[0].versions or {}
    devices = sorted({str(r.device) for r in ok if r.device})
    md += ["", "## How to read this", "",
           "Each cell is the test accuracy in %: the mean ± sample standard deviation (ddof=1) of its method seeds' "
           "means (a seed's mean is over its evaluation networks), `(2 seeds)`; a cell with one seed shows that "
           "seed's networks instead, `(1 seed, 5 nets)`. The p-value is Welch's two-sided t-test "
           "(`scipy.stats.ttest_ind`, `equal_var=False`) of the cell's seed means against the reference method's at "
           "the same IPC (equal count: a budget run's IPC is the number of images per class it produced), marked "
           "* p < 0.05, ** p < 0.01, *** p < 0.001; `ref` marks the reference. It needs at least 2 seeds on each "
           "side: networks trained on one set are not independent samples of the method, so a cell with fewer "
           "reads `no p`. The test over all networks pooled is listed under each table, labelled, for comparison "
           "only. A cell with no successful seed reads FAILED; `[k failed]` counts failed seeds next to a result.", ""]
    if devices:
        md.append(f"Devices: {', '.join(devices)}. "
                  + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if not k.startswith("plugin:")) + ".")
    for sec in sections:
        md += _section_markdown(sec, plots, report_dir)
    md += ["", "## Runs", "", "| run | method | IPC | seed | status | accuracy | config hash |",
           "| --- | --- | ---: | ---: | --- | ---: | --- |"]
    for r in sorted(rows, key=lambda r: (str(r.method), r.ipc or 0, r.budget or 0, r.seed or 0)):
        acc = r.accuracy_mean
        md.append(f"| `{r.run_id}` | {variant_name((r.method, r.budget))} | {r.ipc} | "
                  f"{r.seed} | {r.status} | {'-' if acc is None else f'{acc:.2f}'} | `{r.config_hash}` |")
    return "\n".join(md) + "\n"


# --------------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------------


def _series_by_section(db: Path, sections: list[Section], hashes, methods, dataset, protocol,
                       registry: Registry) -> dict[str, list]:
    """{section slug: its iteration series (report_curves.find_series)}, from every config's latest run."""
    from .report_curves import find_series

    if not sections:
        return {}
    roles = sections[0].roles
    by_id = {r.run_id: r for r in query(db)}
    rows: dict[tuple, list[RunRecord]] = {}
    for r in latest_per_config(db, hashes=hashes, methods=methods, dataset=dataset, protocol=protocol):
        rows.setdefault((r.dataset, r.protocol, r.model, evaluation_settings(r, roles)), []).append(r)
    return {sec.slug: find_series(rows.get((sec.dataset, sec.protocol, sec.model, sec.settings), []), by_id, registry)
            for sec in sections}


@dataclass
class ReportResult:
    directory: Path
    markdown: Path
    csv: Path
    plots: list[Path]
    grids: list[Path]
    terminal: str
    sections: list[Section]
    rows: list[RunRecord]
    scores: Any = None  # ddbench.scores.ScoreReport
    # what report.html (ddbench/report_html.py) adds from the same build: plots per section (by slug), the database,
    # the command, how many older runs were left out; `html` once written
    section_plots: dict[str, list[Path]] = field(default_factory=dict)
    db: Path | None = None
    command: str | None = None
    superseded: int = 0
    html: Path | None = None


def build_report(db: Path, report_dir: Path, hashes: Iterable[str] | None = None, methods: Iterable[str] | None = None,
                 dataset: str | None = None, protocol: str | None = None, reference: str | None = None,
                 command: str | None = None, models: Iterable[str] | None = None,
                 registry: Registry | None = None) -> ReportResult:
    """Write report.md, results.csv, plots and image grids into `report_dir` from the database alone. `registry`:
    the plugins the command loaded (plugins.toml applied); they name the score references and setting roles."""
    db = Path(db)
    registry = registry_or_default(registry)
    report_dir = Path(report_dir)
    methods = list(methods) if methods is not None else None
    rows, superseded = select_rows(db, hashes=hashes, methods=methods, dataset=dataset, protocol=protocol,
                                   registry=registry)
    sections = summarise(rows, reference=reference, method_order=methods, registry=registry)
    add_shipped_references(sections)
    report_dir.mkdir(parents=True, exist_ok=True)
    many = len(sections) > 1
    plots: dict[str, list[Path]] = {}
    all_plots: list[Path] = []
    grids: list[Path] = []
    curves = _series_by_section(db, sections, hashes, methods, dataset, protocol, registry)
    for sec in sections:
        suffix = f"-{sec.slug}" if many else ""
        made = [plot_accuracy_vs_ipc(sec, report_dir / f"accuracy_vs_ipc{suffix}.png")]
        by_budget = plot_budget_vs_reference(sec, report_dir / f"budget_vs_reference{suffix}.png")
        if by_budget is not None:
            made.append(by_budget)
        per_second = plot_accuracy_vs_seconds(sec, curves.get(sec.slug, []),
                                              report_dir / f"accuracy_vs_seconds{suffix}.png")
        if per_second is not None:
            made.append(per_second)
        plots[sec.slug] = made
        all_plots += made
        copy_grids(sec, report_dir, f"grids/{sec.slug}" if many else "grids")
        grids += [report_dir / c.grid for c in sec.cells.values() if c.grid is not None]
    md_path = report_dir / "report.md"
    csv_path = report_dir / "results.csv"
    atomic_write_text(csv_text(sections), csv_path)
    from .scores import score_report

    latest_everywhere, _ = select_rows(db, registry=registry)  # references too: the latest run of each cell and seed
    scores = score_report(latest_everywhere, rows, method_order=methods, model_order=list(models) if models else None,
                          registry=registry)
    atomic_write_text(markdown_text(sections, db, command, superseded, plots, report_dir) + "\n" + scores.markdown,
                      md_path)
    atomic_write_json(scores.as_json(), report_dir / "scores.json")
    return ReportResult(report_dir, md_path, csv_path, all_plots, grids,
                        terminal_text(sections) + "\n\n" + scores.terminal, sections, rows, scores,
                        section_plots=plots, db=db, command=command, superseded=superseded)


__all__ = ["build_report", "select_rows", "summarise", "welch", "ReportResult", "Section", "Cell"]
