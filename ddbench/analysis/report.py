"""Reports from the results database alone: terminal table, report.md, results.csv, plots, image grids.

build_report puts together what three modules make: report_cells (which runs, cells, sections and their
statistics), report_text (terminal text, results.csv, report.md) and report_plots (plots, image grids).

One section per (dataset, protocol, evaluation model, evaluation settings). In a section, one row per method (and per
generation budget, for methods given one), one column per IPC: the images per class a run produced (a budget
run's IPC is the one it declared, so its row fills the columns of the IPCs it reached). A cell is the mean ± sample
std of its method seeds' means (each seed: the mean of its evaluation networks), or, with one seed, of that seed's
networks; it says which (`2 seeds` / `1 seed, 5 nets`). Its p is Welch's t-test (scipy.stats.ttest_ind,
equal_var=False) of those seed means against the reference method's at the same IPC, i.e. at equal count:
* p < 0.05, ** p < 0.01, *** p < 0.001; with fewer than 2 seeds on a side there is none, and the report says
why. The test over every network pooled (which treats networks trained on one set as independent) is in
report.md and results.csv, labelled as such. The statistics are ddbench/core/stats.py's, as data (`Cell.spread`,
`Cell.test`), for any other view of the same cells. A cell whose equal-count reference is missing says so,
with the command that makes it.

Which runs count: per config hash, the latest `ok` run (else the latest failed one); then per cell, seed and
evaluation settings (records.evaluation_settings: the protocol settings that change accuracy), the latest of
those, so a cell re-run with other method settings shows its newest result, while runs of the same cell under
other evaluation settings (no augmentation, other epochs) form their own section instead of replacing it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core.atomic import atomic_write_json, atomic_write_text
from ..core.records import RunRecord, evaluation_settings
from ..core.stats import STARS, Spread, Test, p_text, seed_test, spread, stars, welch
from ..host.plugins import Registry, registry_or_default
from ..store.results import query
from .report_cells import (Cell, Section, add_shipped_references, latest_per_config, missing_references, select_rows,
                           shipped_name, summarise, variant_name)
from .report_curves import plot_accuracy_vs_seconds
from .report_plots import copy_grids, plot_accuracy_vs_ipc, plot_budget_vs_reference
from .report_text import (CSV_COLUMNS, accuracy_table, csv_text, markdown_text, no_p_text, pooled_text,
                          terminal_text, tested, time_table)

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
    scores: Any = None  # ddbench.analysis.scores_text.ScoreReport
    # what report.html (ddbench/analysis/report_html.py) adds from the same build: plots per section (by slug),
    # the database, the command, how many older runs were left out; `html` once written
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
    from .scores_text import score_report

    latest_everywhere, _ = select_rows(db, registry=registry)  # references too: the latest run of each cell and seed
    scores = score_report(latest_everywhere, rows, method_order=methods, model_order=list(models) if models else None,
                          registry=registry)
    atomic_write_text(markdown_text(sections, db, command, superseded, plots, report_dir) + "\n" + scores.markdown,
                      md_path)
    atomic_write_json(scores.as_json(), report_dir / "scores.json")
    return ReportResult(report_dir, md_path, csv_path, all_plots, grids,
                        terminal_text(sections) + "\n\n" + scores.terminal, sections, rows, scores,
                        section_plots=plots, db=db, command=command, superseded=superseded)


# The names report.py offered before it was split, importable from here as they were.
__all__ = ["build_report", "select_rows", "latest_per_config", "summarise", "add_shipped_references",
           "missing_references", "shipped_name", "variant_name", "accuracy_table", "time_table", "tested", "no_p_text",
           "pooled_text", "terminal_text", "csv_text", "markdown_text", "CSV_COLUMNS", "plot_accuracy_vs_ipc",
           "plot_budget_vs_reference", "copy_grids", "welch", "STARS", "Spread", "Test", "p_text", "seed_test",
           "spread", "stars", "ReportResult", "Section", "Cell"]
