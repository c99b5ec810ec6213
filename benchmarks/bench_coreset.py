"""The coreset baselines of docs/baselines.md#coreset-baselines: every cell a plain `ddbench run`, resumable.

    python benchmarks/bench_coreset.py space    # feature space: herding x 3 spaces, IPC 1, seed 0, fast (300 epochs)
    python benchmarks/bench_coreset.py space-k-center  # the same for k-center
    python benchmarks/bench_coreset.py space10  # k-means in pixels / random-convnet at IPC 10, seed 0 (fast, 100 epochs)
    python benchmarks/bench_coreset.py ipc1     # herding, k-center at IPC 1 under dsa (1000 epochs, 5 nets), 3 seeds
                                                # (k-means = herding at IPC 1: its one centroid is the class mean)
    python benchmarks/bench_coreset.py ipc10    # the same at IPC 10 under fast cut to 100 epochs, 3 nets, 3 seeds
    python benchmarks/bench_coreset.py ipc50    # IPC 50 under fast cut to 50 epochs, 2 nets, 3 seeds (if time allows)
    python benchmarks/bench_coreset.py all      # ipc1, ipc10, ipc50 in that order
    python benchmarks/bench_coreset.py report [--write]  # the tables of docs/baselines.md and the README from the stored cells

Cells are stored atomically in benchmarks/results/coreset/<cell>.json (command, summary, meta) by
bench_minmax.run_cell, one at a time under `flock $DDBENCH_STUDY_LOCK` when set; a stored cell is not run again.
Random real at IPC 1 and 10 reuses the cells of the shipped reference table, benchmarks/results/reference/
(ipc1-dsa-s*, ipc10-fast-s*: the same commands with `--method random`, seeds 0-4); at IPC 50 it is run here. Seeds are method seeds (k-center's first center, k-means' init, the evaluation
networks; herding in a fixed space has no randomness, so its seeds vary the evaluation networks only).
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

ROOT = bm.ROOT
bm.CELLS = CELLS = ROOT / "benchmarks" / "results" / "coreset"
RANDOM_CELLS = ROOT / "benchmarks" / "results" / "reference"  # the shipped reference table's cells (make_reference.py)
RANDOM_PREFIX = {1: "ipc1-dsa", 10: "ipc10-fast"}  # same commands with --method random, seeds 0-4
METHODS = ("herding", "k-center", "k-means")
SPACES = ("classifier", "pixels", "random-convnet")
SEEDS = (0, 1, 2)
IPC1_EVAL = bm.IPC1_EVAL  # dsa, 1000 epochs, 5 networks
IPC10_EVAL = bm.IPC10_EVAL  # fast cut to 100 epochs, 3 networks (a 1000-epoch IPC-10 evaluation is ~35 min here)
IPC50_EVAL = ["--protocol", "fast", "--eval-epochs", "50", "--eval-models", "2"]
SPACE_EVAL = ["--protocol", "fast", "--eval-models", "3"]  # DC's 300-epoch schedule (main.py epoch_eval_train)

# DC (Zhao, Mopuri & Bilen, ICLR 2021), Table 1, FashionMNIST, IPC 1 / 10 / 50: coreset baselines evaluated with
# ConvNets trained 300 epochs without augmentation. Random as docs/benchmark-axes.md quotes it; herding, k-center and
# forgetting as recalled from the paper's table (not re-checked against the PDF here: docs/baselines.md says so).
DC_TABLE1 = {
    "random": {1: "51.4 ± 3.8", 10: "73.8 ± 0.7", 50: "82.5 ± 0.7"},
    "herding": {1: "67.0 ± 1.9", 10: "71.1 ± 0.7", 50: "71.9 ± 0.8"},
    "k-center": {1: "66.9 ± 1.8", 10: "54.7 ± 1.5", 50: "68.3 ± 0.8"},
    "forgetting": {1: "42.0 ± 5.5", 10: "53.9 ± 2.0", 50: "55.0 ± 1.1"},
}


def study_space(methods: tuple[str, ...] = ("herding",)) -> None:
    """IPC 1, seed 0, the 300-epoch fast protocol, in each space. k-means is not run at IPC 1: with k = 1 its one
    centroid is the class mean, so it picks herding's image (the item nearest the mean; `space-k-means-classifier-s0`
    was run once and matched `space-herding-classifier-s0` image for image)."""
    for method in methods:
        for space in SPACES:
            bm.run_cell(f"space-{method}-{space}-s0", method, ["--ipc", "1", "--seed", "0", "--set", f"space={space}",
                                                              *SPACE_EVAL])


def study_space10() -> None:
    """k-means at IPC 10, seed 0, in the two other spaces (its classifier-space cell is ipc10-k-means-s0)."""
    for space in SPACES[1:]:
        bm.run_cell(f"space10-k-means-{space}-s0", "k-means", ["--ipc", "10", "--seed", "0", "--set", f"space={space}",
                                                              *IPC10_EVAL])


def study(ipc: int, evaluation: list[str], methods: tuple[str, ...] = METHODS) -> None:
    for seed in SEEDS:
        for method in methods:
            bm.run_cell(f"ipc{ipc}-{method}-s{seed}", method, ["--ipc", str(ipc), "--seed", str(seed), *evaluation])


def stats(folder: Path, prefix: str) -> dict[str, Any] | None:
    cells = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}-s*.json"))]
    cells = [c for c in cells if c["summary"].get("accuracy_mean") is not None]
    if not cells:
        return None
    means = [c["summary"]["accuracy_mean"] for c in cells]
    pooled = [a for c in cells for a in c["summary"]["accuracies"]]
    return {"means": means, "pooled": pooled, "mean": statistics.mean(means), "nets": len(pooled) // len(means),
            "std": statistics.stdev(means) if len(means) > 1 else 0.0, "seeds": len(means),
            "select_s": [c.get("meta", {}).get("selection_seconds") for c in cells], "commands": [c["command"] for c in cells]}


EVALS = {1: "IPC 1, dsa (1000 epochs, 5 nets)", 10: "IPC 10, fast cut to 100 epochs (3 nets)",
         50: "IPC 50, fast cut to 50 epochs (2 nets)"}
SAME_AS_HERDING = "= herding (k = 1: the one centroid is the class mean)"


def _fmt_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def ipc_rows(ipc: int) -> tuple[dict | None, list[tuple[str, dict | None]]]:
    """Random real's stats at this IPC and each coreset method's."""
    base = stats(RANDOM_CELLS, RANDOM_PREFIX[ipc]) if ipc in RANDOM_PREFIX else stats(CELLS, f"ipc{ipc}-random")
    return base, [(m, stats(CELLS, f"ipc{ipc}-{m}")) for m in METHODS]


def versus(s: dict, base: dict | None) -> tuple[str, str]:
    """The difference to random real and Welch's p (seed means / pooled networks)."""
    if base is None:
        return "", ""
    return (f"{s['mean'] - base['mean']:+.2f}",
            f"{_fmt_p(bm.welch(s['means'], base['means']))} / {_fmt_p(bm.welch(s['pooled'], base['pooled']))}")


