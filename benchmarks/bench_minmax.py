"""The minmax-diffusion studies of docs/minmax.md: every cell a plain `ddbench run` command, resumable.

    python benchmarks/bench_minmax.py curve       # quality of the base vs training steps (its EMA snapshots)
    python benchmarks/bench_minmax.py headline    # IPC 1 (dsa, 1000 epochs) and IPC 10 vs random real, 3 seeds
    python benchmarks/bench_minmax.py budget      # a 10 s generation budget vs random real IPC 10
    python benchmarks/bench_minmax.py fewsteps    # IPC 1 at S=5 with guidance 4, 3 seeds
    python benchmarks/bench_minmax.py ablation    # plain / L_r / L_d / both, 3 seeds (IPC 1, fast protocol)
    python benchmarks/bench_minmax.py dsr         # S in {5,10,20,30,50}, guidance 1 and 4 (quality figures)
    python benchmarks/bench_minmax.py budget-dsr  # one 10 s budget: S in {5,10,20,30,50} x guidance 1/2, + calibrated
    python benchmarks/bench_minmax.py budget-unguided  # 10 s, S = 10 without guidance, 5 seeds (+ random IPC 10 s3, s4)
    python benchmarks/bench_minmax.py equal-count # the preset vs random real at IPC 1 (dsa) and 10, 5 seeds each
    python benchmarks/bench_minmax.py budget-equal  # 10 s budget, then random real at the IPC it achieved
    python benchmarks/bench_minmax.py levers      # each lever beyond the seed alone (IPC 10, seed 0; env selects)
    python benchmarks/bench_minmax.py report      # the tables of docs/minmax.md from the stored cells

Each cell's command, its JSON summary and the run's meta (quality figures, timings) are stored atomically in
benchmarks/results/minmax/<cell>.json; a cell already stored is not run again, so a killed study restarted with
the same command runs only what is missing. Seeds are *method* seeds (fine-tuning, sampling, and the random
subset), each evaluated by 5 networks; statistics are over the seeds' mean accuracies (Welch t-test), with the
pooled networks given beside. On a shared machine set DDBENCH_STUDY_LOCK=/tmp/ddbench-cpu.lock (each cell runs
under `flock` of that file, so other heavy jobs interleave between cells).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# One folder per shipped base: the cells of a study hold for the generator they fine-tuned (its sha256 is in each
# cell's meta). `DDBENCH_STUDY_CELLS=benchmarks/results/minmax-base4000` selects the 4000-step base's studies.
CELLS = ROOT / os.environ.get("DDBENCH_STUDY_CELLS", "benchmarks/results/minmax")
DDBENCH = str(Path(sys.executable).with_name("ddbench"))
OUT = os.environ.get("DDBENCH_STUDY_OUT", str(ROOT / "ddbench-results"))
SEEDS = (0, 1, 2)
LOCK = os.environ.get("DDBENCH_STUDY_LOCK")  # e.g. /tmp/ddbench-cpu.lock: taken per cell, not per study

# The evaluation of the IPC-10 and budget studies: the `fast` protocol (DC/DSA main.py's 300 epochs) cut to 100
# epochs, because one 1000-epoch evaluation of 5 networks at IPC 10 takes ~28 min on this 2-core CPU.
IPC10_EVAL = ["--protocol", "fast", "--eval-epochs", "100", "--eval-models", "3"]
IPC1_EVAL = ["--protocol", "dsa", "--eval-models", "5"]  # the standard protocol, 1000 epochs
ABLATION = {
    "plain": ["--set", "lambda_pos=0", "--set", "lambda_neg=0"],
    "L_r": ["--set", "lambda_neg=0"],
    "L_d": ["--set", "lambda_pos=0"],
    "both": [],
    "both-ld0.008": ["--set", "lambda_neg=0.008"],
    "both-classifier": ["--set", "embedding=classifier"],
    "both-all-params": ["--set", "trainable=all"],
}


CORE_VARIANTS = ("plain", "L_r", "L_d", "both")  # 3 seeds each; the other variants one seed (compute)
EXTRA_VARIANTS = os.environ.get("DDBENCH_STUDY_EXTRA") == "1"  # run the non-core variants too


def atomic_json(obj: Any, path: Path) -> None:
    from ddbench.core.atomic import atomic_write_text

    atomic_write_text(json.dumps(obj, indent=1, sort_keys=True, default=str), path)


def run_cell(name: str, method: str, args: list[str], cells: Path | None = None) -> dict[str, Any] | None:
    """Run one cell (or read it when stored) into `cells` (default: this module's CELLS). A study that may import
    another study module passes its own folder: each study module sets CELLS when imported."""
    path = (cells or CELLS) / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cmd = [DDBENCH, "run", "--method", method, *args, "--out", OUT, "--json", "--no-progress"]
    shown = "ddbench " + " ".join(shlex.quote(a) for a in cmd[1:] if a not in ("--out", OUT))
    if LOCK:  # one cell at a time under the shared lock, so other heavy jobs interleave between cells
        cmd = ["flock", LOCK, *cmd]
    print(f"\n### {name}\n$ {shown}", flush=True)
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-3000:], flush=True)
        return None
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = {}
    if summary.get("artifact"):
        from ddbench.core.safeload import load_tensors

        meta = load_tensors(summary["artifact"]).get("meta", {})
    if LOCK:
        time.sleep(3)  # let a job waiting for the lock take it between cells
    cell = {"name": name, "command": shown, "summary": summary, "meta": meta, "wall_seconds": round(wall, 1),
            "load_before": [round(v, 2) for v in load], "load_after": [round(v, 2) for v in os.getloadavg()],
            "log_tail": proc.stderr[-1500:]}
    atomic_json(cell, path)
    acc = summary.get("accuracy_mean")
    q = meta.get("quality", {})
    print(f"  -> accuracy {acc}, quality {q.get('class_accuracy')} % / FD {q.get('fd')}, {wall:.0f} s", flush=True)
    return cell


# --------------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------------


def study_headline() -> None:
    for seed in SEEDS:
        run_cell(f"ipc1-minmax-s{seed}", "minmax-diffusion", ["--ipc", "1", "--seed", str(seed), *IPC1_EVAL])
        run_cell(f"ipc1-random-s{seed}", "random", ["--ipc", "1", "--seed", str(seed), *IPC1_EVAL])
    for seed in SEEDS:
        run_cell(f"ipc10-minmax-s{seed}", "minmax-diffusion", ["--ipc", "10", "--seed", str(seed), *IPC10_EVAL])
        run_cell(f"ipc10-random-s{seed}", "random", ["--ipc", "10", "--seed", str(seed), *IPC10_EVAL])


def study_fewsteps() -> None:
    """IPC 1 sampled at S=5 with the anchors' guidance 4 (the sharpest class prototypes of the DSR table)."""
    for seed in SEEDS:
        run_cell(f"ipc1-minmaxS5g4-s{seed}", "minmax-diffusion", ["--ipc", "1", "--seed", str(seed), "--set", "steps=5",
                                                                 "--set", "guidance=4", *IPC1_EVAL])


BUDGET_SEEDS = tuple(int(v) for v in os.environ.get("DDBENCH_STUDY_BUDGET_SEEDS", "0,1,2").split(","))
# 60 s gives IPC ~170 here; its 100-epoch evaluation costs ~17x IPC 10's (DDBENCH_STUDY_BUDGETS=10,60).
BUDGETS = tuple(int(v) for v in os.environ.get("DDBENCH_STUDY_BUDGETS", "10").split(","))


UNGUIDED_SEEDS = (0, 1, 2, 3, 4)


def study_budget_unguided() -> None:
    """The budget-dsr winner checked over 5 method seeds: 10 s, S = 10 (the seed's DSR default), no guidance."""
    for seed in UNGUIDED_SEEDS:
        run_cell(f"budget10g1-minmax-s{seed}", "minmax-diffusion",
                 ["--budget", "10", "--seed", str(seed), "--set", "guidance=1", *IPC10_EVAL])
    for seed in UNGUIDED_SEEDS:  # the random IPC 10 reference at the same 5 seeds (s0-s2 are the headline's)
        run_cell(f"ipc10-random-s{seed}", "random", ["--ipc", "10", "--seed", str(seed), *IPC10_EVAL])


# The levers beyond the seed (docs/minmax.md#levers-beyond-the-seed), one setting each, against the preset.
LEVERS: dict[str, list[str]] = {
    "preset": [],
    "from-noise": ["--set", "prototypes=none", "--set", "strength=1"],  # the seed's sampling (no lever)
    "pool4-conf": ["--set", "pool=4", "--set", "selector=confidence"],  # CaO2, on top of the preset
    "pool4-kmeans": ["--set", "pool=4", "--set", "selector=k-means"],  # DC-BENCH Kmeans-emb, on the preset
    "proto-s0.7": ["--set", "prototypes=kmeans", "--set", "strength=0.7"],  # D4M
    "proto-s0.5": ["--set", "prototypes=kmeans", "--set", "strength=0.5"],
    "proto-s0.85": ["--set", "prototypes=kmeans", "--set", "strength=0.85"],
    "mode-0.1": ["--set", "prototypes=kmeans", "--set", "mode_guidance=0.1"],  # MGD3
    "interval": ["--set", "guidance_interval=0.3,0.8"],  # limited-interval guidance
    "proto-s0.7-g1": ["--set", "prototypes=kmeans", "--set", "strength=0.7", "--set", "guidance=1"],
    "proto-s0.7-mode-0.1": ["--set", "prototypes=kmeans", "--set", "strength=0.7", "--set", "mode_guidance=0.1"],
}


def study_levers() -> None:
    """Each lever alone at one IPC (DDBENCH_STUDY_IPC, default 10) and method seed (DDBENCH_STUDY_SEEDS, default 0)."""
    only = os.environ.get("DDBENCH_STUDY_LEVERS")
    ipc = os.environ.get("DDBENCH_STUDY_IPC", "10")
    seeds = tuple(int(v) for v in os.environ.get("DDBENCH_STUDY_SEEDS", "0").split(","))
    evaluation = IPC1_EVAL if ipc == "1" else IPC10_EVAL
    for name, sets in LEVERS.items():
        if only and name not in only.split(","):
            continue
        for seed in seeds:
            run_cell(f"lever-ipc{ipc}-{name}-s{seed}", "minmax-diffusion",
                     ["--ipc", ipc, "--seed", str(seed), *sets, *evaluation])


EQUAL_SEEDS = (0, 1, 2, 3, 4)


def study_equal_count() -> None:
    """The preset (with its levers) against random real at the same IPC, 5 method seeds per side."""
    ipcs = os.environ.get("DDBENCH_STUDY_EQ_IPCS", "10,1").split(",")  # e.g. "10": only the IPC-10 cells
    for seed in EQUAL_SEEDS:
        if "10" in ipcs:
            run_cell(f"eq-ipc10-minmax-s{seed}", "minmax-diffusion", ["--ipc", "10", "--seed", str(seed), *IPC10_EVAL])
        if "1" in ipcs:
            run_cell(f"eq-ipc1-minmax-s{seed}", "minmax-diffusion", ["--ipc", "1", "--seed", str(seed), *IPC1_EVAL])
    for seed in EQUAL_SEEDS:
        if "10" in ipcs:
            run_cell(f"ipc10-random-s{seed}", "random", ["--ipc", "10", "--seed", str(seed), *IPC10_EVAL])
        if "1" in ipcs:
            run_cell(f"ipc1-random-s{seed}", "random", ["--ipc", "1", "--seed", str(seed), *IPC1_EVAL])


BUDGET_VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "pool4-conf": ["--set", "pool=4", "--set", "selector=confidence"],  # CaO2: 4 x IPC candidates, confident first
    "guided": ["--set", "budget_guidance=2"],  # guidance 2 under the budget: half the images, each guided
}


