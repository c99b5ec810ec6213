"""The standard table (docs/evaluation.md#the-standard-table): every method under the standard `dsa` protocol
(1000 epochs, 5 networks), Fashion-MNIST, IPC 1 and 10, with the published figure beside each row; and the rank
study: does the cut `fast` protocol (100 or 300 epochs) rank the methods as `dsa` does? Every cell a plain
`ddbench run`, resumable.

    DDBENCH_STUDY_LOCK=/tmp/ddbench-cpu.lock python benchmarks/bench_standard.py run     # missing cells, by priority
    python benchmarks/bench_standard.py run --only ipc1        # one group: ipc1, ipc10, fast100, fast300
    python benchmarks/bench_standard.py run --only ipc10 --seeds 0 --methods dm,dc   # a slice of the cells
    python benchmarks/bench_standard.py plan                   # the cells, stored or to run, in run order
    python benchmarks/bench_standard.py report [--write]       # the table (README, docs/evaluation.md) and the rank study

Cells are stored atomically in benchmarks/results/standard/<cell>.json by bench_minmax.run_cell (command,
summary, meta), one at a time under `flock $DDBENCH_STUDY_LOCK` when set; a stored cell is never run again. Cells
other studies already ran with the very same command are read where they are (ADOPTED): random real from the
shipped reference table's cells, the coresets' and Min-Max Diffusion's equal-count cells. Seeds are method seeds;
each cell's evaluation networks are seeded from its seed. Statistics: mean ± sample std over the seeds' means,
Welch's t-test over seed means against random real at the same IPC.
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
RESULTS = ROOT / "benchmarks" / "results"
bm.CELLS = CELLS = RESULTS / "standard"

# The standard protocol (VICO-UoE/DatasetCondensation main_DM.py --epoch_eval_train 1000, DSA on; 5 networks as
# MTT distill.py --num_eval 5) and the two cut ones of the rank study (main.py's 300 epochs; the 100-epoch cut the
# earlier IPC-10 tables used, benchmarks/bench_minmax.py IPC10_EVAL).
PROTOCOLS: dict[str, list[str]] = {
    "dsa": ["--protocol", "dsa", "--eval-models", "5"],
    "fast100": ["--protocol", "fast", "--eval-epochs", "100", "--eval-models", "3"],
    "fast300": ["--protocol", "fast", "--eval-models", "3"],
}
PROTOCOL_LABEL = {"dsa": "dsa (1000 epochs, 5 nets)", "fast100": "fast cut to 100 epochs (3 nets)",
                  "fast300": "fast, 300 epochs (3 nets)"}
# (method, method seeds): 5 seeds for random real and Min-Max Diffusion (the headline comparison), 3 for the others.
METHODS: dict[str, int] = {"random": 5, "minmax-diffusion": 5, "herding": 3, "k-means": 3, "k-center": 3, "dm": 3,
                           "dc": 3, "dsa-gm": 3, "mtt": 3}
# IPC 10 run order within a seed (each cell ~20 min): the headline pair and herding first, then the methods with
# published figures, the other selections last.
RUN_ORDER = ("random", "minmax-diffusion", "herding", "dm", "dsa-gm", "dc", "mtt", "k-means", "k-center")
# Rows that run a CPU preset of plugins.toml instead of the paper's settings (`--preset paper` restores those).
CPU_PRESET = {"dm", "dc", "dsa-gm", "mtt", "minmax-diffusion"}
# Published Fashion-MNIST figures, ConvNet, hard labels, and the protocol behind each (as recalled; DC Table 1 and
# the DSA paper's table; herding and k-center from DC Table 1). DC's table evaluates 300 epochs without
# augmentation (main.py get_daparam: no DSA on Fashion-MNIST for DC), DSA's is the 1000-epoch DSA protocol = `dsa`.
PUBLISHED: dict[str, dict[int, str]] = {
    "random": {1: "51.4 ± 3.8", 10: "73.8 ± 0.7"},
    "herding": {1: "67.0 ± 1.9", 10: "71.1 ± 0.7"},
    "k-center": {1: "66.9 ± 1.8", 10: "54.7 ± 1.5"},
    "dc": {1: "70.5", 10: "82.3"},
    "dsa-gm": {1: "70.6", 10: "84.6"},
}
PUBLISHED_SOURCE = {"random": "DC Table 1 (300 ep, no aug)", "herding": "DC Table 1 (300 ep, no aug)",
                    "k-center": "DC Table 1 (300 ep, no aug)", "dc": "DC (300 ep, no aug)", "dsa-gm": "DSA (= dsa)"}


def adopted(ipc: int, proto: str, method: str, seed: int) -> Path | None:
    """A cell another study ran with the same command (read in place, never re-run)."""
    table = {
        (1, "dsa", "random"): RESULTS / "reference" / f"ipc1-dsa-s{seed}.json",
        (10, "fast100", "random"): RESULTS / "reference" / f"ipc10-fast-s{seed}.json",
        (1, "dsa", "herding"): RESULTS / "coreset" / f"ipc1-herding-s{seed}.json",
        (1, "dsa", "k-center"): RESULTS / "coreset" / f"ipc1-k-center-s{seed}.json",
        (1, "dsa", "minmax-diffusion"): RESULTS / "minmax-equal-count" / f"eq-ipc1-minmax-s{seed}.json",
        (10, "fast100", "minmax-diffusion"): RESULTS / "minmax-equal-count" / f"eq-ipc10-minmax-s{seed}.json",
        **{(10, "fast100", m): RESULTS / "coreset" / f"ipc10-{m}-s{seed}.json" for m in ("herding", "k-means", "k-center")},
    }
    path = table.get((ipc, proto, method))
    return path if path is not None and path.is_file() else None


def cell_name(ipc: int, proto: str, method: str, seed: int) -> str:
    return f"ipc{ipc}-{proto}-{method}-s{seed}"


def same_as(ipc: int, method: str) -> str | None:
    """k-means at IPC 1 is herding: with k = 1 its one centroid is the class mean (tests/test_selectors.py)."""
    return "herding" if (ipc, method) == (1, "k-means") else None


def plan(only: str = "", seeds: str = "", methods: str = "") -> list[tuple[str, int, str, str, int]]:
    """(group, ipc, protocol, method, seed) in run order: IPC 1 first (cheap), then IPC 10 under dsa one seed of every
    method at a time (so the rank study has every method early), then the cut protocols of the rank study."""
    order: list[tuple[str, int, str, str, int]] = []
    for seed in range(5):
        for m, n in METHODS.items():
            if seed < n and not same_as(1, m):
                order.append(("ipc1", 1, "dsa", m, seed))
    for group, proto in (("ipc10", "dsa"), ("fast100", "fast100"), ("fast300", "fast300")):
        for seed in range(5):
            for m in RUN_ORDER:
                if seed < METHODS[m]:
                    order.append((group, 10, proto, m, seed))
    # The rank study at IPC 1: the cut protocols on the IPC 1 cells' sets, re-made by the same seeded command.
    for group, proto in (("ipc1-fast100", "fast100"), ("ipc1-fast300", "fast300")):
        for seed in range(5):
            for m in RUN_ORDER:
                if seed < METHODS[m] and not same_as(1, m):
                    order.append((group, 1, proto, m, seed))
    keep_seeds = {int(x) for x in seeds.split(",") if x}
    keep_methods = set(filter(None, methods.split(",")))
    return [c for c in order if (not only or c[0] in only.split(",")) and (not keep_seeds or c[4] in keep_seeds)
            and (not keep_methods or c[3] in keep_methods)]


def load(ipc: int, proto: str, method: str, seed: int) -> dict[str, Any] | None:
    method = same_as(ipc, method) or method
    path = adopted(ipc, proto, method, seed) or CELLS / f"{cell_name(ipc, proto, method, seed)}.json"
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    return cell if cell["summary"].get("accuracy_mean") is not None else None


def run(only: str, seeds: str = "", methods: str = "") -> None:
    for group, ipc, proto, method, seed in plan(only, seeds, methods):
        if load(ipc, proto, method, seed) is None:
            bm.run_cell(cell_name(ipc, proto, method, seed), method,
                        ["--ipc", str(ipc), "--seed", str(seed), *PROTOCOLS[proto]], cells=CELLS)


def stats(ipc: int, proto: str, method: str) -> dict[str, Any] | None:
    cells = [c for s in range(METHODS[method]) if (c := load(ipc, proto, method, s)) is not None]
    if not cells:
        return None
    means = [c["summary"]["accuracy_mean"] for c in cells]
    return {"means": means, "mean": statistics.mean(means), "seeds": len(means),
            "std": statistics.stdev(means) if len(means) > 1 else None,
            "nets": len(cells[0]["summary"].get("accuracies") or []),
            "precision": sorted({str(precision_of(c)) for c in cells})}


def precision_of(cell: dict[str, Any]) -> str:
    """The evaluation's arithmetic as the run recorded it; cells from before the setting existed ran fp32."""
    if cell.get("summary", {}).get("eval_precision"):
        return cell["summary"]["eval_precision"]
    details = (cell.get("summary", {}).get("eval_details") or cell.get("meta", {}).get("eval") or {})
    return details.get("precision", "fp32") if isinstance(details, dict) else "fp32"


