"""report.html: one self-contained page (ddbench/analysis/report_html.py), checked as text and in a real browser.

The browser is Debian's `chromium` (the Makefile's setup and .ci/run install it), driven with `--headless
--dump-dom` and nothing else: the test copies the page, adds a script that records what it finds in the live DOM
(tables, decoded images, a click on a column header, any alert) into a <pre>, and reads the dumped DOM back.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ddbench.analysis.report import accuracy_table, build_report
from ddbench.analysis.report_html import GALLERY_PER_CLASS, SCRIPT, STYLE, page_html, write_html
from ddbench.api import SyntheticSet
from ddbench.cli import main
from ddbench.core.records import RunRecord
from ddbench.store.results import record
from ddbench.store.synsets import save_synset

from sweep_plugin import write_config

EVIL = "<script>alert(1)</script>"
EVIL_CLASS = "<img src=x onerror=alert(2)>"
CLASSES = ["t-shirt", EVIL_CLASS, "bag & co"]
# (method, ipc) -> mean accuracy of its cell. At IPC 1 the order random, dm, EVIL is sorted neither way, and
# sorting the texts (9.. after 70..) would order them otherwise than their numbers
MEANS = {("random", 1): 9.0, ("dm", 1): 70.0, (EVIL, 1): 55.0, ("random", 2): 50.0, ("dm", 2): 72.0, (EVIL, 2): 60.0}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _row(tmp_path: Path, method: str, ipc: int, seed: int, created: float, status: str = "ok",
         error: str | None = None, budget: float | None = None) -> RunRecord:
    run_id = f"r{int(created)}-{seed}"
    artifact = tmp_path / "runs" / run_id / "synset.pt"
    g = torch.Generator().manual_seed(int(created))
    images = torch.rand(3 * ipc, 1, 8, 8, generator=g) * 2 - 1  # normalised with mean 0.5, std 0.5 below
    if status == "ok":
        save_synset(SyntheticSet(images, torch.arange(3).repeat_interleave(ipc), {}), artifact,
                    dataset={"name": "tiny", "mean": (0.5,), "std": (0.5,), "class_names": CLASSES})
    base = MEANS.get((method, ipc), 65.0)
    accs = [base + 0.5 * seed, base + 1.0 - 0.5 * seed]
    rec = RunRecord(run_id=run_id, created=created, status=status, method=method, dataset="tiny", ipc=ipc,
                    budget=budget, protocol="fast", model="convnet", seed=seed, config_hash=f"h{int(created)}",
                    config={"method": method, "dataset": "tiny", "ipc": ipc, "budget": budget, "protocol": "fast",
                            "model": "convnet", "seed": seed, "preset": "default",
                            "method_params": {"note": EVIL} if method == EVIL else {},
                            "protocol_settings": {"epochs": 3}},
                    device="cpu", versions={"torch": torch.__version__, "plugin:evil": EVIL},
                    meta={"host": {"cpu": "Test CPU (2 CPUs)", "commit": "0123456789abcdef0123"}},
                    artifact=str(artifact), distill_seconds=1.0, eval_seconds=2.0, images=3 * ipc)
    if status == "ok":
        rec.accuracies, rec.accuracy_mean, rec.n_eval_models = accs, sum(accs) / 2, 2
        rec.accuracy_std = abs(accs[0] - accs[1]) / 2
    else:
        rec.error = error
    return rec


@pytest.fixture
def page(tmp_path):
    """A report written from rows stored through the results store: 3 methods (one named EVIL) x IPC 1, 2 x 2
    seeds, a failed run whose error is markup, a budget run, a damaged row; returns (result, html path)."""
    db = tmp_path / "ddbench.sqlite"
    t = 1_765_000_000.0
    for (method, ipc) in MEANS:
        for seed in (0, 1):
            t += 1
            record(db, _row(tmp_path, method, ipc, seed, t))
    record(db, _row(tmp_path, "dm", 1, 2, t + 1, status="failed", error="Traceback\nRuntimeError: <b>boom</b>"))
    record(db, _row(tmp_path, "dm", 5, 0, t + 2, budget=30.0))
    record(db, _row(tmp_path, "random", 1, 7, t + 3))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET meta = '{broken' WHERE run_id = ?", (f"r{int(t + 3)}-7",))
    result = build_report(db, tmp_path / "report", reference="random", command=f"ddbench report --methods '{EVIL}'")
    return result, write_html(result)


def test_the_page_holds_the_reports_numbers_and_escapes_every_untrusted_text(page):
    result, path = page
    text = path.read_text()
    assert path.name == "report.html" and path.parent == result.markdown.parent and result.html == path
    # the accuracy cells are report.py's own texts (one source for report.md and the page)
    sec = result.sections[0]
    for row in accuracy_table(sec)[1]:
        for cell in row:
            assert html.escape(cell, quote=True) in text
    # untrusted text: method names, class names, settings, versions, error texts, the command
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>boom" not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5
    assert html.escape(EVIL_CLASS) in text and "bag &amp; co" in text and "RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in text
    assert text.count("<script") == 1  # the page's own
    # self-contained: every image is a data: URI, nothing else is fetched, only the page's own script may run
    assert re.findall(r'\bsrc="(?!data:image/png;base64,)', text) == []
    assert re.findall(r'\bhref="(?!#)', text) == [] and "<link" not in text and not re.search(r"https?:|url\(", text)
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1))
    assert csp.startswith("default-src 'none'; img-src data:;") and f"script-src 'sha256-{digest}';" in csp
    assert f"<script>{SCRIPT}</script>" in text and f"<style>{STYLE}</style>" in text
    # provenance per row, failed and skipped rows with their reason, the budget cell's IPC
    assert "Test CPU (2 CPUs)" in text and "0123456789ab" in text and "ddbench run --method dm --ipc 1 --seed 0" in text
    assert "damaged JSON in column(s) meta" in text and "budget 30 s: reached IPC 5" in text


def test_the_gallery_shows_at_most_n_per_class_and_says_how_many(tmp_path):
    db = tmp_path / "ddbench.sqlite"
    record(db, _row(tmp_path, "random", 12, 0, 1_765_000_000.0))
    result = build_report(db, tmp_path / "report")
    text = page_html(result)
    assert text.count('class="strip') == 3 and text.count(f"{GALLERY_PER_CLASS} of 12") == 3
    assert text.count(f"{3} of 12") == 0
    assert page_html(result, per_class=3).count("3 of 12") == 3


def test_report_and_compare_write_the_page(tmp_path, capsys):
    """Tiny real runs (the sweep test plugin): compare writes report.html, report writes it again."""
    config, out = write_config(tmp_path), tmp_path / "out"
    argv = ["--config", config, "--out", str(out), "--dataset", "tiny", "--protocol", "tiny-eval"]
    assert main(["compare", "--methods", "random,gen", "--ipc", "1,2", "--seeds", "2", "--no-progress", *argv]) == 0
    printed = capsys.readouterr().out
    page = out / "report" / "report.html"
    assert page.is_file() and re.search(r"\(also report\.html \d+ KB, results\.csv", printed)
    text = page.read_text()
    assert text.count('class="strip') == 2 * 2 * 3  # 2 methods x 2 IPC x 3 classes, one seed each
    assert ">c0</th>" in text and "seed 0" in text
    page.unlink()
    assert main(["report", "--config", config, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["html"] == str(page) and page.is_file()


def test_a_page_over_5_methods_3_ipc_5_seeds_stays_small(tmp_path):
    """10 classes of 28x28 noise (the worst case for PNG) at IPC 1, 10, 50: one seed's thumbnails per cell."""
    db = tmp_path / "ddbench.sqlite"
    t = 1_765_000_000.0
    for m in range(5):
        for ipc in (1, 10, 50):
            for seed in range(5):
                t += 1
                artifact = tmp_path / "runs" / str(t) / "synset.pt"
                if seed == 0:  # the gallery reads the lowest seed's set only
                    save_synset(SyntheticSet(torch.rand(10 * ipc, 1, 28, 28), torch.arange(10).repeat_interleave(ipc), {}),
                                artifact, dataset={"mean": (0.0,), "std": (1.0,), "class_names": list("abcdefghij")})
                record(db, RunRecord(f"r{t}", t, "ok", f"m{m}", "fmnist", ipc, None, "fast", "convnet", seed, f"h{t}",
                                     accuracies=[50.0 + m + seed, 51.0], accuracy_mean=50.5, accuracy_std=0.5,
                                     n_eval_models=2, artifact=str(artifact)))
    path = write_html(build_report(db, tmp_path / "report"))
    size = path.stat().st_size
    assert path.read_text().count('class="strip') == 5 * 3 * 10
    assert size < 1_600_000, f"{size} bytes"  # 1.24 MB measured (docs/compare.md)


