"""Evaluation throughput: the `loop` and `fast` implementations of the dsa protocol, side by side.

Run by hand (it is not a test), serialised with other heavy jobs on a shared machine:

    flock /tmp/ddbench-cpu.lock python benchmarks/bench_eval.py                 # IPC 1/10/50, N=5
    flock /tmp/ddbench-cpu.lock python benchmarks/bench_eval.py --profile       # where the time goes
    flock /tmp/ddbench-cpu.lock python benchmarks/bench_eval.py --equivalence 10 --epochs 10:30
    python benchmarks/bench_eval.py --device cuda --epochs 1:300,10:300,50:100 --test-images 0   # on a GPU

A long equivalence run can be split (each part writes --json; --merge pools them and runs the test):

    python benchmarks/bench_eval.py --equivalence 10 --epochs 1000 --test-images 0 --equiv-impls fast --json f.json
    python benchmarks/bench_eval.py --equivalence 10 --epochs 1000 --test-images 0 --equiv-impls loop \
        --loop-procs 8 --loop-threads 2 --loop-nets 2-9 --json l.json      # loop networks 2..9, 8 processes
    python benchmarks/bench_eval.py --merge f.json,l.json

On Fashion-MNIST random-real sets (IPC 1, 10, 50; N networks; a fixed epoch count per IPC), in one process,
alternating loop and fast runs, it prints for each run: wall and CPU seconds, training images x epochs per
second, peak resident memory during the run (VmHWM after resetting it through /proc/self/clear_refs), and
the achieved GFLOP/s (ConvNet forward+backward FLOPs of training plus forward FLOPs of testing, counted
from the layer shapes) against this machine's measured peak (a 2048x2048 fp32 matmul timed at the start and
end of the same run). Then the speed ratio loop/fast per IPC.

`--test-images K` tests on the first K real test images to keep the benchmark short (0 = all 10,000, what
the protocol does); it is printed with the results. `--equivalence M` trains M networks per implementation
on one IPC 10 set and reports a Welch t-test on their test accuracies.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ddbench.api import ImageDataset, RunContext, SyntheticSet
from ddbench.plugins import load_plugins


# ----------------------------------------------------------------------------------------------- data
def load_fashion_mnist(registry) -> ImageDataset:
    try:
        return registry.get("datasets", "fashion-mnist").load(None, False)
    except Exception as exc:  # noqa: BLE001 - fall back to reading the Debian package's IDX files
        print(f"# datasets plugin unavailable ({exc}); reading /usr/share/datasets/fashion-mnist", file=sys.stderr)
    import gzip

    import numpy as np

    root = Path("/usr/share/datasets/fashion-mnist")

    def idx(name: str) -> np.ndarray:
        raw = gzip.open(root / name).read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)

    mean, std = 0.2861, 0.3530  # DatasetCondensation utils.py get_dataset

    def norm(a):
        return ((torch.from_numpy(a.copy()).float() / 255 - mean) / std).unsqueeze(1)

    return ImageDataset("fashion-mnist", norm(idx("train-images-idx3-ubyte.gz")),
                        torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype("int64")),
                        norm(idx("t10k-images-idx3-ubyte.gz")), torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype("int64")),
                        10, [str(i) for i in range(10)], (mean,), (std,))


def random_real(ds: ImageDataset, ipc: int, seed: int = 0) -> SyntheticSet:
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(ds.num_classes):
        pool = ds.indices_of_class(c)
        idx.append(pool[torch.randperm(len(pool), generator=g)[:ipc]])
    idx = torch.cat(idx)
    return SyntheticSet(ds.train_x[idx].clone(), ds.train_y[idx].clone())


EQUIV_SEED = 1000  # run seed of the --equivalence networks, in every part of a split run


# ----------------------------------------------------------------------------------------------- measures
def matmul_peak(n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """GFLOP/s of a large fp32 matmul (on CUDA with torch's default precision settings, i.e. no TF32 matmul)."""
    if device != "cpu":
        n = max(n, 8192)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best / 1e9


def sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def conv_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per image of Conv2d and Linear layers (2 per multiply-add).

    Backward = 2x forward (input and weight gradients), except the first layer: images need no gradient.
    """
    fwd: list[float] = []

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            fwd.append(2.0 * out.numel() * k / x.shape[0])
        elif isinstance(mod, torch.nn.Linear):
            fwd.append(2.0 * out.numel() * mod.in_features / x.shape[0])

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    f = sum(fwd)
    return f, 3 * f - fwd[0]


def rss_reset() -> int:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    return _status_kb("VmRSS")


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def make_ctx(ds: ImageDataset, registry, seed: int, device: str = "cpu") -> RunContext:
    return RunContext(dataset=ds, ipc=0, seed=seed, device=torch.device(device), params={}, model="convnet",
                      registry=registry, work_dir=Path("."), cache_dir=Path("."), progress=False, log=lambda m: None)


def run_once(ctx, syn, impl, epochs, n_models, extra) -> dict:
    """One evaluation; peak memory is host RSS above the start on CPU, peak allocated GPU memory on CUDA."""
    dev = ctx.device.type
    base = rss_reset()
    if dev == "cuda":
        sync(dev)
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    t, c = time.perf_counter(), time.process_time()
    res = ctx.evaluate(syn, "fast", impl=impl, epochs=epochs, n_models=n_models, **extra)
    sync(dev)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = (_status_kb("VmHWM") - base) / 1024
    if dev == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    return {"impl": impl, "wall": wall, "cpu": cpu, "peak_mb": peak,
            "rss_before_mb": base / 1024, "acc": res.accuracies, "details": res.details}


# ----------------------------------------------------------------------------------------------- main
def net_range(text: str) -> range:
    """--loop-nets A-B, e.g. 2-9 (inclusive)."""
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a network range; give FIRST-LAST, e.g. 2-9") from None
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"{text!r} is not a network range; need 0 <= FIRST <= LAST")
    return range(lo, hi + 1)


def parse_epochs(text: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in (p.split(":") for p in text.split(","))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipc", default="1,10,50")
    ap.add_argument("--epochs", default="1:40,10:10,50:3", help="IPC:epochs pairs (E epochs = E+1 passes)")
    ap.add_argument("--n-models", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1, help="loop/fast pairs per IPC (order alternates)")
    ap.add_argument("--test-images", type=int, default=1000, help="0 = the whole test set")
    ap.add_argument("--fast-set", default="", help="extra fast settings, e.g. parallel=stacked,max_parallel=2")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU run of the issue; peak = GPU fp32 matmul)")
    ap.add_argument("--loop-procs", type=int, default=0,
                    help="--equivalence: run the loop half's networks in this many single-thread processes "
                         "(the loop's per-network code; for many-core machines, where one 1-thread process per "
                         "network uses the cores the fast impl uses)")
    ap.add_argument("--loop-threads", type=int, default=1, help="--loop-procs: intra-op threads per process")
    ap.add_argument("--loop-nets", type=net_range, default=None,
                    help="--loop-procs: only these networks, e.g. 0-2 (split a long run)")
    ap.add_argument("--merge", default="", help="comma-separated --json files of --equivalence runs: pool them, run the test")
    ap.add_argument("--only-net", default="", help=argparse.SUPPRESS)  # internal: SEED:I:EPOCHS for --loop-procs
    ap.add_argument("--profile", action="store_true", help="profile one short run of each impl at the first IPC")
    ap.add_argument("--equivalence", type=int, default=0, help="networks per impl for the equivalence test")
    ap.add_argument("--equiv-impls", default="loop,fast", help="impls to run in --equivalence (the test needs both)")
    ap.add_argument("--json", default="", help="write every run's record to this file")
    ap.add_argument("--memory", action="store_true",
                    help="peak RSS of one evaluation (1 pass) per impl and IPC, each in a fresh subprocess")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: IMPL:IPC for --memory
    args = ap.parse_args(argv)
    if args.device not in ("cpu", "cuda"):
        ap.error(f"--device {args.device!r} is not allowed; choose cpu or cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here")
    for f in filter(None, args.merge.split(",")):
        if not Path(f).is_file():
            ap.error(f"--merge: {f} is not a file; give the --json files of --equivalence runs")
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {}
    for kv in filter(None, args.fast_set.split(",")):
        k, v = kv.split("=", 1)
        extra[k] = v

    if args.memory:
        memory(args)
        return
    if args.merge:
        merged: dict[str, dict[int, float]] = {}
        for f in args.merge.split(","):
            for impl, accs in json.loads(Path(f).read_text())["accuracies"].items():
                items = accs.items() if isinstance(accs, dict) else enumerate(accs)
                merged.setdefault(impl, {}).update({int(i): a for i, a in items})
        welch({k: [v[i] for i in sorted(v)] for k, v in merged.items()})
        return
    registry = load_plugins()
    ds = load_fashion_mnist(registry)
    if args.test_images:
        ds = replace(ds, test_x=ds.test_x[: args.test_images], test_y=ds.test_y[: args.test_images])
    ctx = make_ctx(ds, registry, seed=0, device=args.device)
    if args.only_net:
        only_net(ctx, ds, args)
        return
    if args.one:
        impl, ipc = args.one.split(":")
        rec = run_once(ctx, random_real(ds, int(ipc)), impl, 0, args.n_models, extra if impl == "fast" else {})
        print(json.dumps({"impl": impl, "ipc": int(ipc), "peak_mb": rec["peak_mb"], "rss_before_mb": rec["rss_before_mb"]}))
        return
    net = ctx.build_model()
    fwd, train = conv_flops(net, ds.test_x[:2])
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}; test images {len(ds.test_x)}; N={args.n_models}; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device != "cpu" else ""))
    print(f"# ConvNet FLOPs per image: forward {fwd / 1e6:.1f} M, train step (fwd+bwd) {train / 1e6:.1f} M")
    peak0 = matmul_peak(device=args.device)
    print(f"# fp32 matmul peak ({'2048^3, ' + str(torch.get_num_threads()) + ' threads' if args.device == 'cpu' else '8192^3, CUDA'}): "
          f"{peak0:.1f} GFLOP/s", flush=True)

    if args.equivalence:
        equivalence(ctx, ds, args, extra)
        return
    if args.profile:
        profile(ctx, ds, args, extra)
        return

    epochs_of = parse_epochs(args.epochs)
    warm = random_real(ds, 1)
    for impl in ("loop", "fast"):  # first calls build oneDNN primitives and thread pools: keep them out of the timings
        run_once(ctx, warm, impl, 0, args.n_models, extra if impl == "fast" else {})
    records = []
    for ipc in [int(i) for i in args.ipc.split(",")]:
        syn = random_real(ds, ipc)
        epochs = epochs_of.get(ipc, 10)
        flops = (epochs + 1) * len(syn.images) * train * args.n_models + len(ds.test_x) * fwd * args.n_models
        for r in range(args.repeats):
            order = ("loop", "fast") if r % 2 == 0 else ("fast", "loop")
            for impl in order:
                rec = run_once(ctx, syn, impl, epochs, args.n_models, extra if impl == "fast" else {})
                rec.update(ipc=ipc, epochs=epochs, gflops=flops / rec["wall"] / 1e9, load=os.getloadavg()[0])
                rec["img_epochs_per_s"] = (epochs + 1) * len(syn.images) * args.n_models / rec["wall"]
                records.append(rec)
                print(f"IPC {ipc:3d} {impl:4s} ({rec['details'].get('parallel', 'loop')}): wall {rec['wall']:7.1f} s  "
                      f"cpu {rec['cpu']:7.1f} s  {rec['img_epochs_per_s']:8.0f} img*ep/s  peak +{rec['peak_mb']:6.0f} MB  "
                      f"{rec['gflops']:6.1f} GFLOP/s  acc {sum(rec['acc']) / len(rec['acc']):5.1f}  load {rec['load']:.1f}",
                      flush=True)
    peak1 = matmul_peak(device=args.device)
    peak = max(peak0, peak1)
    print(f"# fp32 matmul peak at the end: {peak1:.1f} GFLOP/s; using {peak:.1f}")
    print("\n| IPC | epochs | loop s | fast s | speed-up | loop GFLOP/s (% peak) | fast GFLOP/s (% peak) | loop peak MB | fast peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ipc in sorted({r["ipc"] for r in records}):
        rs = [r for r in records if r["ipc"] == ipc]
        lo = [r for r in rs if r["impl"] == "loop"]
        fa = [r for r in rs if r["impl"] == "fast"]
        lw = sum(r["wall"] for r in lo) / len(lo)
        fw = sum(r["wall"] for r in fa) / len(fa)
        lg = sum(r["gflops"] for r in lo) / len(lo)
        fg = sum(r["gflops"] for r in fa) / len(fa)
        print(f"| {ipc} | {rs[0]['epochs']} | {lw:.1f} | {fw:.1f} | {lw / fw:.2f}x | {lg:.1f} ({100 * lg / peak:.0f}%) | "
              f"{fg:.1f} ({100 * fg / peak:.0f}%) | {max(r['peak_mb'] for r in lo):.0f} | {max(r['peak_mb'] for r in fa):.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "records": records}, indent=1, default=str))


def memory(args) -> None:
    """Peak RSS above the loaded-data baseline, one fresh process per (impl, IPC): allocator caches of an
    earlier run in the same process would hide a later run's peak."""
    import subprocess

    print(f"# peak memory of one evaluation (1 pass + test on {args.test_images or 10000} images), N={args.n_models}")
    for ipc in [int(i) for i in args.ipc.split(",")]:
        for impl in ("loop", "fast"):
            cmd = [sys.executable, __file__, "--one", f"{impl}:{ipc}", "--n-models", str(args.n_models),
                   "--test-images", str(args.test_images)] + (["--fast-set", args.fast_set] if args.fast_set else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rec = json.loads(out)
            print(f"IPC {ipc:3d} {impl:4s}: peak +{rec['peak_mb']:.0f} MB above {rec['rss_before_mb']:.0f} MB (data loaded)", flush=True)


def profile(ctx, ds, args, extra) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    ipc = int(args.ipc.split(",")[0])
    syn = random_real(ds, ipc)
    threads = torch.get_num_threads()
    for impl in ("loop", "fast"):
        # The profiler only sees the main thread: profile the fast impl's per-worker work there, one thread.
        kw = {**extra, "max_parallel": 1} if impl == "fast" else {}
        torch.set_num_threads(1 if impl == "fast" else threads)
        run_once(ctx, syn, impl, 0, args.n_models, kw)  # warm-up
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            run_once(ctx, syn, impl, 1, args.n_models, kw)
            wall = time.perf_counter() - t
        torch.set_num_threads(threads)
        if impl == "fast":
            print("\n(fast: one worker's code path, run in the main thread on 1 core; the real run has one such worker per core)")
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows)
        print(f"\n## {impl}: IPC {ipc}, 2 passes + test, wall {wall:.2f} s, profiled op time {total / 1e6:.2f} s (summed over threads)")
        groups: dict[str, float] = {}
        for e in rows:
            n = e.key
            g = ("conv forward" if "mkldnn_convolution" in n or n == "aten::thnn_conv2d" else
                 "conv backward" if "convolution_backward" in n else
                 "group norm" if "group_norm" in n else
                 "avg pool" if "avg_pool" in n else
                 "relu" if "relu" in n or "threshold" in n or "clamp_min" in n else
                 "DSA (grid_sample, gather, ...)" if any(k in n for k in ("grid_sampler", "affine_grid", "gather", "where", "flip")) else
                 "matmul (classifier)" if n in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm") else
                 "optimizer / elementwise / other")
            groups[g] = groups.get(g, 0.0) + e.self_cpu_time_total
        for g, v in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {g:34s} {100 * v / total:5.1f}%")
        print("  top ops: " + ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in rows[:6]))


