"""benchmarks/bench_warm.py without running a cell: the plan's order, the commands (DM from herding starts from the
same seed's herding run), the seconds from scratch and the report's statistics over hand-written cells."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_warm as bw  # noqa: E402

from ddbench.core.stats import welch  # noqa: E402


@pytest.fixture
def cells(tmp_path, monkeypatch):
    monkeypatch.setattr(bw, "CELLS", tmp_path)
    return tmp_path


def _store(folder: Path, name: str, accuracy: float, seconds: float, meta=None, run_id="r") -> None:
    summary = {"accuracy_mean": accuracy, "distill_seconds": seconds, "run_id": run_id}
    cell = {"command": "ddbench run ...", "summary": summary, "meta": meta or {}}
    (folder / f"{name}.json").write_text(json.dumps(cell))


def test_the_plan_runs_three_seeds_of_every_point_first_and_herding_before_its_warm_starts(cells):
    plan = bw.Study(seeds=5, adopt=False).plan()
    per_point = len(bw.REFINE_ITERATIONS) + 2 * len(bw.DM_ITERATIONS) + 2
    assert len(plan) == 2 * 5 * per_point
    seeds = [seed for _, _, _, seed in plan]
    assert set(seeds[: 2 * 3 * per_point]) == {0, 1, 2} and set(seeds[2 * 3 * per_point:]) == {3, 4}
    for ipc, series, n, seed in plan:
        if series == "dm-herding":
            assert plan.index((ipc, "herding", None, seed)) < plan.index((ipc, series, n, seed))
    assert {c[0] for c in bw.Study(seeds=2, only=(1,), adopt=False).plan()} == {1}
    assert max(c[3] for c in bw.Study(seeds=2, adopt=False).plan()) == 1


def test_the_commands_of_the_cells(cells):
    study = bw.Study(adopt=False)
    method, args = study.args(1, "refine", 25, 3)
    assert method == "minmax-diffusion" and args[:4] == ["--ipc", "1", "--seed", "3"]
    assert "refine=dm" in args and "refine_iterations=25" in args and "refine_settings=batch_real=32" in args
    assert " ".join(bw.PROTOCOLS[1]) in " ".join(args)
    method, args = study.args(10, "dm-real", 50, 0)
    assert method == "dm" and "iterations=50" in args and not any(a.startswith("init=") for a in args)
    assert " ".join(bw.PROTOCOLS[10]) in " ".join(args)
    assert study.args(1, "dm-herding", 10, 0) is None  # no herding run yet: nothing to start from
    _store(cells, "ipc1-herding-s0", 45.0, 2.0, run_id="20261207-herd0")
    method, args = study.args(1, "dm-herding", 10, 0)
    assert method == "dm" and "init=run:20261207-herd0" in args and "iterations=10" in args


def test_seconds_from_scratch():
    mm = {"summary": {"distill_seconds": 12.0}, "meta": {"generator_seconds": 2.0,
                                                           "generator": {"finetune": {"train": {"seconds": 50.0}}}}}
    assert bw.seconds_from_scratch(mm) == pytest.approx(60.0)  # the cached generator's load swapped for its training
    dm = {"summary": {"distill_seconds": 8.0}, "meta": {}}
    assert bw.seconds_from_scratch(dm, start={"summary": {"distill_seconds": 3.0}, "meta": {}}) == pytest.approx(11.0)


def test_the_report_compares_at_equal_iterations_over_seed_means(cells, capsys):
    study = bw.Study(seeds=3, only=(1,), adopt=False)
    real = [60.0, 62.0, 61.0]
    herd = [64.0, 63.0, 66.0]
    for seed in range(3):
        _store(cells, f"ipc1-random-s{seed}", 50.0 + seed, 0.0)
        _store(cells, f"ipc1-herding-s{seed}", 55.0 + seed / 2, 2.0, meta={"selection_seconds": 1.5})
        _store(cells, f"ipc1-dm-real-50-s{seed}", real[seed], 20.0, meta={"seconds_this_session": 18.0})
        _store(cells, f"ipc1-dm-herding-50-s{seed}", herd[seed], 20.0, meta={"seconds_this_session": 18.0})
    text = bw.table(study, 1)
    row = next(line for line in text.splitlines() if line.startswith("| DM from herding | 50 |"))
    p = welch(herd, real)
    # after training: DM's loop + herding's selection; from scratch: both distill times
    assert f"{sum(herd) / 3:.2f} ± " in row and "(3)" in row and "| 19.5 (22.0) |" in row
    assert f"{sum(herd) / 3 - sum(real) / 3:+.2f}, p {p:.2g}" in row
    assert "| DM from random real | 10 | (not run) |" in text
    assert text.splitlines()[-1].startswith("Evaluation arithmetic of the cells") and "DM from herding 50" in text
    bw.report(study, write=False)
    assert "IPC 1, protocol dsa" in capsys.readouterr().out


def test_seconds_after_training_are_the_budget_tracks_clock():
    refined = {"summary": {"distill_seconds": 40.0}, "meta": {"generator_seconds": 20.0, "sampler": {"seconds": 0.3},
                                                              "refine": {"seconds": 2.2}}}
    assert bw.seconds_after_training(refined) == pytest.approx(2.5)  # no generator load, no quality figures
    herding = {"summary": {"distill_seconds": 25.0}, "meta": {"selection_seconds": 24.0}}
    dm = {"summary": {"distill_seconds": 9.0}, "meta": {"seconds_this_session": 7.0}}
    assert bw.seconds_after_training(dm, start=herding) == pytest.approx(31.0)
    assert bw.seconds_after_training({"summary": {"distill_seconds": 0.1}, "meta": {}}) == 0.0  # random real
    resumed = {"summary": {"distill_seconds": 1.0}, "meta": {"seconds_this_session": 0.002, "resumed_from": 50}}
    assert bw.seconds_after_training(resumed) is None  # a resumed loop's earlier seconds are unknown, not 0


def test_the_curve_is_drawn_once_a_line_has_two_points(cells, tmp_path):
    study = bw.Study(seeds=2, only=(1,), adopt=False)
    target = tmp_path / "img" / "warm-ipc1.png"
    for seed in range(2):
        _store(cells, f"ipc1-random-s{seed}", 50.0 + seed, 0.0)
        _store(cells, f"ipc1-herding-s{seed}", 69.0, 20.0, meta={"selection_seconds": 20.0})
    assert bw.plot(study, 1, target) is None and not target.exists()  # lines at 0 iterations only
    for seed in range(2):
        _store(cells, f"ipc1-dm-real-10-s{seed}", 65.0 + seed, 3.0, meta={"seconds_this_session": 2.5})
    assert [(n, p["after"]) for n, p in bw.curve(study, 1, "dm-real")] == [(0, 0.0), (10, 2.5)]
    assert bw.plot(study, 1, target) == target and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_budget_track_plans_the_goals_budgets_first_with_equal_count_commands(cells):
    plan = bw.BudgetStudy(seeds=5, only=(1,), adopt=False).plan()
    assert plan[:4] == [(1, "budget-refine", 10, 0), (1, "budget-dm-real", 10, 0), (1, "budget-refine", 30, 0),
                        (1, "budget-dm-real", 30, 0)]
    first_late = next(i for i, c in enumerate(plan) if c[2] in (5, 60))
    assert {c[2] for c in plan[:first_late]} == {10, 30} and len(plan[:first_late]) == 2 * 2 * 5
    assert [c[3] for c in plan[:first_late:4]] == [0, 1, 2, 3, 4]  # seeds 0-2 of T 10 and 30 first, then 3-4
    study = bw.BudgetStudy(adopt=False)
    method, args = study.args(1, "budget-refine", 10, 2)
    assert method == "minmax-diffusion" and args[:4] == ["--ipc", "1", "--seed", "2"]
    joined = " ".join(args)
    assert "--budget 10 --set policy=fixed-ipc --set refine=dm --set refine_iterations=20000" in joined
    method, args = study.args(1, "budget-dm-real", 30, 2)
    assert method == "dm" and "--budget 30 --set iterations=20000 --set batch_real=32" in " ".join(args)


def test_the_budget_report_compares_at_equal_seconds_over_seed_means(cells, capsys):
    study = bw.BudgetStudy(seeds=3, only=(1,), adopt=False)
    refine = [71.0, 72.0, 71.5]
    dm = [70.0, 70.5, 69.5]
    for seed in range(3):
        _store(cells, f"ipc1-refine-0-s{seed}", 62.0 + seed, 60.0, meta={"sampler": {"seconds": 0.4}})
        _store(cells, f"ipc1-budget-refine-10-s{seed}", refine[seed], 90.0,
               meta={"sampler": {"seconds": 0.5}, "refine": {"seconds": 9.0, "iterations_done": 20 + seed}})
        _store(cells, f"ipc1-budget-dm-real-10-s{seed}", dm[seed], 11.0,
               meta={"seconds_this_session": 9.5, "iterations_done": 40})
    text = bw.budget_table(study, 1)
    row = next(line for line in text.splitlines() if line.startswith("| 10 | Min-Max Diffusion + refine"))
    p = welch(refine, dm)
    assert "71.50 ± 0.50 (3)" in row and "| 9.5 | 21 |" in row and f"+1.50, p {p:.2g}" in row
    dm_row = next(line for line in text.splitlines() if line.startswith("| 10 | DM from random real"))
    assert "| 9.5 | 40 | — |" in dm_row
    plain = next(line for line in text.splitlines() if "no refine" in line)
    assert "63.00 ± 1.00 (3) | 0.4 |" in plain


@pytest.fixture
def results(tmp_path, monkeypatch):
    """Every results folder the studies read (warm, standard, reference, coreset) under tmp_path."""
    import bench_standard as bs

    for sub in ("warm", "standard", "reference", "coreset", "minmax-equal-count"):
        (tmp_path / sub).mkdir()
    monkeypatch.setattr(bw, "RESULTS", tmp_path)
    monkeypatch.setattr(bw, "CELLS", tmp_path / "warm")
    monkeypatch.setattr(bs, "RESULTS", tmp_path)
    monkeypatch.setattr(bs, "CELLS", tmp_path / "standard")
    return tmp_path


def _cell(folder: Path, name: str, accuracy: float, command: str, run_id: str = "r") -> None:
    summary = {"accuracy_mean": accuracy, "distill_seconds": 1.0, "run_id": run_id, "ipc": int(name[3:].split("-")[0])}
    (folder / f"{name}.json").write_text(json.dumps({"command": command, "summary": summary, "meta": {}}))


def test_the_convergence_track_runs_under_dsa_and_shares_ipc1_cells_with_the_curve(results):
    study = bw.ConvergenceStudy(adopt=False)
    plan = study.plan()
    assert len(plan) == 3 * 2 * 4 and {c[3] for c in plan} == {0, 1, 2}
    for ipc, series, n, seed in plan:
        if series == "dm-herding":
            assert plan.index((ipc, "herding", None, seed)) < plan.index((ipc, series, n, seed))
    # IPC 1 in the arithmetic of the standard table's IPC 1 cells (fp32), IPC 10 in its default; named apart from
    # the curve study's cells
    assert study.name(1, "refine", 150, 0) == "ipc1-fp32-refine-150-s0" != bw.Study().name(1, "refine", 150, 0)
    assert "--protocol dsa --eval-models 5 --set eval.precision=fp32" in " ".join(study.args(1, "refine", 150, 0)[1])
    assert "precision" not in " ".join(study.args(10, "refine", 150, 0)[1])
    assert study.name(10, "refine", 150, 2) == "ipc10-dsa-refine-150-s2"
    method, args = study.args(10, "refine-dsa-gm", 100, 1)
    joined = " ".join(args)
    assert method == "minmax-diffusion" and "--protocol dsa --eval-models 5" in joined and "fast" not in joined
    assert "refine=dsa-gm --set refine_iterations=100 --set refine_settings=batch_real=32,inner_loop=5" in joined


def test_the_convergence_track_never_adopts_a_cut_protocol_cell(results):
    fast = "ddbench run --method random --ipc 10 --seed 0 --protocol fast --eval-epochs 100 --eval-models 3"
    _cell(results / "reference", "ipc10-fast-s0", 72.0, fast)
    study = bw.ConvergenceStudy()
    assert study.load(10, "random", None, 0) is None  # the curve study would adopt it; the convergence track may not
    assert bw.Study().load(10, "random", None, 0)["summary"]["accuracy_mean"] == 72.0
    dsa = "ddbench run --method random --ipc 10 --seed 0 --protocol dsa --eval-models 5"
    _cell(results / "standard", "ipc10-dsa-random-s0", 76.5, dsa)
    assert study.load(10, "random", None, 0)["summary"]["accuracy_mean"] == 76.5


def test_the_convergence_table_compares_each_refine_with_its_matching_from_real(results):
    study = bw.ConvergenceStudy()
    dsa = "--protocol dsa --eval-models 5"
    gm_real, gm_refined, herding = [80.0, 80.5, 79.5], [82.0, 81.0, 81.5], [79.0, 79.5, 80.0]
    for seed in range(3):
        _cell(results / "standard", f"ipc10-dsa-dsa-gm-s{seed}", gm_real[seed], f"ddbench run --method dsa-gm {dsa}")
        _cell(results / "standard", f"ipc10-dsa-herding-s{seed}", herding[seed], f"ddbench run --method herding {dsa}")
        _cell(results / "warm", f"ipc10-dsa-refine-dsa-gm-100-s{seed}", gm_refined[seed], f"ddbench run {dsa} --set x")
    text = bw.convergence_table(study, 10)
    row = next(line for line in text.splitlines() if "refine=dsa-gm" in line)
    assert "81.50 ± 0.50 (3)" in row
    assert f"+1.50, p {welch(gm_refined, gm_real):.2g}" in row  # against DSA from random real
    assert f"+2.00, p {welch(gm_refined, herding):.2g}" in row  # against herding at equal count
    assert "| DM from herding | 150 | (not run) |" in text
    assert "(docs/evaluation.md#precision): fp32: herding, DSA, refine=dsa-gm.\n" in text  # no precision: fp32
    assert text.endswith("Min-Max Diffusion + refine=dm against DM from herding: —.")  # neither side run


def test_the_convergence_table_ends_with_the_control_refine_against_dm_from_herding(results):
    study = bw.ConvergenceStudy()
    dsa = "--protocol dsa --eval-models 5"
    refined, from_herding = [82.5, 82.0, 82.3], [81.7, 81.3, 81.7]
    for seed in range(3):
        _cell(results / "warm", f"ipc10-dsa-refine-150-s{seed}", refined[seed], f"ddbench run {dsa} --set r")
        _cell(results / "warm", f"ipc10-dsa-dm-herding-150-s{seed}", from_herding[seed], f"ddbench run {dsa} --set h")
    last = bw.convergence_table(study, 10).splitlines()[-1]
    assert last.startswith("The control (the same 150 DM iterations, only the start differs)")
    assert last.endswith(f"DM from herding: +0.70, p {welch(refined, from_herding):.2g}.")


def test_a_herding_start_is_the_curve_studys_herding_cell_when_the_standard_one_is_elsewhere(results, monkeypatch):
    monkeypatch.setattr(bw.bm, "OUT", str(results))
    artifact = results / "runs" / "h0" / "synset.pt"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"x")
    dsa_auto = "ddbench run --method herding --ipc 1 --seed 0 --protocol dsa --eval-models 5"
    _cell(results / "warm", "ipc1-herding-s0", 69.0, dsa_auto, run_id="h0")
    cell = json.loads((results / "warm" / "ipc1-herding-s0.json").read_text())
    cell["summary"]["artifact"] = str(artifact)
    (results / "warm" / "ipc1-herding-s0.json").write_text(json.dumps(cell))
    study = bw.ConvergenceStudy()
    assert study.where(1, "herding", None, 0) == results / "warm" / "ipc1-herding-s0.json"
    method, args = study.args(1, "dm-herding", 150, 0)
    assert method == "dm" and "init=run:h0" in args and "eval.precision=fp32" in args
    # none yet: the curve study's herding cell is run (its command), and shared with the curve study
    assert study.where(1, "herding", None, 1) == results / "warm" / "ipc1-herding-s1.json"
    assert study.args(1, "herding", None, 1) == bw.Study().args(1, "herding", None, 1)


def test_cells_are_stored_in_the_warm_folder_even_after_another_study_module_set_its_own(results, monkeypatch):
    import importlib

    import bench_standard as bs

    importlib.reload(bs)  # importing a study module points bench_minmax.CELLS at that study's folder
    monkeypatch.setattr(bw, "CELLS", results / "warm")
    stored = []
    monkeypatch.setattr(bw.bm, "run_cell", lambda name, method, args, cells=None: stored.append((name, cells)))
    study = bw.ConvergenceStudy(seeds=1, only=(1,), adopt=False)
    study.run()
    assert stored and {cells for _, cells in stored} == {results / "warm"}
    assert bw.bm.CELLS != results / "warm"  # what the keyword protects against


def test_run_with_series_runs_only_those_cells_in_plan_order(cells, monkeypatch):
    ran: list[str] = []
    monkeypatch.setattr(bw.bm, "run_cell", lambda name, method, args, cells=None: ran.append(name))
    bw.ConvergenceStudy(seeds=2, only=(10,), adopt=False).run(("refine",))
    assert ran == ["ipc10-dsa-refine-150-s0", "ipc10-dsa-refine-150-s1"]
    ran.clear()
    bw.Study(seeds=1, only=(1,), adopt=False).run(("random", "refine", "dm-real"), (10, 25))
    assert ran == ["ipc1-random-s0", "ipc1-refine-10-s0", "ipc1-refine-25-s0", "ipc1-dm-real-10-s0",
                   "ipc1-dm-real-25-s0"]
    with pytest.raises(SystemExit):
        bw.main(["run", "--track", "convergence", "--series", "nope"])
    with pytest.raises(SystemExit):
        bw.main(["run", "--only", "ipc1", "--iterations", "7"])  # not a count of the plan: refused, nothing run
    assert ran == ["ipc1-random-s0", "ipc1-refine-10-s0", "ipc1-refine-25-s0", "ipc1-dm-real-10-s0",
                   "ipc1-dm-real-25-s0"]
