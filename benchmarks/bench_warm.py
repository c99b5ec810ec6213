"""Generated images as the start of matching (issue 31, docs/minmax.md#refine): accuracy against matching
iterations and seconds for Min-Max Diffusion refined with DM (refine=dm), DM from random real images and DM from
herding's selection (init=run:ID), beside random real and herding at equal count. Fashion-MNIST, IPC 1 under the
standard `dsa` protocol (1000 epochs, 5 networks) and IPC 10 under `fast` cut to 100 epochs (3 networks: a cut
protocol, labelled so). Every cell a plain `ddbench run`, resumable.

    DDBENCH_STUDY_LOCK=/tmp/ddbench-cpu.lock python benchmarks/bench_warm.py run   # missing cells, in plan order
    python benchmarks/bench_warm.py run --only ipc1 --seeds 3          # IPC 1 only, 3 seeds per point
    python benchmarks/bench_warm.py plan                               # the cells, adopted / stored / to run
    python benchmarks/bench_warm.py report [--write]                   # the table (docs/minmax.md marker block)
    DDBENCH_STUDY_LOCK=/tmp/ddbench-cpu.lock python benchmarks/bench_warm.py run --track budget --only ipc1
                                                    # the budget track: equal count, equal seconds (issue 31.4)
    DDBENCH_STUDY_LOCK=/tmp/ddbench-cpu.lock python benchmarks/bench_warm.py run --track convergence
                                                    # each matching run to its CPU preset, under dsa (issue 31.5)

The budget track (docs/minmax.md#the-budget-track-with-refine): under `--budget T` seconds after training, at the
run's --ipc, Min-Max Diffusion samples its set (policy fixed-ipc) and refines it with DM for the seconds left; DM
from random real matches for the same T; Min-Max Diffusion without refine (its sampling alone, a few seconds) and
random real are the plain cells. Both loops are capped at DM's paper count (20000) so that the deadline ends them.

The convergence track (docs/minmax.md#at-convergence): under the standard `dsa` protocol at IPC 1 and 10, every
matching run to its CPU preset's count: Min-Max Diffusion + refine=dm (150 iterations) against DM from random real,
Min-Max Diffusion + refine=dsa-gm (100 image updates) against DSA from random real (both the standard table's
cells), and DM from herding's selection as the control that separates a better start from a generated one; all
beside herding and the unrefined set at equal count, in the arithmetic of the standard table's cells (IPC 1: fp32).

Cells are stored atomically in benchmarks/results/warm/<cell>.json by bench_minmax.run_cell (command, summary,
meta), one at a time under `flock $DDBENCH_STUDY_LOCK` when set; a stored cell is never run again. Order: seeds
0-2 of every point first (IPC 1, then IPC 10), then seeds 3-4; within a seed herding first (DM's warm start needs
its run id), then random real, the refine points, DM from real, DM from herding. Cells other studies ran with the
same command are read in place (ADOPTED; `--no-adopt` runs them here): random real (results/reference), herding
(results/coreset; only when its synthetic set is in this --out's database, else it is run here, since
init=run:ID reads it from there), DM at 150 iterations (the CPU preset: results/standard), and refine_iterations=0
from the plain Min-Max Diffusion cells (results/minmax-equal-count; refine_iterations=0 is exactly no refine,
tests/test_refine.py::test_refine_iterations_zero_equals_no_refine_exactly).

Statistics: mean ± sample std over the seeds' means; Welch's t-test over seed means (ddbench/core/stats.py) against DM
from random real at the same number of iterations (DM from real at 0 iterations is random real itself: init=real
draws the random baseline's images with the same seed) and against random real. Seconds are per cell, from
scratch: distill seconds, plus herding's for DM from herding, and for Min-Max Diffusion the fine-tuning's recorded
training seconds in place of the time to load it when a cell found it cached.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_minmax as bm  # noqa: E402 - one run_cell / welch for every study
import bench_standard as bs  # noqa: E402 - the standard table's cells, read only (its import sets bm.CELLS)

ROOT = bm.ROOT
RESULTS = ROOT / "benchmarks" / "results"
bm.CELLS = CELLS = RESULTS / "warm"

# IPC 1: the standard protocol (bench_minmax IPC1_EVAL: main_DM.py --epoch_eval_train 1000, 5 networks); IPC 10:
# `fast` cut to 100 epochs, 3 networks (bench_minmax IPC10_EVAL: a 1000-epoch IPC-10 evaluation takes ~28 min here).
PROTOCOLS: dict[int, list[str]] = {1: bm.IPC1_EVAL, 10: bm.IPC10_EVAL}
PROTOCOL_LABEL = {1: "dsa (1000 epochs, 5 nets)", 10: "cut: fast at 100 of 1000 epochs (3 nets)"}
IPCS = (1, 10)
# Iteration counts: the 0, 10, 25, 50, 100, 150 (up to DM's CPU preset of 150, plugins.toml
# [methods.dm.fashion-mnist], docs/baselines.md#dm-preset-re-sized-to-the-faster-layout; 0 = the generated set
# itself), and 2 and 5: at IPC 1 DM from random real reached its plateau by 10 iterations (seed 0: 70.90 % at 10,
# 70.47 at 150), so where a start can show is below 10.
REFINE_ITERATIONS = (0, 2, 5, 10, 25, 50, 100, 150)
DM_ITERATIONS = (2, 5, 10, 25, 50, 100, 150)
BATCH_REAL = 32  # DM's CPU preset: 32 real images per class per iteration (plugins.toml), for refine and DM alike
SEEDS = 5  # method seeds per point, as the standard table's headline rows (bench_standard METHODS)
SEED_PHASES = ((0, 1, 2), (3, 4))  # every point at 3 seeds first, then the last 2
# series: (label in the table, method)
SERIES = {"refine": ("Min-Max Diffusion + refine=dm", "minmax-diffusion"), "dm-real": ("DM from random real", "dm"),
          "dm-herding": ("DM from herding", "dm")}
# The budget track: seconds after training (issue 31: T = 5, 10, 30, 60 s; its goal is stated at 10 and 30, run
# first). The iteration cap of both loops is DM's paper count (VICO-UoE/DatasetCondensation main_DM.py --Iteration
# 20000): never reached in these budgets, so the deadline ends every loop.
BUDGETS = ((10, 30), (5, 60))
BUDGET_CAP = 20000
BUDGET_SERIES = {"budget-refine": "Min-Max Diffusion + refine=dm (fixed-ipc)", "budget-dm-real": "DM from random real"}
# The convergence track: the standard protocol at both IPCs (bench_standard PROTOCOLS["dsa"]), 3 method seeds (the
# standard table's count for DM, DSA and herding, whose cells it compares against). dsa-gm's CPU preset
# (plugins.toml [methods.dsa-gm.fashion-mnist]): 100 image updates, batch_real 32, inner_loop 5.
CONV_PROTOCOL = ["--protocol", "dsa", "--eval-models", "5"]
# The arithmetic of the cells compared against: the standard table's IPC 1 cells ran fp32 (before bf16 became the
# default), its IPC 10 cells the default `auto` (bf16 on a CPU with avx512_bf16), so IPC 1 pins fp32 and is named so.
CONV_PROTOCOLS = {1: CONV_PROTOCOL + ["--set", "eval.precision=fp32"], 10: CONV_PROTOCOL}
CONV_TAG = {1: "fp32-", 10: "dsa-"}
CONV_SEEDS = 3
GM_UPDATES = 100
GM_SETTINGS = f"batch_real={BATCH_REAL},inner_loop=5"
CONV_SERIES = {"refine": "Min-Max Diffusion + refine=dm", "refine-dsa-gm": "Min-Max Diffusion + refine=dsa-gm",
               "dm-herding": "DM from herding"}


def cell_name(ipc: int, series: str, iterations: int | None, seed: int) -> str:
    """ipc1-refine-50-s0, ipc10-dm-herding-25-s3; the baselines: ipc1-random-s0, ipc1-herding-s0; the budget
    track's cells carry the budget in seconds: ipc1-budget-refine-10-s0, ipc1-budget-dm-real-30-s2."""
    return f"ipc{ipc}-{series}{'' if iterations is None else f'-{iterations}'}-s{seed}"


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    return cell if cell.get("summary", {}).get("accuracy_mean") is not None else None