def fmt(s: dict[str, Any] | None) -> str:
    if s is None:
        return "(not run)"
    sd = f" ± {s['std']:.2f}" if s["std"] is not None else ""
    return f"{s['mean']:.2f}{sd} ({s['seeds']})"


def table(ipcs: tuple[int, ...] = (1, 10)) -> str:
    lines = ["| method (seeds) | " + " | ".join(f"IPC {i}, dsa: ddbench % (seeds; vs random, Welch p over seed means)"
                                                for i in ipcs) + " | published IPC " + " / ".join(map(str, ipcs)) + " (protocol) |",
             "|---|" + "---|" * len(ipcs) + "---|"]
    base = {i: stats(i, "dsa", "random") for i in ipcs}
    for m in METHODS:
        cells = []
        for i in ipcs:
            if same_as(i, m):
                cells.append(f"= {same_as(i, m)}")
                continue
            s = stats(i, "dsa", m)
            text = fmt(s)
            if s is not None and m != "random" and base[i] is not None:
                p = bm.welch(s["means"], base[i]["means"]) if s["seeds"] > 1 and base[i]["seeds"] > 1 else None
                text += f"; {s['mean'] - base[i]['mean']:+.2f}, p {'n/a' if p is None else f'{p:.2g}'}"
            cells.append(text)
        pub = " / ".join(PUBLISHED.get(m, {}).get(i, "—") for i in ipcs)
        src = f" ({PUBLISHED_SOURCE[m]})" if m in PUBLISHED_SOURCE else ""
        name = f"{m}{' (CPU preset)' if m in CPU_PRESET else ''}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {pub}{src} |")
    used = {i: sorted({x for m in METHODS if (st := stats(i, "dsa", m)) for x in st["precision"]}) for i in ipcs}
    lines.append("\nEvaluation arithmetic of the cells (docs/evaluation.md#precision; bf16 passed the equivalence "
                 "test against fp32): " + "; ".join(f"IPC {i}: {', '.join(used[i]) or '-'}" for i in ipcs) + ".")
    return "\n".join(lines)