def ipc_tables() -> str:
    out = []
    for ipc, label in EVALS.items():
        base, rows = ipc_rows(ipc)
        if not any(r for _, r in rows):
            continue
        out += [f"{label}:", "", "| method | accuracy % (seeds x nets) | vs random | Welch p (seed means / pooled nets) "
                "| DC Table 1 % |", "|---|---|---|---|---|"]
        for name, s in [("random", base), *rows]:
            dc = DC_TABLE1.get(name, {}).get(ipc, "-")
            if s is None:
                out.append(f"| {name} | {SAME_AS_HERDING if ipc == 1 and name == 'k-means' else '(not run)'} | | | {dc} |")
                continue
            diff, p = versus(s, base) if name != "random" else ("", "")
            out.append(f"| {name} | {s['mean']:.2f} ± {s['std']:.2f} ({s['seeds']} x {s['nets']}) | {diff} | {p} | {dc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def space_table() -> str:
    def cell(name: str) -> str:
        path = CELLS / f"{name}.json"
        return f"{json.loads(path.read_text())['summary']['accuracy_mean']:.2f}" if path.is_file() else "(not run)"

    out = ["| selector, IPC | " + " | ".join(SPACES) + " |", "|---|" + "---|" * len(SPACES)]
    for m in ("herding", "k-center"):
        out.append(f"| {m}, IPC 1 | " + " | ".join(cell(f"space-{m}-{sp}-s0") for sp in SPACES) + " |")
    out.append("| k-means, IPC 10 | " + " | ".join(
        cell("ipc10-k-means-s0" if sp == "classifier" else f"space10-k-means-{sp}-s0") for sp in SPACES) + " |")
    return "\n".join(out) + "\n"


MINMAX_CELLS = ROOT / "benchmarks" / "results" / "minmax-equal-count"  # bench_minmax.py equal-count: eq-ipc*-minmax-s*


def minmax_table() -> str:
    """Min-Max Diffusion (its Fashion-MNIST preset, 5 method seeds) against the selections, same IPC and evaluation."""
    out = ["| IPC, evaluation | minmax-diffusion % (seeds) | selection % (seeds) | difference | Welch p (seed means / pooled nets) |",
           "|---|---|---|---|---|"]
    for ipc in (1, 10):
        mm = stats(MINMAX_CELLS, f"eq-ipc{ipc}-minmax")
        for name in METHODS:
            s = stats(CELLS, f"ipc{ipc}-{'herding' if ipc == 1 and name == 'k-means' else name}")
            if mm is None or s is None or (ipc == 1 and name == "k-means"):
                continue
            diff, p = versus(mm, s)
            out.append(f"| {EVALS[ipc]} | {mm['mean']:.2f} ± {mm['std']:.2f} ({mm['seeds']}) | {name} "
                       f"{s['mean']:.2f} ± {s['std']:.2f} ({s['seeds']}) | {diff} | {p} |")
    return "\n".join(out) + "\n"


def readme_table() -> str:
    """One line per method, one column per IPC: the README's short form of ipc_tables()."""
    head = "| accuracy % (seeds; vs random, Welch p over seed means) | " + " | ".join(EVALS.values()) + " |"
    lines = {name: [] for name in ("random", *METHODS)}
    for ipc in EVALS:
        base, rows = ipc_rows(ipc)
        lines["random"].append(f"{base['mean']:.2f} ± {base['std']:.2f} ({base['seeds']})" if base else "(not run)")
        for name, s in rows:
            if s is None:
                lines[name].append("= herding" if ipc == 1 and name == "k-means" else "(not run)")
            else:
                diff, p = versus(s, base)
                p = p.split(" / ")[0]
                lines[name].append(f"{s['mean']:.2f} ± {s['std']:.2f} ({s['seeds']}; {diff}, p {p})")
    return "\n".join([head, "|---|" + "---|" * len(EVALS),
                      *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in lines.items())]) + "\n"