def _same_protocol(cell: dict[str, Any], ipc: int) -> bool:
    return " ".join(PROTOCOLS[ipc]) in cell.get("command", "")


def _in_this_out(cell: dict[str, Any]) -> bool:
    """Its synthetic set is a run of this study's --out (init=run:ID looks the run up in that database)."""
    artifact = cell["summary"].get("artifact")
    if not artifact or not Path(artifact).is_file():
        return False
    return Path(artifact).resolve().is_relative_to(Path(bm.OUT).resolve())


def adopted(ipc: int, series: str, iterations: int | None, seed: int) -> Path | None:
    """A cell another study ran with the same command (read in place, never re-run), checked before use."""
    proto = "dsa" if ipc == 1 else "fast100"
    table = {
        ("random", None): RESULTS / "reference" / f"ipc{ipc}-{'dsa' if ipc == 1 else 'fast'}-s{seed}.json",
        ("herding", None): RESULTS / "coreset" / f"ipc{ipc}-herding-s{seed}.json",
        ("dm-real", 150): RESULTS / "standard" / f"ipc{ipc}-{proto}-dm-s{seed}.json",
        ("refine", 0): RESULTS / "minmax-equal-count" / f"eq-ipc{ipc}-minmax-s{seed}.json",
    }
    path = table.get((series, iterations))
    cell = _read(path) if path is not None else None
    if cell is None or not _same_protocol(cell, ipc) or cell["summary"].get("ipc") != ipc:
        return None
    if series == "herding" and not _in_this_out(cell):
        return None
    if series == "dm-real" and (cell["meta"].get("iterations") != 150 or "--set" in cell["command"]):
        return None  # the standard table's DM cell is the plain CPU preset: 150 iterations, batch_real 32
    if series == "refine" and "--set" in cell["command"]:
        return None  # the plain preset only (refine=none: the same images as refine_iterations=0)
    return path


