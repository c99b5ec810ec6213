"""report.html: the report as one self-contained page, every synthetic set's images beside its numbers.

A dataset-distillation result is a set of images, and every paper shows them; report.md puts each run's grid in a
file of its own. This page holds, per section of the report (dataset x protocol x architecture x evaluation
settings): the accuracy and time tables, the scores, a gallery that lines the methods up at each IPC (one seed's
set, class names as row labels), the plots, provenance per run, and the failed and skipped rows with their reason.

It is built from a written report (ddbench.report.ReportResult): the same row selection, the same cell statistics
and the same table texts as report.md, so a change there shows here. One file that works offline anywhere:
images are PNG data: URIs, and a Content-Security-Policy allows nothing else to load (no network, no CDN) and only
the page's own script (by its hash) to run. Tables are plain HTML first; a few lines of plain script make every
column sortable. All text from runs and plugins (method and class names, settings, errors) is escaped.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .atomic import atomic_write_text
from .provenance import HOST_META, rerun_command
from .records import RunRecord
from .roles import EPOCHS
from .report import ReportResult
from .report_cells import Section, last_line, missing_references, shipped_name, variant_name
from .report_text import accuracy_table, settings_text, terminal_text, time_table
from .row_checks import row_problem
from .results import query
from .scores import Scored, augmented
from .scores_text import score_table

# Images per class shown in a gallery cell: the run's own grid.png shows as many (ddbench/synsets.py: save_grid,
# max_per_class=10); a cell shows at most GALLERY_MAX_IMAGES in all (CIFAR-100: 1 per class), so a page over many
# methods and IPCs stays a few MB at most (docs/compare.md#reporthtml).
GALLERY_PER_CLASS = 10
GALLERY_MAX_IMAGES = 100
HTML_NAME = "report.html"


VOID = {"img", "br", "meta"}


class Raw(str):
    """Markup this module built from escaped parts; every other value is escaped where it is written."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def tag(name: str, content: Any = "", **attrs: Any) -> Raw:
    """`<name attrs>content</name>`; attribute values escaped, `cls` -> class, `data_x` -> data-x."""
    parts = [name] + [f'{k.rstrip("_").replace("_", "-") if k != "cls" else "class"}="{esc(v)}"'
                      for k, v in attrs.items() if v is not None]
    if name in VOID:
        return Raw(f"<{' '.join(parts)}>")
    return Raw(f"<{' '.join(parts)}>{esc(content)}</{name}>")


def join(items: Iterable[Any], sep: str = "") -> Raw:
    return Raw(sep.join(esc(i) for i in items))


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def html_table(header: list[Any], body: list[list[Any]], sort_keys: list[list[Any]] | None = None,
               cls: str = "sortable", row_header: bool = True) -> Raw:
    """A plain HTML table (sortable by the page's script when `cls` says so); `sort_keys[i][j]`, when not None,
    is what cell (i, j) sorts by instead of its text (dates)."""
    head = tag("thead", tag("tr", join(tag("th", h, scope="col") for h in header)))
    rows = []
    for i, row in enumerate(body):
        cells = []
        for j, value in enumerate(row):
            key = sort_keys[i][j] if sort_keys and sort_keys[i] and j < len(sort_keys[i]) else None
            cells.append(tag("th" if j == 0 and row_header else "td", value, scope="row" if j == 0 and row_header
                             else None, data_sort=key))
        rows.append(tag("tr", join(cells)))
    return tag("table", join([head, tag("tbody", join(rows))]), cls=cls)


def code(text: str) -> Raw:
    return tag("code", text)