def rank_study(ipc: int = 10) -> str:
    """Kendall's tau between the method rankings of two protocols (method means over the seeds both protocols have;
    and per seed index, the methods' seed-s cells), and the largest rank displacement."""
    from scipy.stats import kendalltau

    out = []
    for cut in ("fast100", "fast300"):
        means: dict[str, dict[str, float]] = {cut: {}, "dsa": {}}
        for m in METHODS:
            pairs = [(c1["summary"]["accuracy_mean"], c2["summary"]["accuracy_mean"]) for s in range(METHODS[m])
                     if (c1 := load(ipc, cut, m, s)) and (c2 := load(ipc, "dsa", m, s))]
            if pairs and not same_as(ipc, m):
                means[cut][m] = statistics.mean(a for a, _ in pairs)
                means["dsa"][m] = statistics.mean(b for _, b in pairs)
        common = list(means[cut])
        if len(common) < 3:
            out.append(f"- {PROTOCOL_LABEL[cut]} vs dsa at IPC {ipc}: {len(common)} methods in both so far (need 3)")
            continue
        a, b = [means[cut][m] for m in common], [means["dsa"][m] for m in common]
        tau, p = kendalltau(a, b)
        rank_a = {m: r for r, m in enumerate(sorted(common, key=lambda m: -means[cut][m]), 1)}
        rank_b = {m: r for r, m in enumerate(sorted(common, key=lambda m: -means["dsa"][m]), 1)}
        worst = max(common, key=lambda m: abs(rank_a[m] - rank_b[m]))
        per_seed = []
        for s in range(3):
            xs = [(c1["summary"]["accuracy_mean"], c2["summary"]["accuracy_mean"]) for m in common
                  if (c1 := load(ipc, cut, m, s)) and (c2 := load(ipc, "dsa", m, s))]
            if len(xs) >= 3:
                per_seed.append(kendalltau(*zip(*xs))[0])
        seeds = (f"; per seed index: {', '.join(f'{t:.2f}' for t in per_seed)}" if per_seed else "")
        out.append(f"- {PROTOCOL_LABEL[cut]} vs dsa at IPC {ipc}, {len(common)} methods ({', '.join(common)}): "
                   f"Kendall tau {tau:.2f} (p {p:.2g}){seeds}; largest rank displacement {abs(rank_a[worst] - rank_b[worst])} "
                   f"({worst}: {rank_a[worst]} vs {rank_b[worst]})")
        out.append("  ranks (cut / dsa): " + ", ".join(f"{m} {rank_a[m]}/{rank_b[m]}" for m in common))
    return "\n".join(out)