def achieved_ipc(cell: dict[str, Any]) -> int:
    """Images per class a budget cell produced (older summaries stored the requested IPC)."""
    return int(cell["meta"].get("sampler", {}).get("ipc") or cell["summary"]["ipc"])


def study_budget_equal() -> None:
    """10 s budget cells (DDBENCH_STUDY_BUDGET_VARIANTS, DDBENCH_STUDY_SEEDS), each followed by random real at the
    IPC it achieved, same seed, same evaluation (BDSR_EVAL: 100 epochs, 2 networks, for the CPU time)."""
    only = os.environ.get("DDBENCH_STUDY_BUDGET_VARIANTS", "preset").split(",")
    seeds = tuple(int(v) for v in os.environ.get("DDBENCH_STUDY_SEEDS", "0,1,2").split(","))
    for seed in seeds:
        for name in only:
            cell = run_cell(f"beq-{name}-s{seed}", "minmax-diffusion",
                            ["--budget", "10", "--seed", str(seed), *BUDGET_VARIANTS[name], *BDSR_EVAL])
            if cell:
                ipc = achieved_ipc(cell)
                run_cell(f"beq-random-ipc{ipc}-s{seed}", "random", ["--ipc", str(ipc), "--seed", str(seed), *BDSR_EVAL])