class Study:
    """The cells of the study and where each one is (adopted, stored, to run): the curve of accuracy against
    matching iterations, or (`BudgetStudy`) the budget track."""

    protocols: dict[int, list[str]] = PROTOCOLS

    def __init__(self, seeds: int = SEEDS, only: tuple[int, ...] = IPCS, adopt: bool = True):
        self.seeds, self.only, self.adopt = seeds, only, adopt

    def name(self, ipc: int, series: str, iterations: int | None, seed: int) -> str:
        return cell_name(ipc, series, iterations, seed)

    def plan(self) -> list[tuple[int, str, int | None, int]]:
        """(ipc, series, iterations, seed) in run order."""
        out = []
        for phase in SEED_PHASES:
            for ipc in self.only:
                for seed in (s for s in phase if s < self.seeds):
                    out += [(ipc, "herding", None, seed), (ipc, "random", None, seed)]
                    out += [(ipc, "refine", n, seed) for n in REFINE_ITERATIONS]
                    out += [(ipc, s, n, seed) for s in ("dm-real", "dm-herding") for n in DM_ITERATIONS]
        return out

    def where(self, ipc: int, series: str, iterations: int | None, seed: int) -> Path:
        found = adopted(ipc, series, iterations, seed) if self.adopt else None
        return found or CELLS / f"{self.name(ipc, series, iterations, seed)}.json"

    def load(self, ipc: int, series: str, iterations: int | None, seed: int) -> dict[str, Any] | None:
        return _read(self.where(ipc, series, iterations, seed))

    def args(self, ipc: int, series: str, iterations: int | None, seed: int) -> tuple[str, list[str]] | None:
        """(method, `ddbench run` arguments) of a cell; None when its herding start has no run yet. In the budget
        track `iterations` is the budget T in seconds."""
        base = ["--ipc", str(ipc), "--seed", str(seed), *self.protocols[ipc]]
        if series == "refine-dsa-gm":
            return "minmax-diffusion", base + ["--set", "refine=dsa-gm", "--set", f"refine_iterations={iterations}",
                                               "--set", f"refine_settings={GM_SETTINGS}"]
        if series == "budget-refine":
            return "minmax-diffusion", base + ["--budget", str(iterations), "--set", "policy=fixed-ipc",
                                               "--set", "refine=dm", "--set", f"refine_iterations={BUDGET_CAP}",
                                               "--set", f"refine_settings=batch_real={BATCH_REAL}"]
        if series == "budget-dm-real":
            return "dm", base + ["--budget", str(iterations), "--set", f"iterations={BUDGET_CAP}",
                                 "--set", f"batch_real={BATCH_REAL}"]
        if series in ("random", "herding"):
            return series, base
        if series == "refine":
            return "minmax-diffusion", base + ["--set", "refine=dm", "--set", f"refine_iterations={iterations}",
                                               "--set", f"refine_settings=batch_real={BATCH_REAL}"]
        dm = base + ["--set", f"iterations={iterations}", "--set", f"batch_real={BATCH_REAL}"]
        if series == "dm-real":
            return "dm", dm
        start = self.load(ipc, "herding", None, seed)
        if start is None or not start["summary"].get("run_id"):
            return None
        return "dm", dm + ["--set", f"init=run:{start['summary']['run_id']}"]

    def run(self, series: tuple[str, ...] = (), iterations: tuple[int, ...] = ()) -> None:
        """The missing cells in plan order; `series` (e.g. ("refine",)) and `iterations` (e.g. (10, 25)) run only
        the cells of those series and iteration counts (a cell without a count, random real or herding, is kept)."""
        for cell in self.plan():
            if series and cell[1] not in series or iterations and cell[2] is not None and cell[2] not in iterations:
                continue
            if self.load(*cell) is not None:
                continue
            what = self.args(*cell)
            if what is None:
                print(f"{self.name(*cell)}: its herding start did not run; skipped", flush=True)
                continue
            bm.run_cell(self.name(*cell), *what, cells=CELLS)


class BudgetStudy(Study):
    """The budget track: for each T, Min-Max Diffusion + refine and DM from real under --budget T at the run's
    IPC; the plain Min-Max Diffusion and random real cells are the curve study's (adopted where stored)."""

    def plan(self) -> list[tuple[int, str, int | None, int]]:
        out = []
        for budgets in BUDGETS:
            for phase in SEED_PHASES:
                for ipc in self.only:
                    for seed in (s for s in phase if s < self.seeds):
                        out += [(ipc, series, t, seed) for t in budgets for series in BUDGET_SERIES]
        return out


