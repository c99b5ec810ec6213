"""Evaluation throughput: the `loop` reference, the `fast` implementation in fp32 and under bf16, side by side.

Run by hand (it is not a test), serialised with other heavy jobs on a shared machine:

    flock /tmp/ddbench-cpu.lock python benchmarks/bench_eval.py                 # IPC 1/10/50, N=5: loop, fast, bf16
    flock /tmp/ddbench-cpu.lock python benchmarks/bench_eval.py --variants fast,bf16 --repeats 2
    flock /tmp/ddbench-cpu.lock python benchmarks/bench_eval.py --profile       # where the time goes
    python benchmarks/bench_eval.py --device cuda --epochs 1:300,10:300,50:100 --test-images 0 --variants loop,fast

The equivalence test of a change of arithmetic (docs/evaluation.md#precision): M networks per variant at the
standard protocol's 1000 epochs on the whole test set, each network its own process (--procs at a time), saved
to --json as it finishes, so the run resumes after a stop; --merge pools JSON files and runs the test:

    python benchmarks/bench_eval.py --equivalence 10 --equiv-ipc 10 --epochs 1000 --test-images 0 \
        --equiv-impls bf16 --procs 2 --json benchmarks/results/equivalence-bf16-ipc10.json
    python benchmarks/bench_eval.py --merge benchmarks/results/equivalence-cpu-loop-a.json,...,equivalence-bf16-ipc10.json

On Fashion-MNIST random-real sets (IPC 1, 10, 50; N networks; a fixed epoch count per IPC), in one process,
alternating the variants (order reversed every other repeat), it prints for each run: wall and CPU seconds,
training images x epochs per second, peak resident memory during the run (VmHWM after resetting it through
/proc/self/clear_refs), and the achieved GFLOP/s (ConvNet forward+backward FLOPs of training plus forward FLOPs
of testing, counted from the layer shapes) against this machine's measured fp32 and bf16 peaks (a 2048x2048
matmul of each type timed at the start and end of the same run). Then the speed-ups per IPC.

`--test-images K` tests on the first K real test images to keep the benchmark short (0 = all 10,000, what
the protocol does); it is printed with the results.
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
from ddbench.default_plugins.dsa_protocols import native_bf16
from ddbench.host.plugins import load_plugins


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
def matmul_peak(n: int = 2048, reps: int = 10, device: str = "cpu", dtype=torch.float32) -> float:
    """GFLOP/s of a large matmul of `dtype` (on CUDA with torch's default precision settings, i.e. no TF32)."""
    if device != "cpu":
        n = max(n, 8192)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
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


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


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
    ap.add_argument("--variants", default="loop,fast,bf16",
                    help="what to time: loop (fp32 reference), fast (fast impl, fp32), bf16 (fast impl, bf16 autocast)")
    ap.add_argument("--fast-set", default="", help="extra fast settings, e.g. parallel=stacked,max_parallel=2")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU run of the issue; peak = GPU fp32 matmul)")
    ap.add_argument("--procs", type=int, default=0,
                    help="--equivalence: run each network in its own process, this many at a time (resumable: "
                         "each network is saved to --json as it finishes)")
    ap.add_argument("--threads-per-proc", type=int, default=1, help="--procs: intra-op threads per process")
    ap.add_argument("--nets", type=net_range, default=None,
                    help="--procs: only these networks, e.g. 0-2 (split a long run)")
    ap.add_argument("--equiv-ipc", type=int, default=10, help="--equivalence: IPC of the random-real set")
    ap.add_argument("--merge", default="", help="comma-separated --json files of --equivalence runs: pool them, run the test")
    ap.add_argument("--only-net", default="", help=argparse.SUPPRESS)  # internal: SEED:I:EPOCHS for --loop-procs
    ap.add_argument("--profile", action="store_true", help="profile one short run of each impl at the first IPC")
    ap.add_argument("--equivalence", type=int, default=0, help="networks per impl for the equivalence test")
    ap.add_argument("--equiv-impls", default="loop,bf16", help="variants to run in --equivalence (see --variants); "
                    "the test compares the first (the reference) with each other")
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
        merged: dict[str, dict[str, float]] = {}
        for f in args.merge.split(","):
            for impl, accs in json.loads(Path(f).read_text())["accuracies"].items():
                items = accs.items() if isinstance(accs, dict) else enumerate(accs)
                merged.setdefault(impl, {}).update({str(i): a for i, a in items})
        welch(merged)
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
    if args.equivalence:  # accuracies only: no peaks to time
        equivalence(ctx, ds, args, extra)
        return
    net = ctx.build_model()
    fwd, train = conv_flops(net, ds.test_x[:2])
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}; test images {len(ds.test_x)}; N={args.n_models}; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device != "cpu" else ""))
    print(f"# ConvNet FLOPs per image: forward {fwd / 1e6:.1f} M, train step (fwd+bwd) {train / 1e6:.1f} M")
    peak0 = matmul_peak(device=args.device)
    bf0 = matmul_peak(device=args.device, dtype=torch.bfloat16) if args.device == "cpu" else 0.0
    print(f"# CPU {cpu_model()}; avx512_bf16 {'yes' if native_bf16() else 'no'}")
    print(f"# matmul peaks ({'2048^3, ' + str(torch.get_num_threads()) + ' threads' if args.device == 'cpu' else '8192^3, CUDA'}): "
          f"fp32 {peak0:.1f}, bf16 {bf0:.1f} GFLOP/s", flush=True)

    if args.profile:
        profile(ctx, ds, args, extra)
        return

    epochs_of = parse_epochs(args.epochs)
    variants = parse_variants(args.variants, extra)
    warm = random_real(ds, 1)
    for name, (impl, kw) in variants.items():  # first calls build oneDNN primitives and thread pools: not timed
        run_once(ctx, warm, impl, 0, args.n_models, kw)
    records = []
    for ipc in [int(i) for i in args.ipc.split(",")]:
        syn = random_real(ds, ipc)
        epochs = epochs_of.get(ipc, 10)
        flops = (epochs + 1) * len(syn.images) * train * args.n_models + len(ds.test_x) * fwd * args.n_models
        for r in range(args.repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                impl, kw = variants[name]
                rec = run_once(ctx, syn, impl, epochs, args.n_models, kw)
                rec.update(variant=name, ipc=ipc, epochs=epochs, gflops=flops / rec["wall"] / 1e9, load=os.getloadavg()[0])
                rec["img_epochs_per_s"] = (epochs + 1) * len(syn.images) * args.n_models / rec["wall"]
                records.append(rec)
                print(f"IPC {ipc:3d} {name:5s} ({rec['details'].get('parallel', 'loop')}, {rec['details'].get('precision')}): "
                      f"wall {rec['wall']:7.1f} s  cpu {rec['cpu']:7.1f} s  {rec['img_epochs_per_s']:8.0f} img*ep/s  "
                      f"peak +{rec['peak_mb']:6.0f} MB  {rec['gflops']:6.1f} GFLOP/s  acc {sum(rec['acc']) / len(rec['acc']):5.1f}  "
                      f"load {rec['load']:.1f}", flush=True)
    peak1 = matmul_peak(device=args.device)
    bf1 = matmul_peak(device=args.device, dtype=torch.bfloat16) if args.device == "cpu" else 0.0
    peak, bf_peak = max(peak0, peak1), max(bf0, bf1)
    print(f"# matmul peaks at the end: fp32 {peak1:.1f}, bf16 {bf1:.1f} GFLOP/s; using fp32 {peak:.1f}, bf16 {bf_peak:.1f}")
    print_table(records, list(variants), peak, bf_peak)
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "bf16_peak_gflops": bf_peak, "records": records},
                                              indent=1, default=str))