def study_budget() -> None:
    for budget in BUDGETS:
        for seed in BUDGET_SEEDS:
            # guidance 2, the preset of budget runs when these cells were made (the preset is now budget_guidance 1)
            run_cell(f"budget{budget}-minmax-s{seed}", "minmax-diffusion",
                     ["--budget", str(budget), "--seed", str(seed), "--set", "budget_guidance=2", *IPC10_EVAL])


ABLATION_EVAL = ["--protocol", "fast", "--eval-models", "5"]  # 300 epochs (DC/DSA main.py), IPC 1: ~1 min a cell


def study_ablation() -> None:
    """Each variant fine-tunes the shipped base with its own losses, per seed; IPC 1 sets, fast protocol."""
    only = os.environ.get("DDBENCH_STUDY_VARIANTS")  # e.g. "plain,both": run these first (the rest later)
    seeds = tuple(int(v) for v in os.environ.get("DDBENCH_STUDY_SEEDS", "0,1,2").split(","))
    for variant, sets in ABLATION.items():
        if variant not in CORE_VARIANTS and not EXTRA_VARIANTS or only and variant not in only.split(","):
            continue
        for seed in seeds if variant in CORE_VARIANTS else seeds[:1]:
            run_cell(f"abl-{variant}-s{seed}", "minmax-diffusion",
                     ["--ipc", "1", "--seed", str(seed), *sets, *ABLATION_EVAL])


