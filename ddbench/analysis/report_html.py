"""report.html: the report as one self-contained page, every synthetic set's images beside its numbers.

A dataset-distillation result is a set of images, and every paper shows them; report.md puts each run's grid in a
file of its own. This page holds, per section of the report (dataset x protocol x architecture x evaluation
settings): the accuracy and time tables, the scores, a gallery that lines the methods up at each IPC (one seed's
set, class names as row labels), the plots, provenance per run, and the failed and skipped rows with their reason.

Its HTML building blocks are html_parts.py's and its gallery report_gallery.py's. It is built from a written
report (ddbench.analysis.report.ReportResult): the same row selection, the same cell statistics
and the same table texts as report.md, so a change there shows here. One file that works offline anywhere:
images are PNG data: URIs, and a Content-Security-Policy allows nothing else to load (no network, no CDN) and only
the page's own script (by its hash) to run. Tables are plain HTML first; a few lines of plain script make every
column sortable. All text from runs and plugins (method and class names, settings, errors) is escaped.
"""
from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_write_text
from ..core.records import RunRecord
from ..core.roles import EPOCHS
from ..store.provenance import HOST_META, rerun_command
from ..store.results import query
from ..store.row_checks import row_problem
from .html_parts import Raw, code, data_uri_png, esc, html_table, inline, join, tag
from .report import ReportResult
from .report_cells import Section, last_line, missing_references, shipped_name, variant_name
from .report_gallery import GALLERY_PER_CLASS, gallery_html
from .report_text import accuracy_table, settings_text, terminal_text, time_table
from .scores import Scored, augmented
from .scores_text import score_table

HTML_NAME = "report.html"


# --------------------------------------------------------------------------------------------------
# A section
# --------------------------------------------------------------------------------------------------


def _caption(sec: Section) -> str:
    """What a cell is, in the report's own words (its terminal header), so that the two never disagree."""
    first = terminal_text([sec]).splitlines()[0]
    return first.split(" — ", 1)[1] if " — " in first else first.lstrip("= ")


def _reference_sources(sec: Section) -> list[str]:
    """Per IPC, where the equal-count reference comes from: own runs, the shipped table (labelled), or nowhere."""
    if sec.reference is None:
        return []
    out = []
    for ipc in sec.ipcs:
        own = sec.cells.get((sec.reference, None, ipc))
        shipped = sec.cells.get((shipped_name(sec.reference), None, ipc))
        if own is not None and own.ok:
            out.append(f"IPC {ipc}: own runs ({len(own.seeds)} seed(s))")
        elif shipped is not None:
            out.append(f"IPC {ipc}: the shipped reference table (ddbench/data/reference), row "
                       f"'{shipped_name(sec.reference)}'")
        else:
            out.append(f"IPC {ipc}: none (the command that makes it is below)")
    return out


def _scores_of(sec: Section, scored: list[Scored]) -> list[Scored]:
    """The scored cells whose runs are this section's (same dataset, protocol, model and evaluation settings)."""
    keys = {(r.method, r.budget, r.ipc, augmented(r, sec.roles), sec.roles.value(r, EPOCHS))
            for r in sec.rows if r.status == "ok"}
    out = []
    for s in scored:
        if (s.dataset, s.protocol, s.model) != (sec.dataset, sec.protocol, sec.model):
            continue
        epochs = s.epochs
        if any(k[:4] == (s.method, s.budget, s.ipc, s.augmented) and (k[4] is None or int(k[4]) == epochs)
               for k in keys):
            out.append(s)
    return out


def _command_line(line: str) -> Raw:
    """`what: ddbench run ...` as the label and the command in <code>."""
    what, _, command = line.partition(": ")
    return tag("div", join([inline(what + ": "), code(command)]) if command else inline(line))


def scores_html(sec: Section, scored: list[Scored], method_order: list[str] | None) -> Raw:
    mine = _scores_of(sec, scored)
    if not mine:
        return tag("p", "No evaluated cells.")
    header, body = score_table(mine, method_order)
    missing_of = {tuple(score_table([s])[1][0]): s.missing for s in mine}
    rows = []
    for row in body:
        missing = missing_of.get(tuple(row), [])
        rows.append(row + [join(_command_line(m) for m in missing) if missing else "-"])
    return html_table(header + ["missing references (command that makes each)"], rows)


