"""Measure DM and MTT against the random real subset on Fashion-MNIST (issue 3), and print the table.

Runs `ddbench run` once per (method, IPC) with the CPU presets of plugins.toml, one after another, and
prints a markdown table of mean ± std test accuracy over the evaluation networks. Each command is printed
before it runs, so the table can be reproduced by hand. Run it under the shared CPU lock:

    flock /tmp/ddbench-cpu.lock /work/venv/bin/python benchmarks/bench_baselines.py --out /tmp/ddb-meas

Protocol: `fast` (the `dsa` protocol's training with fewer epochs: 300 by default) with 5 networks; IPC 10
uses `--eval-epochs 100` by default to fit the CPU budget (1000-epoch `dsa` evaluation of one IPC-10 set
takes ~30 min on 2 cores). The random subset with the same seed is exactly the DM/MTT initialisation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DDBENCH = str(Path(sys.executable).with_name("ddbench"))


def command(method: str, ipc: int, args) -> list[str]:
    cmd = [DDBENCH, "run", "--method", method, "--ipc", str(ipc), "--dataset", args.dataset,
           "--protocol", args.protocol, "--eval-models", str(args.eval_models), "--seed", str(args.seed),
           "--out", args.out, "--json", "--no-progress"]
    epochs = args.eval_epochs_ipc10 if ipc >= 10 else args.eval_epochs
    if epochs:
        cmd += ["--eval-epochs", str(epochs)]
    if args.preset:
        cmd += ["--preset", args.preset]
    return cmd


def probe_memory(steps: int, batch: int, channels: int, size: int, cache: str) -> float:
    """Peak-RSS growth (MB) of one MTT iteration with `steps` x `batch` synthetic images (tiny random data)."""
    import resource
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import make_tiny_dataset

    from ddbench.api import RunContext, resolve_params
    from ddbench.host.plugins import load_plugins

    torch.set_num_threads(1)
    reg = load_plugins()
    method = reg.get("methods", "mtt")
    ds = make_tiny_dataset(num_classes=10, per_class=20, channels=channels, size=size)
    kw = dict(num_experts=1, train_epochs=1, expert_epochs=1, max_start_epoch=1, syn_steps=steps, batch_syn=batch,
              iterations=0, dsa_strategy="none")
    ctx = RunContext(dataset=ds, ipc=max(1, batch // 10), seed=0, device=torch.device("cpu"),
                     params=resolve_params("mtt", method.params, kw), model="convnet", registry=reg,
                     work_dir=Path(tempfile.mkdtemp()), cache_dir=Path(cache), progress=False, log=lambda s: None)
    method.distill(ctx)  # builds (or loads) the one-expert buffer
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ctx.params["iterations"] = 1
    method.distill(ctx)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def memory_table() -> None:
    """Run each probe twice in a fresh process (the first builds the buffer, whose peak would hide the unroll)."""
    import tempfile

    cache = tempfile.mkdtemp()
    print("| syn_steps | batch_syn | image | MB |\n|---|---|---|---|")
    for steps, batch, ch, size in ((2, 20, 1, 28), (8, 20, 1, 28), (8, 40, 1, 28), (16, 40, 1, 28), (8, 40, 3, 32)):
        arg = f"{steps},{batch},{ch},{size},{cache}"
        for _ in range(2):
            out = subprocess.run([sys.executable, __file__, "--probe", arg], capture_output=True, text=True)
        print(f"| {steps} | {batch} | {size}x{size}x{ch} | {out.stdout.strip().splitlines()[-1]} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="ddbench-results")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--methods", default="mtt,dm,random")
    ap.add_argument("--ipcs", default="1,10")
    ap.add_argument("--protocol", default="fast")
    ap.add_argument("--eval-models", type=int, default=5)
    ap.add_argument("--eval-epochs", type=int, default=0, help="0 = the protocol's default (IPC < 10)")
    ap.add_argument("--eval-epochs-ipc10", type=int, default=100, help="epochs for IPC >= 10 (0 = default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="")
    ap.add_argument("--threads", default="1", help="OMP_NUM_THREADS for the runs (1: shared cores)")
    ap.add_argument("--memory", action="store_true", help="measure MTT unroll memory instead (tiny data, seconds)")
    ap.add_argument("--probe", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        steps, batch, ch, size, cache = args.probe.split(",")
        print(f"{probe_memory(int(steps), int(batch), int(ch), int(size), cache):.0f}")
        return 0
    if args.memory:
        memory_table()
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": args.threads}
    rows = []
    results_file = Path(args.out) / "bench_baselines.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        for method in args.methods.split(","):
            cmd = command(method, ipc, args)
            print("$ ddbench " + " ".join(cmd[1:]), flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            last = (proc.stdout.strip().splitlines() or [""])[-1]
            try:
                res = json.loads(last)
            except json.JSONDecodeError:
                res = {"status": "error", "error": (proc.stderr or proc.stdout)[-2000:]}
            res.update({"cmd": " ".join(["ddbench", *cmd[1:]]), "wall": wall, "method": method, "ipc": ipc})
            with results_file.open("a") as fh:
                fh.write(json.dumps(res) + "\n")
            rows.append(res)
            acc = res.get("accuracy_mean")
            print(f"  -> {res.get('status')} acc {acc} ± {res.get('accuracy_std')}  distill {res.get('distill_seconds')}"
                  f" s, eval {res.get('eval_seconds')} s, wall {wall:.0f} s", flush=True)
            if res.get("status") != "ok":
                print(res.get("error", "")[-1500:], flush=True)

    print("\n| method | IPC | accuracy (%) | distill (s) | eval (s) |\n|---|---|---|---|---|")
    for r in rows:
        if r.get("accuracy_mean") is not None:
            print(f"| {r['method']} | {r['ipc']} | {r['accuracy_mean']:.1f} ± {r['accuracy_std']:.1f} | "
                  f"{(r.get('distill_seconds') or 0):.0f} | {(r.get('eval_seconds') or 0):.0f} |")
        else:
            print(f"| {r['method']} | {r['ipc']} | {r.get('status')} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