def study_dsr() -> None:
    for guidance, steps_list in ((4, (5, 10, 20, 30, 50)), (1, (5, 10, 20, 30, 50)), (2, (10,))):
        for steps in steps_list:
            run_cell(f"dsr-S{steps}-g{guidance}", "minmax-diffusion",
                     ["--ipc", "10", "--seed", "0", "--no-eval", "--set", f"steps={steps}",
                      "--set", f"guidance={guidance}"])


BUDGET_DSR = (5, 10, 20, 30, 50)
BDSR_EVAL = ["--protocol", "fast", "--eval-epochs", "100", "--eval-models", "2"]  # 11 cells: 2 networks each (CPU time)


def study_budget_dsr() -> None:
    """The DSR trade-off where it matters: one wall-clock budget, fewer steps buy more images per class."""
    # (cells made before `budget_guidance` existed recorded `--set guidance=G`, which is what it meant then)
    for guidance in (1, 2):
        for steps in BUDGET_DSR:
            run_cell(f"bdsr-S{steps}-g{guidance}-s0", "minmax-diffusion",
                     ["--budget", "10", "--seed", "0", "--set", f"steps={steps}", "--set", f"budget_guidance={guidance}",
                      *BDSR_EVAL])
    run_cell("bdsr-calibrated-g2-s0", "minmax-diffusion",
             ["--budget", "10", "--seed", "0", "--set", "policy=calibrated", "--set", "budget_guidance=2", *BDSR_EVAL])


