"""The report's renderers: the terminal text, results.csv and report.md, from report_cells' sections alone.

Every ± says what it is over (Cell.text); a cell with no p says why under its table; the test over every network
pooled is listed under the table and in results.csv, labelled, for comparison only.
"""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

from ..core.stats import p_text
from ..core.tables import markdown_table, plain_table
from .report_cells import Cell, Section, last_line, missing_references, variant_name

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


def settings_text(sec: Section, kind: str, method: str | None = None) -> str:
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
                           f"(run {r.run_id}): {last_line(r.error)}")
        out.append("")
    out.append("p-value marks: * < 0.05, ** < 0.01, *** < 0.001")
    return "\n".join(out)


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
                    " | ".join(last_line(r.error) for r in c.failed),
                    " ".join(f"{k}={v}" for k, v in sec.settings),
                ])
    return buf.getvalue()


def _num(x: float | None, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


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
    md += ["### Settings", "", f"- protocol `{sec.protocol}`: {settings_text(sec, 'protocol_settings')}"]
    for method in dict.fromkeys(m for m, _ in sec.variants):
        md.append(f"- method `{method}`: {settings_text(sec, 'method_params', method)}")
    failed = [r for c in sec.cells.values() for r in c.failed]
    if failed:
        md += ["", "### Failed runs", "", "| method | IPC | seed | run | error |", "| --- | ---: | ---: | --- | --- |"]
        for r in sorted(failed, key=lambda r: (str(r.method), r.ipc or 0, r.seed or 0)):
            err = last_line(r.error).replace("|", "\\|")
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
