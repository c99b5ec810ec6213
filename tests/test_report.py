"""`ddbench report` from the database alone: files exist, the PNGs are valid, the numbers are the database's."""
from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from ddbench.analysis.report import build_report, welch
from ddbench.cli import main
from ddbench.core.records import RunRecord
from ddbench.store.results import record
from ddbench.store.synsets import save_grid

ACC = {  # (method, ipc, seed) -> accuracies of the evaluation networks
    ("random", 1, 0): [40.0, 42.0], ("random", 1, 1): [41.0, 39.0],
    ("random", 10, 0): [70.0, 71.0], ("random", 10, 1): [72.0, 69.5],
    ("dm", 1, 0): [50.0, 52.5], ("dm", 1, 1): [51.0, 49.0],
    ("dm", 10, 0): [71.0, 70.0], ("dm", 10, 1): [70.5, 71.5],
    ("gen", 10, 0): [60.0, 61.0],
}


def _row(tmp_path, method, ipc, seed, accs=None, status="ok", budget=None, created=None, config_hash=None, error=None):
    config_hash = config_hash or f"h-{method}-{ipc}-{seed}-{budget}"
    run_id = f"{method}-{ipc}-{seed}-{budget}-{status}-{config_hash[-3:]}"
    run_dir = tmp_path / "runs" / run_id
    images = torch.rand(3 * ipc, 1, 8, 8)
    save_grid(images, torch.arange(3).repeat_interleave(ipc), 3, run_dir / "grid.png")
    row = {
        "run_id": run_id, "created": created or time.time(), "status": status, "method": method, "dataset": "tiny",
        "ipc": ipc, "budget": budget, "protocol": "fast", "model": "convnet", "seed": seed,
        "config_hash": config_hash,
        "config": {"method_params": {"lr": 1.0} if method == "dm" else {}, "protocol_settings": {"epochs": 300}},
        "device": "cpu", "versions": {"torch": torch.__version__}, "artifact": str(run_dir / "synset.pt"),
        "distill_seconds": 2.0 * ipc, "eval_seconds": 1.5, "images": 3 * ipc,
    }
    if status == "ok":
        row.update(accuracies=accs, accuracy_mean=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
                   n_eval_models=len(accs))
    else:
        row["error"] = error or "Traceback (most recent call last):\nRuntimeError: CUDA out of memory"
    return RunRecord(**row)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "ddbench.sqlite"
    t = 1000.0
    for (method, ipc, seed), accs in ACC.items():
        t += 1
        record(path, _row(tmp_path, method, ipc, seed, accs, created=t))
    record(path, _row(tmp_path, "gen", 1, 0, status="failed", created=t + 1))  # a failed cell
    record(path, _row(tmp_path, "gen", 10, 1, status="failed", created=t + 2))  # a failed seed next to an ok one
    return path


def _pooled(method, ipc):
    return [a for (m, i, _), accs in ACC.items() if (m, i) == (method, ipc) for a in accs]


def _means(method, ipc):
    """The method seeds' means: the samples of a cell's ± and of its t-test."""
    return [float(np.mean(accs)) for (m, i, _), accs in ACC.items() if (m, i) == (method, ipc)]