def study_curve() -> None:
    """Class accuracy and FD of 200 guided samples (S=10) of each EMA snapshot of the base's training."""
    import torch

    from ddbench.host.plugins import load_plugins
    from ddbench.run.runner import load_dataset
    from ddbench.store.identity import dataset_fingerprint
    from ddbench_minmax.shipped import shipped_cache
    from ddbench_minmax.model import Denoiser
    from ddbench.helpers import reference_classifier
    from ddbench_minmax.sampler import DSRSampler
    from ddbench_minmax.train import from_signed_pixels
    from ddbench.api import SampleRequest

    path = CELLS / "curve.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    reg = load_plugins()
    ds = load_dataset(reg, "fashion-mnist", None, False)
    clf = reference_classifier(ds, lambda: reg.get("models", "convnet").build(1, 10, 28), Path(OUT) / "cache",
                               dataset_fingerprint(ds))
    done["classifier"] = clf.meta
    if "real" not in done:  # the floor: 20 random real training images per class, scored the same way
        from ddbench.core.seeds import generator

        g = generator(0, "curve", "real")
        idx = torch.cat([ds.indices_of_class(c)[torch.randperm(6000, generator=g)[:20]] for c in range(10)])
        fig = clf.figures(ds.train_x[idx].float(), ds.train_y[idx])
        done["real"] = {k: fig[k] for k in ("class_accuracy", "fd", "images")}
    snaps = sorted((ROOT / "ddbench-results" / "cache" / "minmax-base").glob("*/snapshots/step-*"))
    shipped = shipped_cache("fashion-mnist").meta_path
    meta = json.loads(shipped.read_text()) if shipped.is_file() else {}
    for folder in snaps:
        step = int(folder.name.split("-")[1])
        for guidance in (1.0, 4.0):
            key = f"{step}-g{guidance:g}"
            if key in done:
                continue
            model = Denoiser.load(folder)
            out = DSRSampler().generate(model, SampleRequest(num_classes=10, steps=10, image_shape=(1, 28, 28), ipc=20,
                                                             guidance=guidance, seed=0))
            fig = clf.figures(from_signed_pixels(ds, out.images), out.labels)
            done[key] = {"step": step, "guidance": guidance, "epochs": round(step * 128 / 60000, 2),
                         **{k: fig[k] for k in ("class_accuracy", "fd", "images")}}
            print(key, done[key], flush=True)
            atomic_json(done, path)
    done["base_train"] = meta.get("train")
    atomic_json(done, path)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _cells(prefix: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(CELLS.glob(f"{prefix}-s*.json"))]


def seed_stats(prefix: str) -> dict[str, Any] | None:
    return stats_of(_cells(prefix))