def equivalence(ctx, ds, args, extra) -> None:
    epochs = parse_epochs(args.epochs).get(10, 10) if ":" in args.epochs else int(args.epochs)
    syn = random_real(ds, 10)
    out = {}
    for impl in args.equiv_impls.split(","):
        # the same seed for both: the two impls see the same initialisations and data orders
        ctx.seed = EQUIV_SEED
        t = time.perf_counter()
        if impl == "loop" and args.loop_procs:
            out[impl] = loop_in_processes(args, epochs)
        else:
            out[impl] = dict(enumerate(ctx.evaluate(syn, "fast", impl=impl, epochs=epochs, n_models=args.equivalence,
                                                    **(extra if impl == "fast" else {})).accuracies))
        accs = list(out[impl].values())
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
        print(f"{impl}: {len(accs)} networks, {epochs} epochs, {time.perf_counter() - t:.0f} s, "
              f"mean {mean:.2f} std {std:.2f}: {[round(a, 2) for a in accs]}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"epochs": epochs, "device": args.device, "accuracies": out}, indent=1))
    if set(out) == {"loop", "fast"}:
        welch({k: list(v.values()) for k, v in out.items()})


def welch(out: dict[str, list[float]]) -> None:
    from scipy import stats

    t, p = stats.ttest_ind(out["loop"], out["fast"], equal_var=False)
    diff = sum(out["fast"]) / len(out["fast"]) - sum(out["loop"]) / len(out["loop"])
    print(f"loop ({len(out['loop'])} networks) vs fast ({len(out['fast'])}): Welch t = {t:.3f}, p = {p:.3f}; "
          f"mean difference fast - loop = {diff:+.2f} points (pass: p > 0.05 and |diff| < 1: {p > 0.05 and abs(diff) < 1})")


def loop_in_processes(args, epochs: int) -> dict[int, float]:
    """The loop half of --equivalence as one process per network (network i: seed (EQUIV_SEED, i))."""
    import subprocess

    procs = []
    pending = list(args.loop_nets or range(args.equivalence))
    wanted = list(pending)
    results: dict[int, float] = {}
    while pending or procs:
        while pending and len(procs) < args.loop_procs:
            i = pending.pop(0)
            cmd = [sys.executable, __file__, "--only-net", f"{EQUIV_SEED}:{i}:{epochs}", "--threads", str(args.loop_threads),
                   "--test-images", str(args.test_images), "--device", args.device]
            procs.append((i, subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)))
        i, p = procs.pop(0)
        out = p.communicate()[0].strip().splitlines()[-1]
        if p.returncode:
            raise SystemExit(f"loop network {i} failed (exit {p.returncode})")
        results[i] = json.loads(out)["acc"]
        print(f"  loop network {i}: {results[i]:.2f}", flush=True)
    return {i: results[i] for i in wanted}


def only_net(ctx, ds, args) -> None:
    """Network I of an equivalence run, trained and tested by the loop implementation's per-network code."""
    from ddbench.default_plugins import dsa_protocols as ev
    from ddbench.api import resolve_params

    seed, i, epochs = (int(v) for v in args.only_net.split(":"))
    ctx.seed = seed
    settings = resolve_params("protocol fast", ctx.registry.get("protocols", "fast").params, {"impl": "loop", "epochs": epochs})
    syn = random_real(ds, 10)
    acc, _ = ev.train_and_test(ctx, i, ev.prepare(syn, ctx, settings), settings, ev._lr(syn, settings))
    print(json.dumps({"i": i, "acc": acc}))


if __name__ == "__main__":
    main()