def test_report_carries_the_numbers_of_the_database(db, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--db", str(db), "--report", str(out), "--reference", "random"]) == 0
    terminal = capsys.readouterr().out
    md = (out / "report.md").read_text()
    for method, ipc in [("random", 1), ("random", 10), ("dm", 1), ("dm", 10)]:
        means = _means(method, ipc)  # mean ± sample std (ddof=1) over the 2 method seeds
        text = f"{np.mean(means):.2f} ± {np.std(means, ddof=1):.2f} (2 seeds"
        assert text in md and text in terminal
    # Welch's t-test of the seed means against the reference's, marked; the pooled one only labelled.
    p1 = stats.ttest_ind(_means("dm", 1), _means("random", 1), equal_var=False).pvalue
    p10 = stats.ttest_ind(_means("dm", 10), _means("random", 10), equal_var=False).pvalue
    pooled1 = stats.ttest_ind(_pooled("dm", 1), _pooled("random", 1), equal_var=False).pvalue
    assert 0.001 < p1 < 0.01 and p10 > 0.05 and pooled1 < 0.001
    assert f"(2 seeds, p={p1:.3f} **)" in md and f"(2 seeds, p={p10:.3f})" in md
    assert f"Welch p over all networks pooled (counts networks trained on one set as independent" in md
    assert f"dm IPC 1 p={pooled1:.1e}" in md and f"p={pooled1:.1e}" not in terminal
    assert "(2 seeds, ref)" in md and "Welch" in md
    # gen IPC 10 has one ok seed: ± over its networks, and no p, with the reason.
    assert f"60.50 ± {np.std([60.0, 61.0], ddof=1):.2f} (1 seed, 2 nets, no p)" in terminal
    assert "no p-value for gen IPC 10: fewer than 2 method seeds on a side" in terminal
    # Failed cell and failed seed, with their error.
    assert "FAILED: RuntimeError: CUDA out of memory" in md and "[1 failed]" in md
    assert "CUDA out of memory" in terminal
    # Times, settings, run ids.
    assert "20.0 / 1.5" in md and "epochs=300" in md and "lr=1.0" in md and "`dm-10-1-None-ok-one`" in md

    with open(out / "results.csv") as fh:
        rows = {(r["method"], r["ipc"]): r for r in csv.DictReader(fh)}
    assert math.isclose(float(rows[("dm", "1")]["accuracy_mean"]), np.mean(_means("dm", 1)), abs_tol=1e-4)
    assert math.isclose(float(rows[("dm", "1")]["accuracy_std"]), np.std(_means("dm", 1), ddof=1), abs_tol=1e-4)
    assert rows[("dm", "1")]["std_over"] == "seeds" and rows[("gen", "10")]["std_over"] == "networks"
    assert math.isclose(float(rows[("dm", "1")]["p_value"]), p1, rel_tol=1e-3)
    assert math.isclose(float(rows[("dm", "1")]["p_value_pooled_networks"]), pooled1, rel_tol=1e-2)
    assert rows[("dm", "1")]["significance"] == "**" and rows[("random", "1")]["p_value"] == "ref"
    assert rows[("gen", "10")]["p_value"] == "" and "needs >= 2 on each side" in rows[("gen", "10")]["no_p_reason"]
    assert rows[("gen", "1")]["status"] == "failed" and "CUDA out of memory" in rows[("gen", "1")]["error"]
    assert rows[("gen", "10")]["status"] == "partial" and rows[("gen", "10")]["n_failed"] == "1"

    plot = out / "accuracy_vs_ipc.png"
    with Image.open(plot) as im:
        im.verify()
        assert im.format == "PNG"
    assert "![accuracy_vs_ipc](accuracy_vs_ipc.png)" in md
    for method, ipc in [("random", 1), ("dm", 10), ("gen", 10)]:  # one image grid per method and IPC
        grid = out / "grids" / f"{method}-ipc{ipc}.png"
        with Image.open(grid) as im:
            im.verify()
        assert f"(grids/{method}-ipc{ipc}.png)" in md
    assert not (out / "grids" / "gen-ipc1.png").exists()  # failed: no images


def test_report_filters_and_default_reference(db, tmp_path):
    result = build_report(db, tmp_path / "r", methods=["random", "dm"])
    assert [variant for sec in result.sections for variant in sec.variants] == [("random", None), ("dm", None)]
    assert result.sections[0].reference == "random"  # the first method listed is the default reference
    result = build_report(db, tmp_path / "r2", methods=["dm", "random"])
    assert result.sections[0].reference == "dm"
    assert "gen" not in (tmp_path / "r" / "report.md").read_text()


def test_budget_runs_get_their_own_rows_and_plot(tmp_path):
    db = tmp_path / "ddbench.sqlite"
    for budget, accs in [(30.0, [55.0, 56.0]), (60.0, [60.0, 62.0])]:
        record(db, _row(tmp_path, "gen", 10, 0, accs, budget=budget))
    record(db, _row(tmp_path, "random", 10, 0, [50.0, 51.0]))
    result = build_report(db, tmp_path / "r")
    md = result.markdown.read_text()
    assert "| gen (30 s) |" in md and "| gen (60 s) |" in md
    assert {p.name for p in result.plots} == {"accuracy_vs_ipc.png", "budget_vs_reference.png"}
    with Image.open(tmp_path / "r" / "budget_vs_reference.png") as im:
        im.verify()


def test_latest_run_per_seed_wins(tmp_path):
    db = tmp_path / "ddbench.sqlite"
    record(db, _row(tmp_path, "random", 1, 0, [10.0, 10.0], created=1.0, config_hash="old"))
    record(db, _row(tmp_path, "random", 1, 0, [30.0, 30.0], created=2.0, config_hash="new"))
    result = build_report(db, tmp_path / "r")
    md = result.markdown.read_text()
    assert "30.00 ± 0.00 (1 seed, 2 nets" in md and "10.00" not in md and "1 older run(s)" in md


def test_other_evaluation_settings_get_their_own_section_not_the_latest_slot(tmp_path):
    """A no-augmentation re-run of a cell must not replace the augmented run of the same seed (nor pool with it)."""
    db = tmp_path / "ddbench.sqlite"
    aug = _row(tmp_path, "random", 1, 0, [10.0, 12.0], created=1.0, config_hash="h-a1")
    aug.config = {"protocol_settings": {"epochs": 300, "dsa": True, "impl": "fast"}}
    noaug = _row(tmp_path, "random", 1, 0, [30.0, 32.0], created=2.0, config_hash="h-n2")
    noaug.config = {"protocol_settings": {"epochs": 300, "dsa": False, "impl": "loop"}}
    for r in (aug, noaug):
        record(db, r)
    result = build_report(db, tmp_path / "r")
    assert len(result.sections) == 2
    titles = sorted(sec.title for sec in result.sections)
    cut = " · cut protocol: 300 of 1000 epochs"  # `fast` follows the 1000-epoch protocol (standard_epochs)
    assert titles == [f"tiny · protocol fast · convnet · dsa=False{cut}", f"tiny · protocol fast · convnet · dsa=True{cut}"]
    means = {sec.title.removesuffix(cut).rsplit("=", 1)[1]: sec.cell(("random", None), 1).mean for sec in result.sections}
    assert means == {"False": 31.0, "True": 11.0}
    md = result.markdown.read_text()
    assert "older run" not in md and "dsa=False" in md
    with open(tmp_path / "r" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["eval_settings"] for r in rows) == ["dsa=False epochs=300", "dsa=True epochs=300"]
    # an implementation-only difference (impl) is the same evaluation: a re-run replaces the older one
    again = _row(tmp_path, "random", 1, 0, [50.0, 50.0], created=3.0, config_hash="h-a3")
    again.config = {"protocol_settings": {"epochs": 300, "dsa": True, "impl": "loop"}}
    record(db, again)
    result = build_report(db, tmp_path / "r2")
    assert len(result.sections) == 2
    assert {sec.cell(("random", None), 1).mean for sec in result.sections} == {31.0, 50.0}


def test_sections_per_dataset_and_protocol(tmp_path):
    db = tmp_path / "ddbench.sqlite"
    record(db, _row(tmp_path, "random", 1, 0, [10.0, 11.0]))
    other = _row(tmp_path, "random", 1, 0, [20.0, 21.0], config_hash="other")
    other.protocol = "dsa"
    record(db, other)
    result = build_report(db, tmp_path / "r")
    assert len(result.sections) == 2 and len(result.plots) == 2
    assert all(p.is_file() for p in result.plots)


def test_a_section_under_fewer_epochs_than_its_protocol_claims_is_labelled_cut(tmp_path):
    """`fast` and `dsa` follow the 1000-epoch protocol (Protocol.standard_epochs): a table of runs trained for fewer
    is a cut protocol, said in its title and in report.md; the full 1000 epochs are not labelled."""
    db = tmp_path / "ddbench.sqlite"
    cut = _row(tmp_path, "random", 1, 0, [10.0, 11.0], config_hash="cut")
    cut.config = {"protocol_settings": {"epochs": 100}}
    full = _row(tmp_path, "random", 1, 0, [20.0, 21.0], config_hash="full")
    full.protocol, full.config = "dsa", {"protocol_settings": {"epochs": 1000}}
    for r in (cut, full):
        record(db, r)
    result = build_report(db, tmp_path / "r")
    titles = {sec.protocol: sec.title for sec in result.sections}
    assert titles["fast"].endswith("· cut protocol: 100 of 1000 epochs") and "cut" not in titles["dsa"]
    md = result.markdown.read_text()
    assert md.count("**Cut protocol**: these networks trained 100 of the 1000 epochs") == 1
    assert "cut protocol: 100 of 1000 epochs" in result.terminal


def test_welch():
    assert welch([1.0], [2.0, 3.0]) is None
    assert welch([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch([1.0, 1.0], [2.0, 2.0]) == 0.0
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.5]
    assert math.isclose(welch(a, b), stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_report_without_database_is_bad_input(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no results database" in err and len(err.splitlines()) == 1


def test_empty_database_gives_an_empty_report(tmp_path):
    db = tmp_path / "ddbench.sqlite"
    record(db, _row(tmp_path, "random", 1, 0, [1.0]))
    result = build_report(db, tmp_path / "r", methods=["nothing"])
    assert result.sections == [] and "No runs to report" in result.markdown.read_text()


def test_the_p_value_is_over_seed_means_not_networks(tmp_path, capsys):
    # 2 seeds per side whose networks agree closely within a seed but whose seeds differ: pooled, the 2 x 5
    # networks look like 10 independent samples and give a p orders of magnitude below the honest one.
    db = tmp_path / "ddbench.sqlite"
    runs = {("random", 0): [50.0, 50.1, 49.9, 50.0, 50.05], ("random", 1): [53.0, 53.1, 52.9, 53.0, 52.95],
            ("dm", 0): [54.0, 54.1, 53.9, 54.0, 54.05], ("dm", 1): [57.5, 57.6, 57.4, 57.5, 57.45]}
    for t, ((method, seed), accs) in enumerate(runs.items()):
        record(db, _row(tmp_path, method, 1, seed, accs, created=1000.0 + t))
    means = {m: [float(np.mean(runs[m, s])) for s in (0, 1)] for m in ("random", "dm")}
    p_seeds = stats.ttest_ind(means["dm"], means["random"], equal_var=False).pvalue
    p_nets = stats.ttest_ind(runs["dm", 0] + runs["dm", 1], runs["random", 0] + runs["random", 1],
                             equal_var=False).pvalue
    assert p_seeds > 0.05 and p_nets < 1e-3 and p_seeds / p_nets > 100  # orders of magnitude apart
    assert main(["report", "--db", str(db), "--report", str(tmp_path / "r"), "--reference", "random"]) == 0
    terminal = capsys.readouterr().out
    (cell,) = [c for c in build_report(db, tmp_path / "r2", reference="random").sections[0].cells.values()
               if c.method == "dm"]
    assert cell.test.p == pytest.approx(p_seeds) and cell.test.p_pooled == pytest.approx(p_nets)
    assert cell.spread.over == "seeds" and cell.spread.std == pytest.approx(np.std(means["dm"], ddof=1))
    assert f"(2 seeds, p={p_seeds:.3f})" in terminal and f"{p_nets:.1e}" not in terminal
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"(2 seeds, p={p_seeds:.3f})" in md and f"pooled (counts networks" in md and f"p={p_nets:.1e}" in md


def test_one_seed_per_side_prints_no_p_and_says_why(tmp_path, capsys):
    db = tmp_path / "ddbench.sqlite"
    record(db, _row(tmp_path, "random", 1, 0, [50.0, 51.0, 49.0], created=1.0))
    record(db, _row(tmp_path, "dm", 1, 0, [60.0, 61.0, 59.0], created=2.0))
    assert main(["report", "--db", str(db), "--report", str(tmp_path / "r"), "--reference", "random"]) == 0
    terminal = capsys.readouterr().out
    assert "60.00 ± 1.00 (1 seed, 3 nets, no p)" in terminal  # sample std of the one seed's networks
    assert "p=" not in terminal.split("== scores")[0]
    assert ("no p-value for dm IPC 1: fewer than 2 method seeds on a side (this cell's or random's); the t-test is "
            "over method-seed means") in terminal