def report(write: bool) -> None:
    text = table()
    ranks = rank_study(10) + "\n" + rank_study(1)
    print(text + "\n\nRank study:\n" + ranks)
    if write:
        for path, marker in ((ROOT / "README.md", "standard-table"), (ROOT / "docs" / "evaluation.md", "standard-table"),
                             (ROOT / "docs" / "evaluation.md", "rank-study")):
            body = text if marker == "standard-table" else ranks
            replace_block(path, marker, body)


def replace_block(path: Path, marker: str, body: str) -> None:
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
    ap.add_argument("--only", default="", help="groups to run: ipc1, ipc10, fast100, fast300 (IPC 10), ipc1-fast100, "
                    "ipc1-fast300 (comma-separated)")
    ap.add_argument("--seeds", default="", help="method seeds to run or plan, e.g. 0 or 0,1 (default: all)")
    ap.add_argument("--methods", default="", help="methods to run or plan, comma-separated (default: all)")
    ap.add_argument("--write", action="store_true", help="report: fill the marker blocks of the README and docs")
    args = ap.parse_args(argv)
    groups = ("ipc1", "ipc10", "fast100", "fast300", "ipc1-fast100", "ipc1-fast300")
    bad = [g for g in filter(None, args.only.split(",")) if g not in groups]
    if bad:
        ap.error(f"--only {','.join(bad)}: not a group; choose from {', '.join(groups)}")
    if not all(x.isdigit() for x in filter(None, args.seeds.split(","))):
        ap.error(f"--seeds {args.seeds}: not a comma-separated list of seeds; e.g. 0,1")
    unknown = [m for m in filter(None, args.methods.split(",")) if m not in METHODS]
    if unknown:
        ap.error(f"--methods {','.join(unknown)}: not in the table; choose from {', '.join(METHODS)}")
    if args.what == "run":
        run(args.only, args.seeds, args.methods)
    elif args.what == "plan":
        for group, ipc, proto, method, seed in plan(args.only, args.seeds, args.methods):
            where = adopted(ipc, proto, same_as(ipc, method) or method, seed)
            state = f"adopted {where.relative_to(ROOT)}" if where else (
                "stored" if load(ipc, proto, method, seed) else "to run")
            print(f"{group:8s} {cell_name(ipc, proto, method, seed):32s} {state}")
    else:
        report(args.write)


if __name__ == "__main__":
    main()
