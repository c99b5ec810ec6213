"""The minmax-diffusion studies of docs/minmax.md, as plain `ddbench run` commands.

    python benchmarks/bench_minmax.py ablation   # lambda_r/lambda_d ablation (+ the frozen-ConvNet embedding)
    python benchmarks/bench_minmax.py tradeoff   # DSR: S vs IPC vs accuracy under a fixed generation budget
    python benchmarks/bench_minmax.py baseline   # random real images, same protocol
    python benchmarks/bench_minmax.py all

Every cell is one CLI command (printed, and stored with its result), so any number in docs/minmax.md can be
re-run on its own. The generator variants share the cached 750-step base (the CPU preset in plugins.toml),
so each variant costs only its 250 fine-tuning steps. Results: docs/minmax/results.json; image grids:
docs/minmax/*.png. Wrap in `flock /tmp/ddbench-cpu.lock` on a shared machine.

Reduced design (2 CPU cores): evaluation uses the `fast` protocol with EPOCHS epochs instead of the
standard 1000, and the trade-off uses fewer networks; the numbers are therefore lower than the standard
protocol's, but every cell of a study uses the same protocol, so the comparisons within a study hold.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DOCS = ROOT / "docs" / "minmax"
DDBENCH = str(Path(sys.executable).with_name("ddbench"))

EPOCHS = 60
ABLATION_MODELS = 5
TRADEOFF_MODELS = 2
BUDGET = 10.0
TRADEOFF_STEPS = (5, 20, 50)
PILOT_STEPS = "5,20,50"  # 3 S x 2 pilot IPCs = 6 points for the 4-parameter fit

# Every ablation variant fine-tunes the shared cached 750-step base for ABLATION_FINETUNE steps (the CPU
# preset fine-tunes 250; 100 here so that four variants fit the compute of this machine).
ABLATION_FINETUNE = 100
_FT = f"finetune_steps={ABLATION_FINETUNE}"
ABLATION = {
    "plain (lambda_r=lambda_d=0)": [_FT, "lambda_pos=0", "lambda_neg=0"],
    "both (lambda_r=0.002, lambda_d=0.008)": [_FT],
    "L_d only (lambda_d=0.008)": [_FT, "lambda_pos=0"],
    "L_r only (lambda_r=0.002)": [_FT, "lambda_neg=0"],
}
EMBEDDING_VARIANT = {"both, ConvNet embedding": [_FT, "embedding=convnet"]}


def run_cell(name: str, args: list[str], out: str) -> dict:
    cmd = [DDBENCH, "run", "--method", args[0], *args[1:], "--out", out, "--json", "--no-progress"]
    shown = "ddbench " + " ".join(shlex.quote(a) for a in cmd[1:])
    print(f"\n### {name}\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        return {"name": name, "command": shown, "error": proc.stderr.strip().splitlines()[-1:] or ["?"], "wall_seconds": wall}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    logs = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines()
            if line.startswith(("minmax-diffusion:", "calibrated policy:"))]
    for line in logs:
        print("  " + line)
    row.update({"name": name, "command": shown, "wall_seconds": round(wall, 1), "log": logs})
    print(f"  -> {row.get('accuracy_mean')} ± {row.get('accuracy_std')} %  ({wall:.0f} s)", flush=True)
    return row


def copy_grid(row: dict, out: str, target: str) -> None:
    run_dir = Path(out) / "runs" / str(row.get("run_id"))
    grid = run_dir / "grid.png"
    if grid.is_file():
        OUT_DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(grid, OUT_DOCS / target)


def ablation(out: str, with_embedding: bool = False, models: int = ABLATION_MODELS, skip: int = 0,
             previous: list[dict] | None = None, save=None) -> list[dict]:
    rows = list(previous or [])[:skip]
    cells = {**ABLATION, **(EMBEDDING_VARIANT if with_embedding else {})}
    for i, (name, sets) in enumerate(cells.items()):
        if i < skip:
            continue
        args = ["minmax-diffusion", "--ipc", "10", "--protocol", "fast", "--eval-epochs", str(EPOCHS),
                "--eval-models", str(models)]
        for s in sets:
            args += ["--set", s]
        row = run_cell(name, args, out)
        row["study"] = "ablation"
        copy_grid(row, out, f"ablation-{i}.png")
        rows.append(row)
        if save is not None:
            save(rows)
    return rows


def tradeoff(out: str) -> list[dict]:
    rows = []
    base = ["minmax-diffusion", "--budget", str(BUDGET), "--protocol", "fast", "--eval-epochs", str(EPOCHS),
            "--eval-models", str(TRADEOFF_MODELS)]
    for s in TRADEOFF_STEPS:
        row = run_cell(f"fixed-steps S={s}", base + ["--set", f"steps={s}"], out)
        row["study"] = "tradeoff"
        copy_grid(row, out, f"budget-S{s}.png")
        rows.append(row)
    row = run_cell("calibrated", base + ["--set", "policy=calibrated", "--set", f"pilot_epochs={EPOCHS}",
                                         "--set", f"pilot_steps={PILOT_STEPS}"], out)
    row["study"] = "tradeoff"
    copy_grid(row, out, "budget-calibrated.png")
    rows.append(row)
    return rows


def baseline(out: str) -> list[dict]:
    rows = []
    row = run_cell("random real IPC 10", ["random", "--ipc", "10", "--protocol", "fast", "--eval-epochs", str(EPOCHS),
                                          "--eval-models", str(ABLATION_MODELS)], out)
    row["study"] = "baseline"
    copy_grid(row, out, "random-ipc10.png")
    rows.append(row)
    return rows


def _meta(out: str, run_id: str) -> dict:
    from ddbench.results import get_run

    if not run_id:
        return {}
    row = get_run(Path(out) / "ddbench.sqlite", run_id) or {}
    return row.get("meta") or {}


def report(out: str) -> str:
    """Markdown tables of docs/minmax/results.json (+ each run's meta from the results database)."""
    results = json.loads((OUT_DOCS / "results.json").read_text())
    lines = []

    def acc(r):
        if r.get("accuracy_mean") is None:
            return "failed: " + " ".join(r.get("error") or [])
        return f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f}"

    if "ablation" in results:
        lines += ["| variant | accuracy % (5 nets) | diversity (NN cos. dist.) | mean L_r / L_d in fine-tuning | run |",
                  "|---|---|---|---|---|"]
        for r in results["ablation"]:
            m = _meta(out, r.get("run_id", ""))
            ft = ((m.get("generator") or {}).get("finetune") or {}).get("train") or {}
            lines.append(f"| {r['name']} | {acc(r)} | {m.get('diversity_nn_cosine_distance', '-')} | "
                         f"{ft.get('mean_loss_r', 0):.5f} / {ft.get('mean_loss_d', 0):.5f} | {r.get('run_id')} |")
        lines.append("")
    if "tradeoff" in results:
        lines += ["| policy | S | IPC reached | images | generation s (budget) | images/s | accuracy % | diversity | run |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in results["tradeoff"]:
            m = _meta(out, r.get("run_id", ""))
            smp = m.get("sampler") or {}
            lines.append(f"| {r['name']} | {smp.get('steps')} | {smp.get('ipc')} | {smp.get('images')} | "
                         f"{smp.get('seconds')} ({m.get('budget')}) | {smp.get('images_per_second')} | {acc(r)} | "
                         f"{m.get('diversity_nn_cosine_distance', '-')} | {r.get('run_id')} |")
            if (m.get("policy") or {}).get("policy") == "calibrated":
                cal = m["policy"]
                lines.append("")
                lines.append(f"calibrated decision: {cal['reason']}; pilot {m.get('pilot_seconds')} s")
                lines.append(f"pilot points (S, IPC, acc%): {cal['curve'].get('pilot_points')}")
                lines.append(f"fit: {json.dumps(cal['curve'].get('fit'))}")
                lines.append("predicted: " + ", ".join(
                    f"S={p['steps']}: IPC {p['ipc']} -> {p['predicted_accuracy']}%" for p in cal['curve'].get('predicted', [])))
        lines.append("")
    if "baseline" in results:
        for r in results["baseline"]:
            lines.append(f"- {r['name']}: {acc(r)} % (run {r.get('run_id')}, eval {r.get('eval_seconds', 0):.0f} s)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study", choices=["ablation", "tradeoff", "baseline", "all", "report"])
    ap.add_argument("--out", default=str(ROOT / "ddbench-results"))
    ap.add_argument("--with-embedding", action="store_true", help="ablation: also the frozen-ConvNet embedding")
    ap.add_argument("--eval-models", type=int, default=ABLATION_MODELS, help="ablation: networks per cell")
    ap.add_argument("--skip", type=int, default=0, help="ablation: keep the first N recorded cells, run the rest")
    args = ap.parse_args(argv)
    OUT_DOCS.mkdir(parents=True, exist_ok=True)
    if args.study == "report":
        print(report(args.out))
        return
    results_path = OUT_DOCS / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    studies = ["baseline", "tradeoff", "ablation"] if args.study == "all" else [args.study]
    for study in studies:
        if study == "ablation":
            def save(rows):
                results["ablation"] = rows
                results_path.write_text(json.dumps(results, indent=1, default=str))

            results[study] = ablation(args.out, args.with_embedding, args.eval_models, args.skip,
                                      results.get("ablation"), save)
        else:
            results[study] = {"tradeoff": tradeoff, "baseline": baseline}[study](args.out)
        results_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {results_path}")


if __name__ == "__main__":
    main()