def _date(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _versions(r: RunRecord) -> str:
    v = r.versions if isinstance(r.versions, dict) else {}
    libs = [f"{k} {x}" for k, x in sorted(v.items()) if not str(k).startswith("plugin:")]
    plugins = [f"{str(k)[7:]} {x}" for k, x in sorted(v.items()) if str(k).startswith("plugin:")]
    return ", ".join(libs) + (f"; plugins: {', '.join(plugins)}" if plugins else "") or "not recorded"


def _host(r: RunRecord) -> tuple[str, str]:
    """(device and CPU/GPU model, git commit) as recorded with the run (meta['host'], ddbench/store/provenance.py)."""
    host = r.meta.get(HOST_META) if isinstance(r.meta, dict) else None
    host = host if isinstance(host, dict) else {}
    machine = " / ".join(str(host[k]) for k in ("gpu", "cpu") if host.get(k)) or "model not recorded"
    commit = host.get("commit")
    return f"{r.device or '?'}: {machine}", (str(commit)[:12] + ("+dirty" if str(commit).endswith("+dirty") else "")
                                             if commit else "-")


def provenance_html(rows: list[RunRecord]) -> Raw:
    header = ["run", "date", "method", "IPC", "seed", "status", "accuracy %", "device: GPU / CPU model", "git commit",
              "versions", "command that re-makes it"]
    body, keys = [], []
    for r in sorted(rows, key=lambda r: (str(r.method), r.ipc or 0, r.budget or 0, r.seed or 0)):
        machine, commit = _host(r)
        acc = r.accuracy_mean
        status = r.status if r.status == "ok" else f"{r.status}: {last_line(r.error)}"
        command = rerun_command(r)
        body.append([r.run_id, _date(r.created), variant_name((r.method, r.budget)), r.ipc, r.seed, status,
                     "-" if acc is None else f"{acc:.2f}", machine, commit, tag("small", _versions(r)),
                     code(command) if command else "-"])
        keys.append([None, r.created or 0] + [None] * 9)
    return html_table(header, body, keys, cls="sortable runs")


def _failed_html(sec: Section) -> Raw:
    failed = sorted((r for c in sec.cells.values() for r in c.failed),
                    key=lambda r: (str(r.method), r.ipc or 0, r.seed or 0))
    if not failed:
        return Raw("")
    body = [[variant_name((r.method, r.budget)), r.ipc, r.seed, r.run_id, last_line(r.error)] for r in failed]
    return join([tag("h3", "Failed runs"), html_table(["method", "IPC", "seed", "run", "reason (last line; "
                                                       "`ddbench show RUN` prints it all)"], body)])


def section_html(sec: Section, result: ReportResult, report_dir: Path, per_class: int) -> Raw:
    parts: list[Any] = [tag("h2", sec.title), tag("p", _caption(sec), cls="caption")]
    sources = _reference_sources(sec)
    if sources:
        parts.append(tag("p", join([f"Reference for the t-test: {sec.reference} at equal count (the same IPC). "
                                    "Its source: ", "; ".join(sources), "."])))
    parts += [tag("h3", "Accuracy (%)"), html_table(*accuracy_table(sec))]
    missing = missing_references(sec)
    if missing:
        parts.append(tag("p", f"No {sec.reference} run at equal count for these IPCs; make each with:"))
        parts.append(tag("ul", join(tag("li", _command_line(m)) for m in missing)))
    parts += [tag("h3", "Time per run (seconds, distill / eval, mean over seeds)"), html_table(*time_table(sec))]
    scored = result.scores.scored if result.scores is not None else []
    parts += [tag("h3", "Scores (DD-Ranking)"), scores_html(sec, scored, _method_order(result))]
    gallery = gallery_html(sec, report_dir, per_class)
    parts += [tag("h3", "Synthetic sets (one seed per method and IPC; one row per class)"),
              gallery if gallery else tag("p", "No successful run with a synthetic set.")]
    plots = result.section_plots.get(sec.slug, [])
    if plots:
        parts.append(tag("h3", "Plots"))
        parts += [tag("img", src=data_uri_png(p.read_bytes()), alt=p.stem, cls="plot") for p in plots if p.is_file()]
    settings = [tag("li", join([f"protocol {sec.protocol}: ", settings_text(sec, "protocol_settings")]))]
    settings += [tag("li", join([f"method {m}: ", settings_text(sec, "method_params", m)]))
                 for m in dict.fromkeys(m for m, _ in sec.variants)]
    parts += [tag("h3", "Settings"), tag("ul", join(settings)), _failed_html(sec)]
    parts += [tag("h3", "Runs: provenance"), tag("details", join([tag("summary", f"{len(sec.rows)} run(s): run id, "
                                                                  "date, machine, commit, versions, command"),
                                                                  provenance_html(sec.rows)]), open="open")]
    return tag("section", join(parts), id=f"s-{sec.slug}")


def _method_order(result: ReportResult) -> list[str]:
    order: list[str] = []
    for sec in result.sections:
        order += [m for m, _ in sec.variants if m not in order]
    return order


# --------------------------------------------------------------------------------------------------
# Skipped rows, the page
# --------------------------------------------------------------------------------------------------


def skipped_html(result: ReportResult) -> Raw:
    """Rows the report left out and why: damaged rows of the database (also warned on stderr), older runs."""
    items: list[Any] = []
    if result.db is not None and Path(result.db).is_file():
        for r in query(result.db, trusted=False):
            why = row_problem(r)
            if why is not None:
                items.append(tag("li", join([code(r.run_id), f" (method {r.method}): skipped, {why}"])))
    if result.superseded:
        items.append(tag("li", f"{result.superseded} older run(s) of the same cells and seeds (other settings): "
                               "left out; each cell shows its newest runs"))
    if not items:
        return Raw("")
    return join([tag("h2", "Skipped rows"), tag("ul", join(items), id="skipped")])


SCRIPT = """
(function () {
  function key(cell) {
    if (!cell) return [2, ""];
    var s = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (s === "" || s === "-") return [2, ""];
    var n = parseFloat(s.replace("\\u2212", "-"));
    return isNaN(n) ? [1, s.toLowerCase()] : [0, n];
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      function sort() {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {  // numbers, then text, then blanks, whichever the direction
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x[0] !== y[0]) return x[0] - y[0];
          var d = x[0] === 0 ? x[1] - y[1] : (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
          return up ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
})();
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccd; padding: .25em .55em; text-align: left; vertical-align: top; }
thead th { background: #eef; } table.sortable thead th { cursor: pointer; }
thead th[aria-sort=ascending]::after { content: " \\25B2"; } \
thead th[aria-sort=descending]::after { content: " \\25BC"; }
code { font: 12px ui-monospace, monospace; background: #f4f4f8; padding: 0 .2em; word-break: break-all; }
.caption, .note, small { color: #555; } .problem { color: #a00; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure.card { margin: 0; border: 1px solid #ccd; padding: .5em; background: #fafaff; }
figure.card h4 { margin: 0; } figure.card .note { font-size: 12px; max-width: 26em; margin: .2em 0 .4em; }
table.synset { margin: 0; } table.synset th, table.synset td { border: 0; padding: 1px 4px; font-size: 12px; }
table.synset td.count { color: #777; white-space: nowrap; }
img.strip { height: 36px; image-rendering: pixelated; display: block; } img.strip.big { height: 56px; }
img.grid { image-rendering: pixelated; max-width: 100%; } img.plot { max-width: 48%; margin-right: 1%; }
h4.ipc { margin: 1em 0 .4em; }
table.runs { font-size: 12px; } table.runs td:nth-child(2) { white-space: nowrap; }
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def page_html(result: ReportResult, per_class: int = GALLERY_PER_CLASS) -> str:
    report_dir = Path(result.directory)
    rows = result.rows
    ok = [r for r in rows if r.status == "ok"]
    head = [tag("h1", "ddbench report"),
            tag("p", f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} from {result.db or 'the results database'} "
                     f"({len(rows)} runs: {len(ok)} ok, {len(rows) - len(ok)} failed). The same data as "
                     "report.md beside this file; every table sorts by a click on its header.")]
    if result.command:
        head.append(tag("p", join(["Produced by: ", code(result.command)])))
    if result.sections:
        head.append(tag("nav", tag("ul", join(tag("li", tag("a", sec.title, href=f"#s-{sec.slug}"))
                                              for sec in result.sections))))
    body = [join(head)] + [section_html(sec, result, report_dir, per_class) for sec in result.sections]
    if not result.sections:
        body.append(tag("p", "No runs to report."))
    cross = result.scores.cross if result.scores is not None else []
    for c in cross:
        title = f"{c['dataset']} · protocol {c['protocol']} · IPC {c['ipc']}"
        body += [tag("h2", f"Cross-architecture accuracy (%): {title}"), html_table(c["header"], c["rows"])]
    body.append(skipped_html(result))
    explain = (result.scores.markdown.split("\n\n")[1]
               if result.scores is not None and "\n\n" in result.scores.markdown else "")
    body.append(tag("footer", join([tag("p", "p-value marks: * < 0.05, ** < 0.01, *** < 0.001."),
                                    tag("p", inline(f"Scores: {explain}")) if explain else ""])))
    csp = (f"default-src 'none'; img-src data:; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
           "base-uri 'none'; form-action 'none'")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"  # own text: no quote, no markup
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>ddbench report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(esc(b) for b in body)
            + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


def write_html(result: ReportResult, per_class: int = GALLERY_PER_CLASS) -> Path:
    """Write report.html beside report.md (atomically) and note it on the result."""
    target = Path(result.directory) / HTML_NAME
    atomic_write_text(page_html(result, per_class), target)
    result.html = target
    return target


__all__ = ["write_html", "page_html", "esc", "GALLERY_PER_CLASS", "HTML_NAME"]