def fill(path: Path, marker: str, text: str) -> None:
    """Replace the block between `<!-- marker begin -->` and `<!-- marker end -->` (atomically)."""
    from ddbench.core.atomic import atomic_write_text

    doc = path.read_text()
    begin, end = f"<!-- {marker} begin -->\n", f"<!-- {marker} end -->"
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {marker} markers")
    head, rest = doc.split(begin, 1)
    atomic_write_text(head + begin + text + rest[rest.index(end):], path)


def report(write: bool = False) -> None:
    if write:
        fill(ROOT / "docs" / "baselines.md", "coreset-table", ipc_tables())
        fill(ROOT / "docs" / "baselines.md", "coreset-space", space_table())
        fill(ROOT / "docs" / "baselines.md", "coreset-minmax", minmax_table())
        readme = ROOT / "README.md"
        if "<!-- coreset-table begin -->" in readme.read_text():
            fill(readme, "coreset-table", readme_table())
    print(ipc_tables(), "\nFeature space, seed 0\n", space_table(), "\nREADME\n", readme_table(),
          "\nminmax-diffusion vs the selections\n", minmax_table(), sep="\n")


def study_ipc50() -> None:
    for seed in SEEDS:
        bm.run_cell(f"ipc50-random-s{seed}", "random", ["--ipc", "50", "--seed", str(seed), *IPC50_EVAL])
    study(50, IPC50_EVAL)


STUDIES = {
    "ipc1": lambda: study(1, IPC1_EVAL, ("herding", "k-center")),  # k-means = herding at IPC 1 (study_space's docstring)
    "ipc10": lambda: study(10, IPC10_EVAL),
    "ipc50": study_ipc50,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=("space", "space-k-center", "space10", "ipc1", "ipc10", "ipc50", "all", "report"))
    ap.add_argument("--write", action="store_true", help="report: also fill the tables of docs/baselines.md and README.md")
    args = ap.parse_args()
    CELLS.mkdir(parents=True, exist_ok=True)
    if args.study == "space":
        study_space()
    elif args.study == "space-k-center":
        study_space(("k-center",))
    elif args.study == "space10":
        study_space10()
    elif args.study in ("ipc1", "ipc10", "ipc50"):
        STUDIES[args.study]()
    elif args.study == "all":
        for run in STUDIES.values():
            run()
    else:
        report(write=args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