class ConvergenceStudy(Study):
    """The convergence track: the standard protocol at both IPCs, every matching run to its CPU preset. Its
    comparison cells are the standard table's (read in place), in their arithmetic; its own cells are named
    `ipc1-fp32-...` and `ipc10-dsa-...`. A herding start is the standard table's herding run when it is in this
    --out, else the curve study's herding cell (shared: only its images are used, not its evaluation)."""

    protocols = CONV_PROTOCOLS

    def __init__(self, seeds: int = CONV_SEEDS, only: tuple[int, ...] = IPCS, adopt: bool = True):
        super().__init__(seeds, only, adopt)
        self.curve = Study(seeds, only, adopt)

    def name(self, ipc: int, series: str, iterations: int | None, seed: int) -> str:
        if series == "herding":
            return self.curve.name(ipc, series, iterations, seed)
        return cell_name(ipc, CONV_TAG[ipc] + series, iterations, seed)

    def args(self, ipc: int, series: str, iterations: int | None, seed: int) -> tuple[str, list[str]] | None:
        if series == "herding":
            return self.curve.args(ipc, series, iterations, seed)
        return super().args(ipc, series, iterations, seed)

    def plan(self) -> list[tuple[int, str, int | None, int]]:
        out = []
        for seed in range(self.seeds):
            for ipc in self.only:
                out += [(ipc, "herding", None, seed), (ipc, "refine", DM_ITERATIONS[-1], seed),
                        (ipc, "refine-dsa-gm", GM_UPDATES, seed), (ipc, "dm-herding", DM_ITERATIONS[-1], seed)]
        return out

    def where(self, ipc: int, series: str, iterations: int | None, seed: int) -> Path:
        found = standard_cell(ipc, series, iterations, seed) if self.adopt else None
        if found is not None:
            return found
        if series == "herding":
            return self.curve.where(ipc, series, iterations, seed)
        return CELLS / f"{self.name(ipc, series, iterations, seed)}.json"  # never a cell of another protocol


def standard_cell(ipc: int, series: str, iterations: int | None, seed: int) -> Path | None:
    """The standard table's cell (benchmarks/results/standard, or the cell it adopts) for the convergence track's
    comparison rows, under `dsa` at this IPC. `herding` is the start of DM from herding, read only when its run is in
    this --out's database (init=run:ID looks it up there); `herding-row` is herding's accuracy, wherever it ran."""
    method = {("random", None): "random", ("herding", None): "herding", ("herding-row", None): "herding",
              ("refine", 0): "minmax-diffusion",
              ("dm-real", DM_ITERATIONS[-1]): "dm", ("dsa-gm-real", GM_UPDATES): "dsa-gm"}.get((series, iterations))
    if method is None:
        return None
    path = bs.adopted(ipc, "dsa", method, seed) or RESULTS / "standard" / f"{bs.cell_name(ipc, 'dsa', method, seed)}.json"
    cell = _read(path)
    if cell is None or " ".join(CONV_PROTOCOL) not in cell.get("command", "") or "--set" in cell["command"]:
        return None  # the standard table's plain commands only
    if series == "herding" and not _in_this_out(cell):
        return None
    return path


def convergence_table(study: Study, ipc: int) -> str:
    """Each matching run at its CPU preset's count against the same matching from random real, herding at equal
    count and the unrefined generated set; Welch over seed means."""
    n_dm = DM_ITERATIONS[-1]
    # (series, iterations, row label, its name in the arithmetic line, the matching from real it is compared with)
    dm_real, gm_real = ("dm-real", n_dm), ("dsa-gm-real", GM_UPDATES)
    spec = [("random", None, "random real", "random real", None),
            ("herding-row", None, "herding (real images)", "herding", None),
            ("refine", 0, "Min-Max Diffusion, no refine", "no refine", None),
            (*dm_real, "DM from random real", "DM", None),
            (*gm_real, "DSA from random real", "DSA", None),
            ("refine", n_dm, CONV_SERIES["refine"], "refine=dm", dm_real),
            ("refine-dsa-gm", GM_UPDATES, CONV_SERIES["refine-dsa-gm"], "refine=dsa-gm", gm_real),
            ("dm-herding", n_dm, CONV_SERIES["dm-herding"], "DM from herding", dm_real)]
    points = {(series, n): point(study, ipc, series, n) for series, n, *_ in spec}
    herding, plain = points[("herding-row", None)], points[("refine", 0)]
    lines = [f"IPC {ipc}, protocol dsa (1000 epochs, 5 nets), Fashion-MNIST, every matching run at its CPU preset's "
             "count (DM 150 iterations, DSA 100 image updates; plugins.toml); accuracy % = mean ± sample std over "
             "method seeds (n seeds); Welch p over seed means (benchmarks/bench_warm.py --track convergence).", "",
             "| set | matching iterations | accuracy % (n seeds) | vs the same matching from random real: Δ, p "
             "| vs herding: Δ, p | vs Min-Max Diffusion without refine: Δ, p |", "|---|---:|---|---|---|---|"]
    for series, n, label, _, ref in spec:
        s = points[(series, n)]
        lines.append(f"| {label} | {'-' if n is None else n} | {_acc(s)} | "
                     f"{_versus(s, points[ref]) if ref is not None else '—'} | {_versus(s, herding)} "
                     f"| {_versus(s, plain)} |")
    refined, control = points[("refine", n_dm)], points[("dm-herding", n_dm)]
    groups = {short: cells_of(study, ipc, series, n) for series, n, _, short, _ in spec}
    return ("\n".join(lines) + "\n\n" + arithmetic_line(groups) + "\n\n"
            f"The control (the same {n_dm} DM iterations, only the start differs): Min-Max Diffusion + refine=dm "
            f"against DM from herding: {_versus(refined, control)}.")