def parse_variants(text: str, extra: dict) -> dict[str, tuple[str, dict]]:
    """--variants: loop (the fp32 reference), fast (the fast impl in fp32), bf16 (the fast impl under bf16
    autocast); `--fast-set` adds its settings to both fast variants."""
    known = {"loop": ("loop", {"precision": "fp32"}), "fast": ("fast", {**extra, "precision": "fp32"}),
             "bf16": ("fast", {**extra, "precision": "bf16"})}
    out = {}
    for name in filter(None, text.split(",")):
        if name not in known:
            raise SystemExit(f"--variants: {name!r} is not a variant; choose from {', '.join(known)}")
        out[name] = known[name]
    return out


def print_table(records: list[dict], names: list[str], peak: float, bf_peak: float) -> None:
    """Per IPC: each variant's mean wall time, its GFLOP/s as a share of the fp32 and bf16 matmul peaks, and the
    speed-ups against the loop and against today's fp32 fast impl (where those ran)."""
    print("\n| IPC | epochs | variant | wall s | GFLOP/s | % fp32 peak | % bf16 peak | vs loop | vs fast | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ipc in sorted({r["ipc"] for r in records}):
        rs = [r for r in records if r["ipc"] == ipc]
        wall = {n: sum(r["wall"] for r in rs if r["variant"] == n) / max(1, sum(r["variant"] == n for r in rs)) for n in names}
        for n in names:
            mine = [r for r in rs if r["variant"] == n]
            g = sum(r["gflops"] for r in mine) / len(mine)
            vs = [f"{wall[b] / wall[n]:.2f}x" if b in wall and b != n else "-" for b in ("loop", "fast")]
            bf = f"{100 * g / bf_peak:.0f}%" if bf_peak else "-"
            print(f"| {ipc} | {rs[0]['epochs']} | {n} | {wall[n]:.1f} | {g:.1f} | {100 * g / peak:.0f}% | {bf} | "
                  f"{vs[0]} | {vs[1]} | {max(r['peak_mb'] for r in mine):.0f} |")


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
    """M networks per variant on one random-real set of IPC `--equiv-ipc`, network i seeded (EQUIV_SEED, i) in
    every variant (same initialisation, data order and DSA draws: the variants differ only in arithmetic).

    With --procs P each network is its own single-thread process, P at a time, and each finished network is
    written to --json at once: a long run resumes where it stopped (networks already in the file are skipped)."""
    epochs = parse_epochs(args.epochs).get(args.equiv_ipc, 10) if ":" in args.epochs else int(args.epochs)
    variants = parse_variants(args.equiv_impls, extra)
    path = Path(args.json) if args.json else None
    state = {"epochs": epochs, "ipc": args.equiv_ipc, "device": args.device, "accuracies": {}}
    if path and path.is_file():
        state = json.loads(path.read_text())
        if (state.get("epochs"), state.get("ipc", 10)) != (epochs, args.equiv_ipc):
            raise SystemExit(f"{path} holds epochs={state.get('epochs')} ipc={state.get('ipc', 10)}; this run asks "
                             f"epochs={epochs} ipc={args.equiv_ipc}: give another --json")
    out = state["accuracies"]
    for name, (impl, kw) in variants.items():
        ctx.seed = EQUIV_SEED
        t = time.perf_counter()
        done = out.setdefault(name, {})
        if args.procs:
            networks_in_processes(args, name, epochs, done, lambda: save(path, state))
        else:
            syn = random_real(ds, args.equiv_ipc)
            accs = ctx.evaluate(syn, "fast", impl=impl, epochs=epochs, n_models=args.equivalence, **kw).accuracies
            done.update({str(i): a for i, a in enumerate(accs)})
            save(path, state)
        accs = [done[k] for k in sorted(done, key=int)]
        print(f"{name}: {len(accs)} networks, {epochs} epochs, IPC {args.equiv_ipc}, {time.perf_counter() - t:.0f} s, "
              f"mean {sum(accs) / len(accs):.2f}: {[round(a, 2) for a in accs]}", flush=True)
    if len(out) >= 2:
        welch(out)


def save(path: Path | None, state: dict) -> None:
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


def welch(out: dict[str, dict]) -> None:
    """The reference (`loop`, fp32) against each other variant: Welch's t-test over networks, the mean
    difference, and the paired difference over the networks both ran (same seeds: the same networks)."""
    from scipy import stats

    ref = "loop" if "loop" in out else next(iter(out))
    for name in (n for n in out if n != ref):
        a, b = out[ref], out[name]
        xa, xb = list(a.values()), list(b.values())
        t, p = stats.ttest_ind(xa, xb, equal_var=False)
        diff = sum(xb) / len(xb) - sum(xa) / len(xa)
        both = sorted(set(a) & set(b), key=int)
        d = [b[i] - a[i] for i in both]
        paired = ""
        if len(d) >= 2:
            md = sum(d) / len(d)
            sd = (sum((v - md) ** 2 for v in d) / (len(d) - 1)) ** 0.5
            paired = f"; paired over {len(d)} same-seed networks: {md:+.2f} ± {sd:.2f}"
        print(f"{ref} ({len(xa)} networks, mean {sum(xa) / len(xa):.2f}) vs {name} ({len(xb)}, mean {sum(xb) / len(xb):.2f}): "
              f"Welch t = {t:.3f}, p = {p:.3f}; mean difference {name} - {ref} = {diff:+.2f} points{paired} "
              f"(pass: |diff| <= 0.5: {abs(diff) <= 0.5})")


def networks_in_processes(args, variant: str, epochs: int, done: dict, save_state) -> None:
    """Networks of --equivalence, one single-thread process each, --procs at a time; each result is saved as
    soon as it comes (network i: seed (EQUIV_SEED, i))."""
    import subprocess

    wanted = [i for i in (args.nets or range(args.equivalence)) if str(i) not in done]
    procs = []
    while wanted or procs:
        while wanted and len(procs) < args.procs:
            i = wanted.pop(0)
            cmd = [sys.executable, __file__, "--only-net", f"{EQUIV_SEED}:{i}:{epochs}:{args.equiv_ipc}:{variant}",
                   "--threads", str(args.threads_per_proc), "--test-images", str(args.test_images), "--device", args.device]
            procs.append((i, time.perf_counter(), subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)))
        i, t0, p = procs.pop(0)
        out = p.communicate()[0].strip().splitlines()
        if p.returncode or not out:
            raise SystemExit(f"{variant} network {i} failed (exit {p.returncode})")
        done[str(i)] = json.loads(out[-1])["acc"]
        save_state()
        print(f"  {variant} network {i}: {done[str(i)]:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)


def only_net(ctx, ds, args) -> None:
    """Network I of an equivalence run, trained and tested by the per-network code every implementation runs
    (`loop`: whole batches in fp32; `fast`/`bf16`: the fast impl's micro-batches, in fp32 / under bf16)."""
    from ddbench.default_plugins import dsa_protocols as ev
    from ddbench.api import resolve_params

    seed, i, epochs, ipc, variant = args.only_net.split(":")
    ctx.seed = int(seed)
    impl, kw = parse_variants(variant, {})[variant]
    settings = resolve_params("protocol fast", ctx.registry.get("protocols", "fast").params,
                              {"impl": impl, "epochs": int(epochs), **kw})
    micro = settings["micro_batch"] if impl == "fast" else 0
    syn = random_real(ds, int(ipc))
    test_batch = min(settings["test_batch"], micro) if micro else settings["test_batch"]
    acc, _ = ev.train_and_test(ctx, int(i), ev.prepare(syn, ctx, settings), settings, ev._lr(syn, settings),
                               micro=micro, test_batch=test_batch)
    print(json.dumps({"i": int(i), "acc": acc}))


if __name__ == "__main__":
    main()
