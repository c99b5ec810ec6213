"""The report's accuracy-per-second curve (ddbench/analysis/report_curves.py): drawn for a section with runs of one
method differing only in an iteration count, with random real and herding as lines; not drawn without such a series."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ddbench.analysis.report import build_report
from ddbench.analysis.report_curves import find_series
from ddbench.store.results import record
from test_report import _row

SEEDS = (0, 1, 2)


def _run(tmp_path, method, seed, accs, params, seconds, tag, ipc=1):
    """A hand-made ok run with these method settings and distill seconds; `tag` keeps config hashes apart."""
    r = _row(tmp_path, method, ipc, seed, accs, config_hash=f"h-{method}-{tag}-{seed}")
    return replace(r, run_id=f"{method}-{tag}-{seed}", config={**r.config, "method_params": params},
                   distill_seconds=seconds)


def _acc(base: float, seed: int) -> list[float]:
    return [base + seed, base + seed + 1.0]


@pytest.fixture
def sweep_db(tmp_path):
    """random and herding at IPC 1; dm from real at 10/50/150 iterations; dm from each seed's herding run at 10/50;
    minmax-diffusion at refine_iterations 0/50 (2 seeds)."""
    db = tmp_path / "ddbench.sqlite"
    herding_ids = {}
    for seed in SEEDS:
        record(db, _run(tmp_path, "random", seed, _acc(40.0, seed), {}, 0.1, "r"))
        herding = _run(tmp_path, "herding", seed, _acc(45.0, seed), {"space": "pixels"}, 3.0, "h")
        herding_ids[seed] = herding.run_id
        record(db, herding)
        for iters, base, seconds in ((10, 50.0, 4.0), (50, 55.0, 20.0), (150, 58.0, 60.0)):
            params = {"iterations": iters, "init": "real", "lr_img": 1.0}
            record(db, _run(tmp_path, "dm", seed, _acc(base, seed), params, seconds + seed, f"real{iters}"))
        for iters, base, seconds in ((10, 52.0, 4.0), (50, 56.0, 20.0)):
            params = {"iterations": iters, "init": f"run:{herding.run_id}", "lr_img": 1.0}
            record(db, _run(tmp_path, "dm", seed, _acc(base, seed), params, seconds, f"herd{iters}"))
    for seed in SEEDS[:2]:
        for iters, base, seconds in ((0, 45.0, 30.0), (50, 57.0, 44.0)):
            params = {"refine": "dm", "refine_iterations": iters, "guidance": 2.0}
            record(db, _run(tmp_path, "minmax-diffusion", seed, _acc(base, seed), params, seconds, f"mm{iters}"))
    return db, herding_ids


def test_a_section_with_an_iteration_sweep_gets_the_curve(sweep_db, tmp_path):
    db, _ = sweep_db
    result = build_report(db, tmp_path / "r", methods=["random", "herding", "dm", "minmax-diffusion"])
    plot = tmp_path / "r" / "accuracy_vs_seconds.png"
    with Image.open(plot) as im:
        im.verify()
        assert im.format == "PNG"
    assert plot in result.plots and plot in result.section_plots[result.sections[0].slug]
    assert "![accuracy_vs_seconds](accuracy_vs_seconds.png)" in result.markdown.read_text()
    from ddbench.analysis.report_html import write_html

    write_html(result)  # report.html embeds it as the other plots, as data
    assert 'alt="accuracy_vs_seconds"' in result.html.read_text()


def test_the_series_are_what_the_runs_say(sweep_db, tmp_path):
    """One line per method and start; points by iteration count, accuracy over seed means, seconds over seeds, a
    warm start's seconds including its herding run's."""
    db, herding_ids = sweep_db
    from ddbench.analysis.report import latest_per_config
    from ddbench.store.results import query

    rows = latest_per_config(db)
    series = {s.label: s for s in find_series(rows, {r.run_id: r for r in query(db)})}
    assert set(series) == {"dm (init=real)", "dm (init=run:herding)", "minmax-diffusion"}
    real = series["dm (init=real)"]
    assert real.keys == ("iterations",) and [p.iterations for p in real.points] == [(10,), (50,), (150,)]
    seed_means = [np.mean(_acc(55.0, s)) for s in SEEDS]
    p50 = real.points[1]
    assert p50.spread.mean == pytest.approx(np.mean(seed_means))
    assert p50.spread.std == pytest.approx(np.std(seed_means, ddof=1)) and p50.spread.over == "seeds"
    assert p50.seconds == pytest.approx(np.mean([20.0 + s for s in SEEDS]))
    warm = series["dm (init=run:herding)"]
    assert [p.seconds for p in warm.points] == pytest.approx([4.0 + 3.0, 20.0 + 3.0])  # herding's 3 s added
    assert {r.config["method_params"]["init"] for p in warm.points for r in p.runs} == \
        {f"run:{i}" for i in herding_ids.values()}  # each seed from its own herding run: one line
    mm = series["minmax-diffusion"]
    assert mm.keys == ("refine_iterations",) and [p.iterations for p in mm.points] == [(0,), (50,)]
    assert len(mm.points[0].runs) == 2


def test_the_axis_is_the_declared_generation_seconds_else_distill_seconds(tmp_path):
    """A run that declared generation_seconds (sampling + refine, a matching loop) is placed there, not at its
    distill seconds (which hold loading a cached generator); one that did not falls back to distill seconds."""
    from ddbench.analysis.report import latest_per_config
    from ddbench.store.results import query

    db = tmp_path / "ddbench.sqlite"
    herding = _run(tmp_path, "herding", 0, [60.0], {"space": "pixels"}, 9.0, "h")
    record(db, replace(herding, meta={"generation_seconds": 8.0}))
    for iters, distill, declared in ((0, 30.0, 0.2), (10, 33.0, 2.5)):
        run = _run(tmp_path, "minmax-diffusion", 0, [70.0], {"refine_iterations": iters}, distill, f"mm{iters}")
        record(db, replace(run, meta={"generation_seconds": declared}))
    for iters, distill in ((10, 4.0), (50, 20.0)):
        params = {"iterations": iters, "init": f"run:{herding.run_id}"}
        record(db, _run(tmp_path, "dm", 0, [65.0], params, distill, f"herd{iters}"))
    series = {s.label: s for s in find_series(latest_per_config(db), {r.run_id: r for r in query(db)})}
    assert [p.seconds for p in series["minmax-diffusion"].points] == pytest.approx([0.2, 2.5])
    assert [p.seconds for p in series["dm"].points] == pytest.approx([4.0 + 8.0, 20.0 + 8.0])  # herding's declared 8 s


def test_no_curve_without_a_series(tmp_path):
    """One iteration count per method, or runs that differ in another setting too: no series, no plot."""
    db = tmp_path / "ddbench.sqlite"
    for seed in SEEDS:
        record(db, _run(tmp_path, "random", seed, _acc(40.0, seed), {}, 0.1, "r"))
        record(db, _run(tmp_path, "dm", seed, _acc(50.0, seed), {"iterations": 50, "lr_img": 1.0}, 9.0, "a"))
        record(db, _run(tmp_path, "dm", seed, _acc(51.0, seed), {"iterations": 50, "lr_img": 0.5}, 9.0, "b"))
        record(db, _run(tmp_path, "dm", seed, _acc(52.0, seed), {"iterations": 100, "lr_img": 0.5, "batch_real": 8},
                        9.0, "c"))
    result = build_report(db, tmp_path / "r")
    assert not (tmp_path / "r" / "accuracy_vs_seconds.png").exists()
    assert all("accuracy_vs_seconds" not in p.name for p in result.plots)
    # a budget run is no point of a series either
    for budget in (10.0, 20.0):
        r = _run(tmp_path, "dm", 0, [50.0, 51.0], {"iterations": int(budget)}, budget, f"budget{budget}")
        record(db, replace(r, budget=budget))
    assert not any("accuracy_vs_seconds" in p.name for p in build_report(db, tmp_path / "r2").plots)


def test_a_method_declares_its_own_iteration_setting(tmp_path):
    rows = [_run(tmp_path, "gen", seed, _acc(50.0 + steps / 10, seed), {"steps": steps}, float(steps), f"s{steps}")
            for seed in SEEDS[:2] for steps in (10, 20)]
    assert find_series(rows, {}) == []
    registry = SimpleNamespace(methods={"gen": SimpleNamespace(iteration_settings=("steps",))})
    (series,) = find_series(rows, {}, registry)
    assert series.keys == ("steps",) and [p.seconds for p in series.points] == [10.0, 20.0]