def arithmetic_line(groups: dict[str, list[dict[str, Any]]]) -> str:
    """The evaluation arithmetic behind each row ({row label: its cells}): bf16 passed the equivalence test against
    fp32 within 0.5 points (docs/evaluation.md#precision) and older cells ran fp32, so a reader sees where rows of
    both kinds meet."""
    used: dict[str, list[str]] = {}
    for label, cells in groups.items():
        for kind in sorted({bs.precision_of(c) for c in cells}):
            used.setdefault(kind, []).append(label)
    kinds = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(used.items()))
    return f"Evaluation arithmetic of the cells (docs/evaluation.md#precision): {kinds or 'none stored'}."


def cells_of(study: Study, ipc: int, series: str, iterations: int | None) -> list[dict[str, Any]]:
    return [c for seed in range(study.seeds) if (c := study.load(ipc, series, iterations, seed)) is not None]


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def budget_seconds(cell: dict[str, Any]) -> float | None:
    """The seconds a budget cell spent on its clock: DM's matching loop; Min-Max Diffusion's sampling, selection
    and refine (the run's generation_seconds, which the host checks against the budget)."""
    meta = cell.get("meta") or {}
    if meta.get("generation_seconds") is not None:
        return float(meta["generation_seconds"])
    if "sampler" in meta:
        return float(meta["sampler"].get("seconds") or 0.0) + float((meta.get("refine") or {}).get("seconds") or 0.0) \
            + float(meta.get("selection_seconds") or 0.0)
    return meta.get("seconds_this_session")


def iterations_done(cell: dict[str, Any]) -> int | None:
    meta = cell.get("meta") or {}
    if "refine" in meta:
        return (meta["refine"] or {}).get("iterations_done")
    return meta.get("iterations_done")


def budget_point(study: Study, ipc: int, series: str, t: int | None) -> dict[str, Any] | None:
    """A budget-track point: seed means, their mean ± std, and the mean seconds spent and iterations done."""
    cells = [c for c in (study.load(ipc, series, t, seed) for seed in range(study.seeds)) if c is not None]
    if not cells:
        return None
    means = [float(c["summary"]["accuracy_mean"]) for c in cells]
    secs = [v for v in (budget_seconds(c) for c in cells) if v is not None]
    its = [v for v in (iterations_done(c) for c in cells) if v is not None]
    return {"means": means, "mean": statistics.mean(means), "std": statistics.stdev(means) if len(means) > 1 else None,
            "n": len(means), "seconds": statistics.mean(secs) if secs else None,
            "iterations": statistics.mean(its) if its else None}


def coreset_herding_cells(ipc: int, seeds: int) -> list[dict[str, Any]]:
    """Herding at this IPC under the same protocol, from the coreset study's cells (the equal-count control of
    issue 31's "count" goal; its run need not be in this --out: only its accuracy is read)."""
    return [c for c in (_read(RESULTS / "coreset" / f"ipc{ipc}-herding-s{s}.json") for s in range(seeds))
            if c is not None and _same_protocol(c, ipc)]