def inline(text: str) -> Raw:
    """Text whose `backticked` spans (report.py and scores.py write markdown) become <code>; all of it escaped."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: plain text
        return Raw(esc(text))
    return join(code(p) if i % 2 else p for i, p in enumerate(parts))


# --------------------------------------------------------------------------------------------------
# Gallery: one seed's synthetic set per method and IPC, one row per class
# --------------------------------------------------------------------------------------------------


@dataclass
class ClassRow:
    name: str
    shown: int
    total: int
    png: bytes | None  # one strip of `shown` thumbnails


@dataclass
class GalleryCell:
    title: str
    note: str
    rows: list[ClassRow]
    fallback_png: bytes | None = None  # the run's grid.png when its synthetic set cannot be read
    problem: str | None = None


def _strip_png(images01) -> bytes:
    """(n, C, H, W) floats in [0, 1] as one PNG strip, 1 px of white between images."""
    import numpy as np
    from PIL import Image

    n, c, h, w = images01.shape
    pixels = (np.clip(images01, 0.0, 1.0) * 255).round().astype(np.uint8)
    strip = np.full((max(c, 1), h, n * (w + 1) - 1), 255, dtype=np.uint8)
    for i in range(n):
        strip[:, :, i * (w + 1): i * (w + 1) + w] = pixels[i]
    array = strip[0] if c != 3 else strip.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def set_rows(artifact: Path, per_class: int = GALLERY_PER_CLASS) -> list[ClassRow]:
    """The class rows of a stored synthetic set (ddbench/synsets.py: load_synset), back in pixel space with the
    dataset's mean and std saved beside it (min-max scaled when a file predates that)."""
    import numpy as np

    from .synsets import load_synset

    syn, saved = load_synset(artifact)
    images = syn.images.detach().float().cpu().numpy()
    labels = syn.labels.detach().cpu()
    labels = (labels.argmax(1) if labels.ndim == 2 else labels).numpy()  # soft labels: each image's argmax class
    info = saved.get("dataset") or {}
    if info.get("mean") is not None and info.get("std") is not None:
        mean = np.asarray(info["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(info["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        images = images * std + mean
    else:
        lo, hi = float(images.min()), float(images.max())
        images = (images - lo) / (hi - lo or 1.0)
    names = [str(n) for n in (info.get("class_names") or [])]
    num_classes = max(len(names), int(labels.max()) + 1 if len(labels) else 0)
    per_class = max(1, min(per_class, GALLERY_MAX_IMAGES // max(num_classes, 1)))
    rows = []
    for c in range(num_classes):
        idx = np.nonzero(labels == c)[0]
        shown = idx[:per_class]
        rows.append(ClassRow(names[c] if c < len(names) else str(c), len(shown), len(idx),
                             _strip_png(images[shown]) if len(shown) else None))
    return rows


def gallery_cell(sec: Section, variant: tuple[str, float | None], ipc: int, report_dir: Path,
                 per_class: int) -> GalleryCell | None:
    """The lowest seed's set of a cell that has one (the seed report.md's grid shows)."""
    cell = sec.cell(variant, ipc)
    if cell is None or not cell.ok:
        return None
    runs = sorted(cell.ok, key=lambda r: (r.seed or 0))
    budget = variant[1]
    title = variant_name(variant)
    reached = f"budget {budget:g} s: reached IPC {ipc}" if budget is not None else f"IPC {ipc}"
    problem = None
    for r in runs:
        if not r.artifact or not Path(r.artifact).is_file():
            continue
        try:
            rows = set_rows(Path(r.artifact), per_class)
        except Exception as exc:  # noqa: BLE001 - a damaged file is said on the page, not a failed report
            problem = f"synthetic set of run {r.run_id} unreadable: {type(exc).__name__}: {exc}"
            continue
        most = max((row.shown for row in rows), default=0)
        return GalleryCell(title, f"{reached} · seed {r.seed} · run {r.run_id} · at most {most} image(s) per class "
                                  "shown (each row: shown of the class's images)", rows)
    grid = report_dir / cell.grid if cell.grid is not None else None
    if grid is not None and grid.is_file():  # the copied grid.png: one row per class, no names
        return GalleryCell(title, f"{reached} · seed {runs[0].seed} · run {runs[0].run_id} · the run's grid.png "
                                  "(synset.pt not found: rows are classes in label order)", [],
                           fallback_png=grid.read_bytes(), problem=problem)
    return GalleryCell(title, f"{reached}", [], problem=problem or "no synthetic set file found for any seed "
                                                                   f"(runs {', '.join(r.run_id for r in runs)})")


def gallery_html(sec: Section, report_dir: Path, per_class: int) -> Raw:
    """Per IPC, the methods side by side, so that what each made at equal count lines up for the eye."""
    groups = []
    for ipc in sec.ipcs:
        cards = []
        for v in sec.variants:
            g = gallery_cell(sec, v, ipc, report_dir, per_class)
            if g is None:
                continue
            body: list[Any] = [tag("h4", g.title), tag("p", g.note, cls="note")]
            if g.rows:
                most = max(row.shown for row in g.rows)
                trs = [tag("tr", join([tag("th", row.name, scope="row"),
                                       tag("td", tag("img", src=data_uri_png(row.png),
                                                     alt=f"{g.title}, class {row.name}",
                                                     cls="strip" if most > 3 else "strip big")
                                                 if row.png else "(none)"),
                                       tag("td", f"{row.shown} of {row.total}", cls="count")]))
                       for row in g.rows]
                body.append(tag("table", tag("tbody", join(trs)), cls="synset"))
            elif g.fallback_png:
                body.append(tag("img", src=data_uri_png(g.fallback_png), alt=f"{g.title} image grid", cls="grid"))
            if g.problem:
                body.append(tag("p", g.problem, cls="problem"))
            cards.append(tag("figure", join(body), cls="card"))
        if cards:
            groups.append(join([tag("h4", f"IPC {ipc}", cls="ipc"), tag("div", join(cards), cls="cards")]))
    return join(groups)


# --------------------------------------------------------------------------------------------------
# A section
# --------------------------------------------------------------------------------------------------


def _caption(sec: Section) -> str:
    """What a cell is, in report.py's own words (its terminal header), so that the two never disagree."""
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
    """(device and CPU/GPU model, git commit) as recorded with the run (meta['host'], ddbench/provenance.py)."""
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
