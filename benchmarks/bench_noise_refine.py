"""Generator-side refine (issue 31 item 2, ddbench_minmax/noise_refine.py) against pixel-side refine (refine.py):
what one iteration costs, and a one-seed probe of what each buys in the same seconds. Run by hand under the shared lock:

    flock /tmp/ddbench-cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_noise_refine.py cost
    flock /tmp/ddbench-cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_noise_refine.py probe --lrs 1
    flock /tmp/ddbench-cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_noise_refine.py probe --lrs 0.1
    flock /tmp/ddbench-cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_noise_refine.py probe --ipc 10 \
        --budgets 30 --lrs 0.1
    .venv/bin/python benchmarks/bench_noise_refine.py report

The generator is the study's: minmax-diffusion's Fashion-MNIST preset (plugins.toml: fine-tuned 200 steps, S = 10
DDIM steps, guidance 2, k-means prototypes noised to strength 0.7), loaded from the cache of --out (default
/work/main/ddbench-results, read only: on_corrupt_cache=error, nothing is trained). The objective is DM (`refine=dm`,
refine_settings batch_real=32 as the warm-start study, bench_warm.BATCH_REAL), resolved by name through
refine.objective; both loops run SGD with DM's momentum 0.5, at DM's lr 1.0 (`--lrs 1`) and at a tenth of it
(`--lrs 0.1`): in a 6-iteration check at IPC 1 (held-out DM loss of the plain set 596) lr 1.0 through the chain
overshot (683 after 3 iterations, 650 after 6) where lr 0.1 descended (416, 383); pixel-side at lr 1.0 gave 669,
458. The 0.1 cells are picked from that check (on the matching loss, not on accuracy), and said so.

cost: per IPC (1 and 10), one pixel-side and one noise-side iteration (at DM's lr; the cost does not depend on it)
alternated in this process, `--repeats` times after a warm-up of each; median seconds and their ratio.
probe: IPC 1 (`--ipc 10` once, at 30 s), seed 0: the plain set, pixel refine for T s and noise refine for T s per
lr (T = 10, 30: each loop's own deadline with refine's rule, safety 1.1), each stored as a synset.pt and evaluated
unchanged by `ddbench run --method dm --set init=PATH --set iterations=0` (DM from a stored set with 0 iterations
returns it as is, baselines/dm.py) under `--protocol fast --eval-epochs 100 --eval-models 3`, seed 0; plus each
set's DM loss on 10 held-out draws (iterations 100000-100009, never used by either loop). One seed: a probe, no
claim.

Results: benchmarks/results/noise-refine/<cell>.json, written atomically; a stored cell is not run again.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("DDBENCH_NOISE_RESULTS", ROOT / "benchmarks" / "results" / "noise-refine"))
DDBENCH = str(Path(sys.executable).with_name("ddbench"))
GEN_OUT = os.environ.get("DDBENCH_NOISE_GEN_OUT", "/work/main/ddbench-results")  # the cached fine-tuned generator
EVAL_OUT = os.environ.get("DDBENCH_NOISE_EVAL_OUT", str(ROOT / "ddbench-results"))  # the evaluation runs' records
EVAL = ["--protocol", "fast", "--eval-epochs", "100", "--eval-models", "3"]  # bench_minmax.IPC10_EVAL
if os.environ.get("DDBENCH_NOISE_EVAL"):  # a smoke test's cheaper evaluation (then DDBENCH_NOISE_RESULTS elsewhere)
    EVAL = shlex.split(os.environ["DDBENCH_NOISE_EVAL"])
BATCH_REAL = 32  # bench_warm.BATCH_REAL: DM's CPU preset (plugins.toml [methods.dm.fashion-mnist])
SAFETY = 1.1  # minmax-diffusion's budget_safety default
HELD_OUT = range(100000, 100010)  # DM draws neither loop uses (both count iterations from 0)
CAP = 10 ** 6  # iterations: the deadline ends both loops


def machine() -> dict[str, Any]:
    flags, model = "", platform.processor()
    for line in reversed(Path("/proc/cpuinfo").read_text().splitlines()):  # reversed: the first CPU's lines win
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = line
    return {"cpu": model, "avx512_bf16": "avx512_bf16" in flags.split(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__}


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def atomic_json(obj: Any, path: Path) -> None:
    from ddbench.core.atomic import atomic_write_text

    atomic_write_text(json.dumps(obj, indent=1, sort_keys=True, default=str), path)


class Setup:
    """The study's generator, prototypes, sampling request and bound DM objective at one IPC and seed."""

    def __init__(self, ipc: int, seed: int = 0):
        from ddbench.run.runner import RunRequest, context, registry_for, resolve
        from ddbench.store.config import load_config
        from ddbench_minmax import refine
        from ddbench_minmax.generator import obtain_generator, to_denoiser_space
        from ddbench_minmax.sampling import load_prototypes, sample_request

        config = load_config(None)
        registry = registry_for(config)
        req = RunRequest(method="minmax-diffusion", dataset="fashion-mnist", ipc=ipc, seed=seed, out=GEN_OUT,
                         progress=False, sets={"refine": "dm", "refine_settings": f"batch_real={BATCH_REAL}",
                                               "on_corrupt_cache": "error", "quality": "false"})
        self.log: list[str] = []
        ctx = context(resolve(req, config, registry), registry, log=self.log.append)
        p = ctx.params
        assert p["steps"] == 10 and p["strength"] == 0.7 and p["guidance"] == 2.0 and p["prototypes"] == "kmeans", p
        cache = Path(GEN_OUT) / "cache" / "minmax-diffusion"
        if not cache.is_dir():
            raise SystemExit(f"no cached generator under {cache}; this benchmark never trains one")
        self.generator, self.gen_info = obtain_generator(ctx)
        if not any("loaded from" in line for line in self.log):
            raise SystemExit("the fine-tuned generator was not loaded from the cache: " + " | ".join(self.log[-3:]))
        self.generator.to(ctx.device).eval()
        protos = to_denoiser_space(self.generator, load_prototypes(ctx, ipc))
        self.request = sample_request(ctx, self.generator, p["steps"], ipc, seed=ctx.seed, deadline=None,
                                      throughput=None, prototypes=protos)
        self.ctx = ctx
        self.obj, self.settings = refine.objective(ctx)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        from ddbench_minmax.train import from_signed_pixels

        return from_signed_pixels(self.ctx.dataset, x)

    def plain(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The generated set as DSRSampler.generate makes it: (normalised images, labels, seconds)."""
        from ddbench_minmax.sampler import DSRSampler

        t0 = time.perf_counter()
        out = DSRSampler().generate(self.generator, self.request)
        return self.to_images(out.images), out.labels.long(), time.perf_counter() - t0

    def step(self, labels: torch.Tensor):
        return self.obj.bind(self.ctx, labels, self.settings)

    def noise_loop(self, labels: torch.Tensor):
        from ddbench_minmax import noise_refine

        return noise_refine.Loop(self.generator, self.request, self.step(labels), self.to_images,
                                 self.settings["lr"], self.settings["momentum"], self.obj.name)

    def held_out_loss(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        step = self.step(labels)
        return statistics.mean(step(it, images)[0] for it in HELD_OUT)


# --------------------------------------------------------------------------------------------------


def cost(ipcs: list[int], repeats: int) -> None:
    for ipc in ipcs:
        path = RESULTS / f"cost-ipc{ipc}.json"
        if path.is_file():
            print(f"cost-ipc{ipc}: stored ({path})")
            continue
        before = load()
        s = Setup(ipc)
        images, labels, sample_seconds = s.plain()
        pix_step = s.step(labels)
        x = images.clone().requires_grad_(True)
        opt = torch.optim.SGD([x], lr=s.settings["lr"], momentum=s.settings["momentum"])
        loop = s.noise_loop(labels)

        def pixel(it: int) -> float:  # refine.optimise's body
            t = time.perf_counter()
            _, grad = pix_step(it, x)
            opt.zero_grad()
            x.grad = grad
            opt.step()
            return time.perf_counter() - t

        from ddbench_minmax.sampler import use_threads

        all_threads = torch.get_num_threads()
        options = sorted({all_threads, 1}, reverse=True)  # the sampler's thread_options: all of torch's and 1

        def noise(it: int, threads: int) -> float:
            with use_threads(threads):
                t = time.perf_counter()
                loop.iterate(it)
                return time.perf_counter() - t

        warm = {"pixel": pixel(0), **{f"noise_{n}": noise(0, n) for n in options}}  # warm-up, not in the medians
        pix: list[float] = []
        noi: dict[int, list[float]] = {n: [] for n in options}
        for it in range(1, repeats + 1):  # alternated, so a busy spell of the machine hits both sides
            pix.append(pixel(it))
            for n in options:
                noi[n].append(noise(it, n))
        med = {n: statistics.median(v) for n, v in noi.items()}
        best = min(med, key=med.get)
        with use_threads(best):
            t = time.perf_counter()
            loop.images()
            final_chain = time.perf_counter() - t
        cell = {"ipc": ipc, "repeats": repeats, "pixel_seconds": pix,
                "noise_seconds_by_threads": {str(n): v for n, v in noi.items()},
                "noise_median_by_threads": {str(n): m for n, m in med.items()}, "noise_threads": best,
                "warmup_seconds": warm, "pixel_median": statistics.median(pix), "noise_median": med[best],
                "ratio_median": med[best] / statistics.median(pix), "ratio_min": min(noi[best]) / min(pix),
                "sample_seconds": sample_seconds, "final_chain_seconds": final_chain,
                "objective": s.obj.name, "settings": s.settings, "machine": machine(), "load_before": before,
                "load_after": load(), "generator": s.gen_info,
                "command": "flock /tmp/ddbench-cpu.lock env OMP_NUM_THREADS=2 .venv/bin/python "
                           "benchmarks/bench_noise_refine.py cost"}
        atomic_json(cell, path)
        by = ", ".join(f"{n} threads {m:.3f} s" for n, m in med.items())
        print(f"cost-ipc{ipc}: pixel {cell['pixel_median']:.3f} s, noise {by} per iteration (median of {repeats}), "
              f"ratio {cell['ratio_median']:.1f}x; warm-up {warm}; load {before} -> {cell['load_after']}", flush=True)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _evaluate(name: str, set_path: Path, ipc: int, seed: int) -> dict[str, Any]:
    cmd = [DDBENCH, "run", "--method", "dm", "--dataset", "fashion-mnist", "--ipc", str(ipc), "--seed", str(seed),
           "--set", f"init={set_path}", "--set", "iterations=0", *EVAL, "--out", EVAL_OUT, "--json", "--no-progress"]
    shown = "ddbench " + " ".join(shlex.quote(a) for a in cmd[1:] if a not in ("--out", EVAL_OUT))
    print(f"  $ {shown}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: evaluation failed\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"command": shown, "summary": summary}


def probe(budgets: list[int], lrs: list[float], seed: int, ipc: int = 1) -> None:
    from ddbench.api import SyntheticSet
    from ddbench.store.synsets import save_synset
    from ddbench_minmax import noise_refine, refine

    sets = RESULTS / "sets"
    measured = RESULTS / f"cost-ipc{ipc}.json"  # the noise loop runs at the thread count its cost found faster
    noise_threads = json.loads(measured.read_text())["noise_threads"] if measured.is_file() else 1
    s: Setup | None = None
    images = labels = None
    cells = ["plain"] + [f"{side}-lr{lr:g}-{t}" for lr in lrs for t in budgets
                         for side in ("pixel", "noise")]
    for cell_name in cells:
        name = f"probe-ipc{ipc}-{cell_name}-s{seed}"
        path = RESULTS / f"{name}.json"
        if path.is_file():
            print(f"{name}: stored")
            continue
        set_path = sets / f"{name}.pt"
        before = load()
        if s is None:
            s = Setup(ipc, seed)
            images, labels, _ = s.plain()
        info: dict[str, Any] = {}
        info_times: dict[str, Any] = {}
        if cell_name == "plain":
            out, out_labels = images, labels
        else:
            side, lr_name, seconds = cell_name.split("-")
            lr = float(lr_name[2:])
            t0 = time.perf_counter()
            if side == "pixel":
                out, losses, stopped = refine.optimise(s.step(labels), images, CAP, lr, s.settings["momentum"], "dm",
                                                       deadline=t0 + float(seconds), safety=SAFETY)
                out_labels = labels
            else:
                res = noise_refine.optimise(s.generator, s.request, s.step(labels), s.to_images, CAP, lr,
                                            s.settings["momentum"], "dm", deadline=t0 + float(seconds),
                                            safety=SAFETY, threads=noise_threads)
                out, out_labels, losses, stopped = res.images, res.labels, res.losses, res.stopped_at_deadline
                assert torch.equal(out_labels.cpu(), labels)
                info_times = {"iteration_seconds": res.iteration_seconds, "final_chain_seconds": res.final_seconds,
                              "threads": noise_threads}
            info = {"seconds": round(time.perf_counter() - t0, 3), "iterations_done": len(losses),
                    "stopped_at_deadline": stopped, "losses": losses, "budget_seconds": float(seconds), "lr": lr,
                    "side": side, **info_times}
        info["held_out_dm_loss"] = s.held_out_loss(out, out_labels)
        info["moved_from_plain"] = float((out - images).abs().mean()) if cell_name != "plain" else 0.0
        sets.mkdir(parents=True, exist_ok=True)
        save_synset(SyntheticSet(out.detach().cpu(), out_labels.cpu(), meta={"bench_noise_refine": cell_name}),
                    set_path)
        ev = _evaluate(name, set_path, ipc, seed)
        cell = {"name": name, "ipc": ipc, "seed": seed, **info, **ev, "set": _shown(set_path),
                "machine": machine(), "load_before": before, "load_after": load(),
                "settings": s.settings, "generator": s.gen_info}
        atomic_json(cell, path)
        acc = ev["summary"].get("accuracy_mean")
        print(f"{name}: {info.get('iterations_done', 0)} iterations, held-out DM loss "
              f"{info['held_out_dm_loss']:.3f}, accuracy {acc} %", flush=True)
    if s is not None:  # a check this run can make for free: 0 iterations of the noise loop is the plain set
        zero = noise_refine.optimise(s.generator, s.request, s.step(labels), s.to_images, 0, 1.0, 0.5, "dm")
        print(f"noise refine at 0 iterations equals the plain set: {torch.equal(zero.images, images)}")


def report() -> None:
    rows = []
    for path in sorted(RESULTS.glob("cost-ipc*.json")):
        c = json.loads(path.read_text())
        m = c["machine"]
        by = " / ".join(f"{float(m):.3f}" for m in c["noise_median_by_threads"].values())
        rows.append(f"| {c['ipc']} | {c['pixel_median']:.3f} | {by} | {c['noise_threads']} | "
                    f"{c['ratio_median']:.1f}x | "
                    f"{c['final_chain_seconds']:.2f} | {c['sample_seconds']:.2f} | {c['load_before'][0]} / "
                    f"{c['load_after'][0]} |")
    if rows:
        print(f"Cost of one iteration ({m['cpu']}, avx512_bf16 {'yes' if m['avx512_bf16'] else 'no'}, "
              f"{m['torch_threads']} torch threads), median of {c['repeats']} alternated:\n")
        threads = " / ".join(c["noise_median_by_threads"])
        print(f"| IPC | pixel-side s/it | noise-side s/it at {threads} threads | faster | ratio | final chain s | "
              "plain sampling s | load 1-min before / after |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    rows = []
    def order(path: Path) -> tuple:
        c = json.loads(path.read_text())
        return (c["ipc"], c.get("budget_seconds", 0), -c.get("lr", 9), c.get("side", ""))

    for path in sorted(RESULTS.glob("probe-*.json"), key=order):
        c = json.loads(path.read_text())
        sm = c["summary"]
        accs = ", ".join(f"{a:.2f}" for a in sm["accuracies"])
        rows.append(f"| {c['name']} | {c.get('lr', '-')} | {c.get('budget_seconds', 0):g} | "
                    f"{c.get('iterations_done', 0)} | "
                    f"{c['held_out_dm_loss']:.3f} | {c['moved_from_plain']:.3f} | {sm['accuracy_mean']:.2f} "
                    f"± {sm['accuracy_std']:.2f} ({accs}) | {c['load_before'][0]} |")
    if rows:
        print("\nProbe, method seed 0, one seed (a probe, no claim); evaluation "
              f"`{' '.join(EVAL)}`:\n")
        print("| cell | lr | T s | iterations | held-out DM loss | mean abs change | accuracy % | load 1-min |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    c.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("probe")
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 30])
    p.add_argument("--lrs", type=float, nargs="+", default=[1.0],
                   help="SGD lrs of both loops (1.0 = DM's own lr_img; 0.1 = a tenth, see the module docstring)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ipc", type=int, default=1)
    sub.add_parser("report")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "cost":
        cost(args.ipcs, args.repeats)
    elif args.what == "probe":
        probe(args.budgets, args.lrs, args.seed, args.ipc)
    report()


if __name__ == "__main__":
    main()