def _chromium(url: str, tmp_path: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=10000", "--dump-dom", url]
    if os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")  # chromium refuses to run as root with its sandbox (containers, CI)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


PROBE_HEAD = "<script>window.__alerts = []; window.alert = function (m) { window.__alerts.push(String(m)); };</script>"
PROBE = """<script>
window.addEventListener("load", function () {
  var out = {alerts: window.__alerts, scripts: document.scripts.length};
  var imgs = Array.prototype.slice.call(document.images);
  out.images = imgs.length;
  out.decoded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  out.dataOnly = imgs.every(function (i) { return i.src.indexOf("data:image/png;base64,") === 0; });
  out.strips = document.querySelectorAll("img.strip").length;
  out.rowLabels = Array.prototype.map.call(document.querySelectorAll("table.synset th"), function (t) { return t.textContent; });
  var table = document.querySelector("section table.sortable");
  function rows() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return Array.prototype.map.call(r.cells, function (c) { return c.textContent; }); }); }
  out.cells = rows();
  table.tHead.rows[0].cells[1].click();
  out.ascending = rows().map(function (r) { return r[0]; });
  table.tHead.rows[0].cells[1].click();
  out.descending = rows().map(function (r) { return r[0]; });
  out.ready = document.querySelectorAll("table[data-sortable=ready]").length;
  out.tables = document.querySelectorAll("table.sortable").length;
  out.evilAsText = document.body.textContent.indexOf("<script>alert(1)<\\/script>") >= 0;
  out.skipped = document.getElementById("skipped").textContent;
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; `make setup` and "
                                             ".ci/run install it)")
def test_the_page_in_headless_chromium(page, tmp_path):
    result, path = page
    text = path.read_text()
    # the page as written: its own script runs under its Content-Security-Policy (the hash matches)
    dom = _chromium(path.as_uri(), tmp_path)
    assert dom.count('data-sortable="ready"') == len(re.findall(r'class="sortable\b', text)) > 3
    # a copy with a probe; script-src lifted to 'unsafe-inline', so that escaping alone keeps EVIL from running
    probe = tmp_path / "probe.html"
    lifted = re.sub(r"script-src 'sha256-[^']+'", "script-src 'unsafe-inline'", text)
    assert lifted != text
    probe.write_text(lifted.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE + "</body>", 1))
    t0 = time.perf_counter()
    dom = _chromium(probe.as_uri(), tmp_path)
    seconds = time.perf_counter() - t0
    found = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert found["alerts"] == [] and found["scripts"] == 3 and found["evilAsText"]  # the page's + the probe's two
    assert found["images"] == found["decoded"] > 0 and found["dataOnly"]
    # gallery: 3 methods x 2 IPCs + the budget cell, 3 classes each, class names as row labels (as text)
    assert found["strips"] == 7 * 3 and found["rowLabels"][:3] == CLASSES
    sec = result.sections[0]
    assert found["cells"] == accuracy_table(sec)[1]
    assert [r[0] for r in found["cells"]] == ["random", "dm", "dm (30 s)", EVIL]
    # a click on "IPC 1" sorts by its numbers, again the other way; the budget row (no IPC 1 cell: "-") stays last
    assert found["ascending"] == ["random", EVIL, "dm", "dm (30 s)"]
    assert found["descending"] == ["dm", EVIL, "random", "dm (30 s)"]
    assert found["ready"] == found["tables"]
    assert "damaged JSON in column(s) meta" in found["skipped"]
    assert seconds < 30, f"chromium took {seconds:.1f} s"


def test_a_run_without_its_synthetic_set_shows_its_grid_and_says_so(tmp_path):
    from ddbench.store.synsets import save_grid

    db = tmp_path / "ddbench.sqlite"
    rec = _row(tmp_path, "random", 2, 0, 1_765_000_000.0)
    Path(rec.artifact).unlink()
    save_grid(torch.rand(6, 1, 8, 8), torch.arange(3).repeat_interleave(2), 3, Path(rec.artifact).parent / "grid.png")
    record(db, rec)
    text = page_html(build_report(db, tmp_path / "report"))
    assert 'class="grid"' in text and "synset.pt not found" in text and 'class="strip' not in text