def herding_point(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """coreset_herding_cells' seed means, their mean ± std."""
    if not cells:
        return None
    means = [float(c["summary"]["accuracy_mean"]) for c in cells]
    return {"means": means, "mean": statistics.mean(means), "std": statistics.stdev(means) if len(means) > 1 else None,
            "n": len(means), "seconds": None, "iterations": None}


def budget_table(study: Study, ipc: int) -> str:
    plain = budget_point(study, ipc, "refine", 0)  # Min-Max Diffusion without refine: its sampling alone
    random_real = point(study, ipc, "random", None)
    herding_cells = coreset_herding_cells(ipc, study.seeds)
    herding = herding_point(herding_cells)
    lines = [f"IPC {ipc} (equal count), protocol {PROTOCOL_LABEL[ipc]}, Fashion-MNIST; budget T = seconds after "
             "training on this machine's clock; accuracy % = mean ± sample std over method seeds (n); Welch p over "
             "seed means (benchmarks/bench_warm.py --track budget).", "",
             "| T (s) | set | accuracy % (n seeds) | seconds spent | iterations done | vs DM from real, same T: Δ, p "
             "| vs Min-Max Diffusion without refine: Δ, p | vs herding: Δ, p |", "|---:|---|---|---:|---:|---|---|---|"]
    plain_secs = None if plain is None else f"{plain['seconds']:.1f}"
    lines.append(f"| - | Min-Max Diffusion, no refine (sampling only) | {_acc(plain)} | {plain_secs or '-'} | 0 | — | — "
                 f"| {_versus(plain, herding)} |")
    load = [c["load_before"][0] for c in (study.load(ipc, se, t, seed) for se in BUDGET_SERIES
                                          for t in (t for g in BUDGETS for t in g) for seed in range(study.seeds))
            if c is not None and c.get("load_before")]
    if load:
        lines[0] += (f" Load (1-min average) before the budget cells: {min(load):.1f}-{max(load):.1f} on 2 cores: "
                     "seconds are wall-clock, so a busier machine does fewer iterations in T.")
    lines.append(f"| - | random real | {_acc(random_real)} | - | - | — | {_versus(random_real, plain)} "
                 f"| {_versus(random_real, herding)} |")
    lines.append(f"| - | herding (real images) | {_acc(herding)} | - | - | — | {_versus(herding, plain)} | — |")
    for t in sorted(t for group in BUDGETS for t in group):
        dm = budget_point(study, ipc, "budget-dm-real", t)
        for series, label in BUDGET_SERIES.items():
            s = budget_point(study, ipc, series, t)
            if s is None:
                continue
            secs = "-" if s["seconds"] is None else f"{s['seconds']:.1f}"
            its = "-" if s["iterations"] is None else f"{s['iterations']:.0f}"
            versus_dm = "—" if series == "budget-dm-real" else _versus(s, dm)
            lines.append(f"| {t} | {label} | {_acc(s)} | {secs} | {its} | {versus_dm} | {_versus(s, plain)} "
                         f"| {_versus(s, herding)} |")
    groups = {"random real": cells_of(study, ipc, "random", None), "no refine": cells_of(study, ipc, "refine", 0),
              "herding": herding_cells,
              **{f"{BUDGET_SERIES[se]} ({t} s)": cells_of(study, ipc, se, t) for se in BUDGET_SERIES
                 for t in (t for g in BUDGETS for t in g)}}
    return "\n".join(lines) + "\n\n" + arithmetic_line(groups)


def seconds_from_scratch(cell: dict[str, Any], start: dict[str, Any] | None = None) -> float:
    """The cell's distill seconds; Min-Max Diffusion's with the fine-tuning's training seconds in place of the
    time it took to obtain the generator (a cached one loads in seconds); plus its warm start's seconds."""
    s = float(cell["summary"].get("distill_seconds") or 0.0)
    meta = cell.get("meta") or {}
    trained = (((meta.get("generator") or {}).get("finetune") or {}).get("train") or {}).get("seconds")
    if trained is not None and meta.get("generator_seconds") is not None:
        s += float(trained) - float(meta["generator_seconds"])
    if start is not None:
        s += seconds_from_scratch(start)
    return s


def seconds_after_training(cell: dict[str, Any], start: dict[str, Any] | None = None) -> float | None:
    """Issue 31's x axis, the seconds spent after training, on the budget track's clock (budget_seconds): Min-Max
    Diffusion's sampling, selection and refine; DM's matching loop; herding's selection (0 for random real); plus
    its warm start's. None for a run that resumed a checkpoint (its loop's earlier seconds are not known)."""
    meta = cell.get("meta") or {}
    if meta.get("resumed_from"):
        return None
    own = budget_seconds(cell)
    if own is None:  # no loop and no sampler: a coreset's selection, or random real's nothing
        own = float(meta.get("selection_seconds") or 0.0)
    if start is None:
        return own
    before = seconds_after_training(start)
    return None if before is None else own + before


def point(study: Study, ipc: int, series: str, iterations: int | None) -> dict[str, Any] | None:
    """Seed means, their mean ± std, and the mean seconds of one point (None: no seed stored)."""
    means, seconds, after = [], [], []
    for seed in range(study.seeds):
        cell = study.load(ipc, series, iterations, seed)
        if cell is None:
            continue
        start = study.load(ipc, "herding", None, seed) if series == "dm-herding" else None
        means.append(float(cell["summary"]["accuracy_mean"]))
        seconds.append(seconds_from_scratch(cell, start))
        after.append(seconds_after_training(cell, start))
    if not means:
        return None
    known = [a for a in after if a is not None]
    return {"means": means, "mean": statistics.mean(means), "std": statistics.stdev(means) if len(means) > 1 else None,
            "seconds": statistics.mean(seconds), "after": statistics.mean(known) if known else None, "n": len(means)}


def _versus(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if a is None or b is None or a is b:
        return "—"
    p = bm.welch(a["means"], b["means"]) if a["n"] > 1 and b["n"] > 1 else None
    return f"{a['mean'] - b['mean']:+.2f}, p {'n/a' if p is None else f'{p:.2g}'}"


def _acc(s: dict[str, Any] | None) -> str:
    if s is None:
        return "(not run)"
    spread = "" if s["std"] is None else f" ± {s['std']:.2f}"
    return f"{s['mean']:.2f}{spread} ({s['n']})"


SHORT = {"random": "random real", "herding": "herding", "refine": "refine", "dm-real": "DM from real",
         "dm-herding": "DM from herding"}  # a row's name in the arithmetic line


def table(study: Study, ipc: int) -> str:
    random_real = point(study, ipc, "random", None)
    keys = [("random", None), ("herding", None), *(("refine", n) for n in REFINE_ITERATIONS),
            *((s, n) for s in ("dm-real", "dm-herding") for n in DM_ITERATIONS)]
    dm_real = {n: point(study, ipc, "dm-real", n) for n in DM_ITERATIONS} | {0: random_real}
    lines = [f"IPC {ipc}, protocol {PROTOCOL_LABEL[ipc]}, Fashion-MNIST; accuracy % = mean ± sample std over method "
             "seeds (n seeds); Welch p over seed means; DM from real at 0 iterations is random real; seconds: mean "
             "over seeds, after training (sampling + refine; DM's loop; herding's selection, added to DM from "
             "herding's) and, in brackets, from scratch (Min-Max Diffusion's fine-tuning of the shipped base "
             "included; benchmarks/bench_warm.py).", "",
             "| start → matching | iterations | accuracy % (n seeds) | seconds after training (from scratch) | vs DM "
             "from real, same iterations: Δ, p | vs random real: Δ, p |", "|---|---:|---|---:|---|---|"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for series, n in keys:
        s = point(study, ipc, series, n)
        label = SERIES[series][0] if series in SERIES else SHORT[series]
        after = "?" if s is None or s["after"] is None else f"{s['after']:.1f}"  # ?: only resumed runs
        seconds = "-" if s is None else f"{after} ({s['seconds']:.1f})"
        versus = _versus(s, dm_real.get(n)) if n is not None and series != "dm-real" else "—"
        lines.append(f"| {label} | {'-' if n is None else n} | {_acc(s)} | {seconds} | {versus} | "
                     f"{'—' if series == 'random' else _versus(s, random_real)} |")
        groups[SHORT[series] if n is None else f"{SHORT[series]} {n}"] = cells_of(study, ipc, series, n)
    return "\n".join(lines) + "\n\n" + arithmetic_line({k: v for k, v in groups.items() if v})


def curve(study: Study, ipc: int, series: str) -> list[tuple[int, dict[str, Any]]]:
    """(iterations, point) along one series, 0 included: the unrefined set for refine, random real for DM from
    real (init=real draws the random baseline's images), herding's selection for DM from herding."""
    zero = {"refine": point(study, ipc, "refine", 0), "dm-real": point(study, ipc, "random", None),
            "dm-herding": point(study, ipc, "herding", None)}[series]
    points = [(n, point(study, ipc, series, n)) for n in DM_ITERATIONS]
    return [(n, p) for n, p in [(0, zero), *points] if p is not None and p["after"] is not None]


def plot(study: Study, ipc: int, target: Path) -> Path | None:
    """Accuracy against seconds after training (issue 31 item 3), one line per start (error bars: sample std over
    seed means, the iteration count beside each point), random real and herding as horizontal lines; None when no
    line has 2 points. The figure of README's accuracy-per-second paragraph (docs/minmax/warm-ipc<K>.png)."""
    from ddbench.analysis.plots import figure, finish

    lines = {s: curve(study, ipc, s) for s in SERIES}
    if not any(len(c) > 1 for c in lines.values()):
        return None
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    for (series, points), marker in zip(lines.items(), "osD"):
        if len(points) < 2:
            continue
        seeds = sorted({p["n"] for _, p in points})
        ax.errorbar([p["after"] for _, p in points], [p["mean"] for _, p in points],
                    yerr=[p["std"] or 0.0 for _, p in points], marker=marker, capsize=3,
                    label=f"{SERIES[series][0]} (seeds: {'/'.join(map(str, seeds))})")
        for n, p in points:
            ax.annotate(str(n), (p["after"], p["mean"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for series, style in (("random", ":"), ("herding", "--")):
        p = point(study, ipc, series, None)
        if p is not None:
            name = "random real" if series == "random" else "herding (real)"
            ax.axhline(p["mean"], linestyle=style, color="grey", label=f"{name} at equal count (seeds: {p['n']})")
    ax.set_xscale("symlog", linthresh=1)
    ticks = [t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= 1.5 * max(
        p["after"] for c in lines.values() for _, p in c)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(left=-0.1)
    return finish(fig, ax, "seconds after training (mean over seeds; log scale past 1 s)",
                  f"Fashion-MNIST, IPC {ipc}, {PROTOCOL_LABEL[ipc]}: accuracy per second\n"
                  "(numbers: matching iterations)", target)


def report(study: Study, write: bool) -> None:
    render, marker = ((budget_table, "budget-track") if isinstance(study, BudgetStudy) else
                      (convergence_table, "convergence") if isinstance(study, ConvergenceStudy) else
                      (table, "warm-start"))
    text = "\n\n".join(render(study, ipc) for ipc in study.only)
    print(text)
    if write:
        replace_block(ROOT / "docs" / "minmax.md", marker, text)
        if marker == "warm-start":
            for ipc in study.only:
                made = plot(study, ipc, ROOT / "docs" / "minmax" / f"warm-ipc{ipc}.png")
                print(f"wrote {made.relative_to(ROOT)}" if made else f"IPC {ipc}: no curve to draw yet")


def replace_block(path: Path, marker: str, body: str) -> None:
    """Fill `<!-- marker begin -->` ... `<!-- marker end -->` of `path` (atomically), as bench_standard does."""
    from ddbench.core.atomic import atomic_write_text

    begin, end = f"<!-- {marker} begin -->", f"<!-- {marker} end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        print(f"{path}: no {begin} ... {end} block; not written")
        return
    head, rest = text.split(begin, 1)
    atomic_write_text(head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1], path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("run", "plan", "report"))
    ap.add_argument("--track", choices=("curve", "budget", "convergence"), default="curve",
                    help="curve: accuracy against matching iterations (default); budget: equal seconds under --budget; "
                         "convergence: each matching run to its CPU preset, under dsa")
    ap.add_argument("--only", default="", help="ipc1, ipc10 or both (comma-separated; default both)")
    ap.add_argument("--seeds", type=int, default=SEEDS, help=f"method seeds per point, 1-{SEEDS} (default {SEEDS})")
    ap.add_argument("--no-adopt", action="store_true", help="run here the cells other studies already ran")
    ap.add_argument("--series", default="", help="run: only these series of the plan (comma-separated, e.g. refine)")
    ap.add_argument("--iterations", default="", help="run: only these iteration counts (comma-separated, e.g. 10,25)")
    ap.add_argument("--write", action="store_true", help="report: fill the track's marker block in docs/minmax.md (the curve "
                    "also draws docs/minmax/warm-ipc<K>.png)")
    args = ap.parse_args(argv)
    groups = [g for g in args.only.split(",") if g]
    bad = [g for g in groups if g not in ("ipc1", "ipc10")]
    if bad:
        ap.error(f"--only {','.join(bad)}: not a group; choose from ipc1, ipc10")
    if not 1 <= args.seeds <= SEEDS:
        ap.error(f"--seeds {args.seeds}: not allowed; give 1 to {SEEDS} seeds per point")
    only = tuple(int(g[3:]) for g in groups) or IPCS
    kind = {"curve": Study, "budget": BudgetStudy, "convergence": ConvergenceStudy}[args.track]
    study = kind(min(args.seeds, CONV_SEEDS) if kind is ConvergenceStudy else args.seeds, only,
                 adopt=not args.no_adopt)
    series = tuple(x for x in args.series.split(",") if x)
    known = {c[1] for c in study.plan()}
    if set(series) - known:
        ap.error(f"--series {','.join(sorted(set(series) - known))}: not a series of this track; choose from "
                 f"{', '.join(sorted(known))}")
    try:
        iterations = tuple(int(x) for x in args.iterations.split(",") if x)
    except ValueError:
        ap.error(f"--iterations {args.iterations}: not a list of integers; e.g. 10,25")
    counts = {c[2] for c in study.plan() if c[2] is not None}
    if set(iterations) - counts:
        ap.error(f"--iterations {','.join(map(str, sorted(set(iterations) - counts)))}: not a count of this track; "
                 f"choose from {', '.join(map(str, sorted(counts)))}")
    if args.what == "run":
        study.run(series, iterations)
    elif args.what == "plan":
        for cell in study.plan():
            path = study.where(*cell)
            state = (f"adopted {path.relative_to(ROOT)}" if path.parent != CELLS else
                     "stored" if study.load(*cell) else "to run")
            print(f"{study.name(*cell):32s} {state}")
    else:
        report(study, args.write)


if __name__ == "__main__":
    main()