def stats_of(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    cells = [c for c in cells if c["summary"].get("accuracy_mean") is not None]
    if not cells:
        return None
    import statistics

    means = [c["summary"]["accuracy_mean"] for c in cells]
    pooled = [a for c in cells for a in c["summary"]["accuracies"]]
    return {"n_seeds": len(means), "mean": statistics.mean(means),
            "std": statistics.stdev(means) if len(means) > 1 else 0.0, "means": means, "pooled": pooled,
            "nets": len(pooled) // len(means), "ipc": [c["summary"].get("images", 0) // 10 for c in cells],
            "cells": cells}


def welch(a: list[float], b: list[float]) -> float | None:
    """The one Welch test of ddbench (ddbench/core/stats.py), so the study tables and `ddbench report` agree."""
    from ddbench.core.stats import welch as one_welch

    return one_welch(a, b)


def compare_row(label: str, a: dict | None, b: dict | None) -> str:
    if not a or not b:
        return f"| {label} | (not run) | | | |"
    p_seeds, p_nets = welch(a["means"], b["means"]), welch(a["pooled"], b["pooled"])
    fmt = lambda p: "n/a" if p is None else f"{p:.2g}"  # noqa: E731
    return (f"| {label} | {a['mean']:.2f} ± {a['std']:.2f} ({a['n_seeds']} seeds x {a['nets']} nets; IPC "
            f"{','.join(map(str, a['ipc']))}) | {b['mean']:.2f} ± {b['std']:.2f} ({b['n_seeds']} seeds) | "
            f"{a['mean'] - b['mean']:+.2f} | {fmt(p_seeds)} / {fmt(p_nets)} |")


def report() -> None:
    print("| comparison | minmax-diffusion % | random real % | difference | Welch p (seed means / pooled nets) |")
    print("|---|---|---|---|---|")
    print(compare_row("IPC 1, dsa (1000 epochs)", seed_stats("ipc1-minmax"), seed_stats("ipc1-random")))
    print(compare_row("IPC 1, dsa, S=5 guidance 4", seed_stats("ipc1-minmaxS5g4"), seed_stats("ipc1-random")))
    print(compare_row("IPC 10, fast (100 epochs)", seed_stats("ipc10-minmax"), seed_stats("ipc10-random")))
    for budget in BUDGETS:
        print(compare_row(f"{budget} s budget vs random IPC 10, fast (100 epochs)", seed_stats(f"budget{budget}-minmax"),
                          seed_stats("ipc10-random")))
    print(compare_row("10 s budget, S = 10 without guidance, vs random IPC 10, fast (100 epochs)",
                      seed_stats("budget10g1-minmax"), seed_stats("ipc10-random")))
    print("\n| variant (IPC 1, fast 300 epochs) | accuracy % | Welch p vs plain (seed means / pooled nets) | "
          "class accuracy % of the set | mean L_r / L_d while fine-tuning |")
    print("|---|---|---|---|---|")
    plain = seed_stats("abl-plain")
    for variant in ABLATION:
        ev = seed_stats(f"abl-{variant}")
        if not ev:
            continue
        p1 = welch(ev["means"], plain["means"]) if plain and variant != "plain" else None
        p2 = welch(ev["pooled"], plain["pooled"]) if plain and variant != "plain" else None
        qa = [c["meta"].get("quality", {}).get("class_accuracy") for c in ev["cells"]]
        tr = [c["meta"]["generator"]["finetune"]["train"] for c in ev["cells"]]
        lr_ = sum(t["mean_loss_r"] for t in tr) / len(tr)
        ld_ = sum(t["mean_loss_d"] for t in tr) / len(tr)
        ptxt = "" if p1 is None else f"{p1:.2g} / {p2:.2g}"
        print(f"| {variant} | {ev['mean']:.2f} ± {ev['std']:.2f} ({ev['n_seeds']} seeds x {ev['nets']} nets) | {ptxt} | "
              f"{_ms([q for q in qa if q is not None])} | {lr_:.5f} / {ld_:.5f} |")
    print("\n| S | guidance | class accuracy % | FD | images/s (measured) |")
    print("|---|---|---|---|---|")
    for guidance in (1, 2, 4):
        for steps in (5, 10, 20, 30, 50):
            p = CELLS / f"dsr-S{steps}-g{guidance}.json"
            if p.is_file():
                c = json.loads(p.read_text())
                q = c["meta"].get("quality", {})
                print(f"| {steps} | {guidance} | {q.get('class_accuracy')} | {q.get('fd')} | "
                      f"{c['meta'].get('sampler', {}).get('images_per_second')} |")
    bdsr = sorted(CELLS.glob("bdsr-*.json"))
    if bdsr:
        print("\n| 10 s budget, seed 0: policy | S | guidance | IPC reached | accuracy % (fast 100 ep, 2 nets) | class accuracy % | FD |")
        print("|---|---|---|---|---|---|---|")
        for p in bdsr:
            c = json.loads(p.read_text())
            m, s = c["meta"], c["summary"]
            q, d, sm = m.get("quality", {}), m.get("policy", {}), m.get("sampler", {})
            print(f"| {d.get('policy')} | {d.get('steps')} | {sm.get('guidance')} | "
                  f"{sm.get('ipc')} | {s.get('accuracy_mean'):.2f} ± {s.get('accuracy_std'):.2f} | "
                  f"{q.get('class_accuracy')} | {q.get('fd')} |")
    curve = CELLS / "curve.json"
    if curve.is_file():
        d = json.loads(curve.read_text())
        print("\n| base step | epochs | class accuracy % (g=1 / g=4) | FD (g=1 / g=4) |")
        print("|---|---|---|---|")
        if "real" in d:
            print(f"| real images | - | {d['real']['class_accuracy']} | {d['real']['fd']} |")
        steps = sorted({v["step"] for k, v in d.items() if isinstance(v, dict) and "step" in v})
        for s in steps:
            a, b = d.get(f"{s}-g1"), d.get(f"{s}-g4")
            if a and b:
                print(f"| {s} | {a['epochs']} | {a['class_accuracy']} / {b['class_accuracy']} | {a['fd']} / {b['fd']} |")


def report_equal() -> None:
    """The equal-count tables of docs/minmax.md#equal-count-results (DDBENCH_STUDY_CELLS selects the folder)."""
    print("| comparison (same IPC, same evaluation) | minmax-diffusion % | random real % | difference | "
          "Welch p (seed means / pooled nets) |")
    print("|---|---|---|---|---|")
    print(compare_row("IPC 1, dsa (1000 epochs, 5 nets)", seed_stats("eq-ipc1-minmax"), seed_stats("ipc1-random")))
    print(compare_row("IPC 10, fast (100 epochs, 3 nets)", seed_stats("eq-ipc10-minmax"), seed_stats("ipc10-random")))
    for name in BUDGET_VARIANTS:
        mm = seed_stats(f"beq-{name}")
        if mm:
            mm["ipc"] = [achieved_ipc(c) for c in mm["cells"]]
            partners = [f"beq-random-ipc{i}-s{c['name'].rsplit('-s', 1)[1]}" for i, c in zip(mm["ipc"], mm["cells"])]
            rnd = stats_of([json.loads(p.read_text()) for n in partners if (p := CELLS / f"{n}.json").is_file()])
            print(compare_row(f"10 s budget ({name}) vs random at the IPC each seed reached, fast (100 epochs, 2 nets)",
                              mm, rnd))
    levers = sorted(CELLS.glob("lever-*.json"))
    if levers:
        print("\n| lever cell (one method seed) | IPC | accuracy % | class accuracy % | FD | levers recorded |")
        print("|---|---|---|---|---|---|")
        for path in levers:
            c = json.loads(path.read_text())
            m, q = c["meta"], c["meta"].get("quality", {})
            lev = {k: v for k, v in m.get("sampler", {}).items()
                   if k in ("strength", "mode_guidance", "guidance_interval", "prototypes_per_class", "guidance")}
            lev.update({k: m[k] for k in ("pool", "selector") if k in m})
            print(f"| {c['name']} | {c['summary']['ipc']} | {c['summary']['accuracy_mean']:.2f} ± "
                  f"{c['summary']['accuracy_std']:.2f} | {q.get('class_accuracy')} | {q.get('fd')} | {lev} |")


def _ms(v: list[float]) -> str:
    import statistics

    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=("curve", "headline", "fewsteps", "budget", "ablation", "dsr", "budget-dsr", "budget-unguided",
                                      "levers", "equal-count", "budget-equal", "report", "report-equal",
                                      "all"))
    args = ap.parse_args()
    CELLS.mkdir(parents=True, exist_ok=True)
    if args.study in ("curve", "all"):
        study_curve()
    if args.study in ("headline", "all"):
        study_headline()
    if args.study in ("fewsteps", "all"):
        study_fewsteps()
    if args.study in ("dsr", "all"):
        study_dsr()
    if args.study in ("ablation", "all"):
        study_ablation()
    if args.study in ("budget", "all"):
        study_budget()
    if args.study == "budget-dsr":
        study_budget_dsr()
    if args.study == "budget-unguided":
        study_budget_unguided()
    if args.study == "budget-equal":
        study_budget_equal()
    if args.study == "equal-count":
        study_equal_count()
    if args.study == "levers":
        study_levers()
    if args.study == "report":
        report()
    if args.study == "report-equal":
        report_equal()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
