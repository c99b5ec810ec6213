"""DM, MTT, DC and DSA speed against their reference scripts (issues 13, 27): iterations/s, peak memory, ratio.

Run by hand, under the shared CPU lock, on a quiet machine (docs/baselines.md#speed):

    flock /tmp/ddbench-cpu.lock .venv/bin/python benchmarks/bench_baseline_speed.py \
        --reference-dir /tmp/refs --json benchmarks/results/baseline-speed-cpu.json

Every measurement runs in its own subprocess (`--one KIND:ARG`) so that its peak memory is its own:
`ru_maxrss` of that process (peak resident set, KiB → MB, dataset loading included; the reference
scripts also hold the whole dataset). Intra-op threads are fixed with `--threads` (torch.set_num_threads
for ddbench; OMP_NUM_THREADS for the reference scripts, whose torch then uses that many). Timed iterations
exclude the first WARMUP (2) on both sides; the rate is 1 / median seconds per iteration.

What is timed, on Fashion-MNIST (ConvNet-3, DSA on, the reference defaults):
- `dm:IPC`: one DM iteration, batch_real 256 (ddbench: `dm._iteration`; reference: `main_DM.py`, one
  loop iteration without evaluation).
- `mtt:IPC`: one MTT distillation iteration, syn_steps 20, batch_syn = all synthetic images (ddbench:
  `mtt._trajectory_loss` + backward + steps; reference: `distill.py --load_all`, one loop iteration).
- `expert:N`: the second of two expert training epochs over the first N real images, batch 256
  (ddbench: `ExpertBuffer._train_expert`, `--experts` of them at once; reference: `buffer.py`'s
  `epoch("train", ...)` without its test pass), reported as epochs/s of the full 60,000-image epoch.

- `dc:IPC` / `dsa:IPC`: one DC / DSA gradient-matching iteration (a fresh network, get_loops(ipc) outer and
  inner loops), batch_real 256, batch_train 256 (ddbench: `gm.Step.iteration`; reference: `main.py --method
  DC|DSA`, one loop iteration without evaluation). `--gm-warmup` untimed first iterations (default 1: an
  IPC-10 iteration is about a minute here).

With `--reference-dir DIR` (patched copies made as docs/baselines.md#speed says) the reference runs in
the same invocation, so each ratio is from one run; without it the ratios use the figures stored in
`--reference-json` (measured once the same way), and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FULL_EPOCH = 60000  # Fashion-MNIST training images: an expert epoch of buffer.py
# untimed first iterations on both sides: the first ones pay one-off costs (allocator growth: glibc hands large
# blocks back to the OS until its mmap threshold adapts, so early iterations page-fault; primitive creation)
WARMUP = 2


# ------------------------------------------------------------------------------ reference copies (patched)
DC_COMMIT = "53f63a672eab9ade02aabe6432706ef56f317d64"   # VICO-UoE/DatasetCondensation, timed at this commit
MTT_COMMIT = "50dccea47ba48b9cfb3b9c59375d7da92e4e603b"  # GeorgeCazenavette/mtt-distillation
DC_FILES = ("main_DM.py", "main.py", "utils.py", "networks.py")
MTT_FILES = ("buffer.py", "distill.py", "utils.py", "networks.py", "reparam_module.py")


def sub(path, old, new, count=1):
    p = Path(path); s = p.read_text()
    n = s.count(old)
    if (count == "all" and n == 0) or (count != "all" and n != count):
        raise SystemExit(f"{path}: expected {count} of {old!r}, found {n}")
    p.write_text(s.replace(old, new))

def dc(d):
    d = Path(d)
    # today's torch: .view on non-contiguous activations fails -> .reshape
    sub(d / "networks.py", ".view(", ".reshape(", "all")
    # today's torch refuses `t[:] = t[0]` (overlapping in-place write): clone the row first
    s = (d / "utils.py").read_text()
    s2 = re.sub(r"(\w+)\[:\] = \1\[0\]", r"\1[:] = \1[0].clone()", s)
    assert s2 != s; (d / "utils.py").write_text(s2)
    m = d / "main_DM.py"
    # no evaluation (timing the distillation only), per-iteration wall-clock, thread count printed
    sub(m, "eval_it_pool = np.arange(0, args.Iteration+1, 2000).tolist() if args.eval_mode == 'S' or args.eval_mode == 'SS' else [args.Iteration]",
        "eval_it_pool = []")
    sub(m, "        for it in range(args.Iteration+1):\n",
        "        print('threads', torch.get_num_threads()); _t0 = time.perf_counter(); _times = []\n"
        "        for it in range(args.Iteration+1):\n            _ti = time.perf_counter()\n")
    sub(m, "            loss_avg += loss.item()\n",
        "            loss_avg += loss.item()\n            _times.append(time.perf_counter() - _ti)\n"
        "            print('TIMING it %d %.4f s' % (it, _times[-1]), flush=True)\n")
    # no result file (it would hold the last iteration's images only)
    sub(m, "                torch.save({'data'", "                pass  # torch.save({'data'")
    g = d / "main.py"  # DC / DSA: the same three patches
    sub(g, "eval_it_pool = np.arange(0, args.Iteration+1, 500).tolist() if args.eval_mode == 'S' or args.eval_mode == 'SS' else [args.Iteration]",
        "eval_it_pool = []")
    sub(g, "        for it in range(args.Iteration+1):\n",
        "        print('threads', torch.get_num_threads())\n"
        "        for it in range(args.Iteration+1):\n            _ti = time.perf_counter()\n")
    sub(g, "            loss_avg /= (num_classes*args.outer_loop)\n",
        "            loss_avg /= (num_classes*args.outer_loop)\n"
        "            print('TIMING it %d %.4f s' % (it, time.perf_counter() - _ti), flush=True)\n")
    sub(g, "                torch.save({'data'", "                pass  # torch.save({'data'")



FMNIST_BRANCH = """    if dataset == 'FashionMNIST':  # ddbench timing patch: DC's FashionMNIST branch (VICO-UoE utils.py)
        channel = 1
        im_size = (28, 28)
        num_classes = 10
        mean = [0.2861]
        std = [0.3530]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])
        dst_train = datasets.FashionMNIST(data_path, train=True, download=True, transform=transform)
        dst_test = datasets.FashionMNIST(data_path, train=False, download=True, transform=transform)
        class_names = dst_train.classes
        class_map = {x:x for x in range(num_classes)}

    elif dataset == 'CIFAR10':
"""

WANDB_STUB = '''"""ddbench timing stub: the scripts log to wandb; timing needs none of it."""
class _Cfg:
    _items = {}
config = _Cfg()
class _Run:
    name = "timing"
run = _Run()
def init(config=None, **kw):
    config_items = dict(vars(config)) if config is not None else {}
    globals()["config"]._items = config_items
def log(*a, **k): pass
def finish(): pass
def Histogram(*a, **k): return None
def Image(*a, **k): return None
'''


def mtt(d):
    d = Path(d)
    # today's torch refuses `t[:] = t[0]`; .view on non-contiguous activations fails
    s = (d / "utils.py").read_text()
    s2 = re.sub(r"(\w+)\[:\] = \1\[0\]", r"\1[:] = \1[0].clone()", s)
    assert s2 != s; (d / "utils.py").write_text(s2)
    sub(d / "networks.py", ".view(", ".reshape(", "all")
    sub(d / "utils.py", "    if dataset == 'CIFAR10':\n", FMNIST_BRANCH)
    # kornia is only used for --zca (off here); wandb only logs
    sub(d / "utils.py", "import kornia as K\n", "K = None  # ddbench timing patch: kornia only for --zca\n")
    (d / "wandb.py").write_text(WANDB_STUB)
    dist = d / "distill.py"
    sub(dist, "    eval_it_pool = np.arange(0, args.Iteration + 1, args.eval_it).tolist()\n", "    eval_it_pool = []\n")
    sub(dist, "    for it in range(0, args.Iteration+1):\n",
        "    print('threads', torch.get_num_threads())\n    for it in range(0, args.Iteration+1):\n        _ti = time.perf_counter()\n")
    sub(dist, "        for _ in student_params:\n            del _\n",
        "        for _ in student_params:\n            del _\n"
        "        print('TIMING it %d %.4f s' % (it, time.perf_counter() - _ti), flush=True)\n")
    sub(dist, "import os\n", "import os\nimport time\n")
    buf = d / "buffer.py"
    # train on the first --timing_images images (one epoch of all 60k is ~4 min here), time each train epoch
    sub(buf, "    images_all = torch.cat(images_all, dim=0).to(\"cpu\")\n    labels_all = torch.tensor(labels_all, dtype=torch.long, device=\"cpu\")\n",
        "    images_all = torch.cat(images_all, dim=0).to(\"cpu\")[:args.timing_images]\n"
        "    labels_all = torch.tensor(labels_all, dtype=torch.long, device=\"cpu\")[:args.timing_images]\n")
    sub(buf, "            train_loss, train_acc = epoch(\"train\"",
        "            print('threads', torch.get_num_threads()); _te = time.perf_counter()\n"
        "            train_loss, train_acc = epoch(\"train\"")
    sub(buf, "            test_loss, test_acc = epoch(\"test\"",
        "            print('TIMING epoch %d %.4f s %d images' % (e, time.perf_counter() - _te, len(labels_all)), flush=True)\n"
        "            continue  # ddbench timing patch: no test pass, no saving\n"
        "            test_loss, test_acc = epoch(\"test\"")
    sub(buf, "    parser.add_argument('--save_interval', type=int, default=10)\n",
        "    parser.add_argument('--save_interval', type=int, default=10)\n"
        "    parser.add_argument('--timing_images', type=int, default=60000)\n")
    sub(buf, "import os\n", "import os\nimport time\n")


def fake_buffer(out, epochs):
    """One expert trajectory for distill.py's timing: `epochs`+1 copies of a default-initialised ConvNet's
    parameters, perturbed (the values do not change the cost of an iteration)."""
    import torch
    sys.path.insert(0, str(Path(out).parents[2]))
    from utils import get_network
    net = get_network("ConvNet", 1, 10, (28, 28))
    traj = [[q.detach().clone() + 0.01 * e * torch.randn_like(q) for q in net.parameters()] for e in range(epochs + 1)]
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save([traj], Path(out) / "replay_buffer_0.pt")


def prepare_reference(out: Path, dc_src: Path, mtt_src: Path | None, fmnist: Path) -> None:
    """Patched copies of the reference scripts under `out` (dc/, mtt/, data/): never committed.

    dc_src / mtt_src: checkouts of the two repositories (at DC_COMMIT / MTT_COMMIT); fmnist: a folder with
    the four Fashion-MNIST IDX .gz files (torchvision's FashionMNIST then finds them unpacked, no download).
    """
    import gzip
    import shutil

    for name, src, files, patch in (("dc", dc_src, DC_FILES, dc), ("mtt", mtt_src, MTT_FILES, mtt)):
        if src is None:  # only DM / DC / DSA to time: no MTT checkout needed
            continue
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(src / f, d / f)
        patch(d)
    raw = out / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(fmnist.glob("*-ubyte.gz")):
        (raw / gz.name[:-3]).write_bytes(gzip.open(gz).read())
    if mtt_src is None:
        return
    data_link = out / "mtt" / "data"
    if not data_link.exists():
        data_link.symlink_to(out / "data")
    buffers = out / "mtt" / "buffers" / "FashionMNIST" / "ConvNet"
    subprocess.run([sys.executable, __file__, "--fake-buffer", str(buffers)], cwd=out / "mtt", check=True)


# ------------------------------------------------------------------------------------------- ddbench side
def _context(method: str, ipc: int, overrides: dict):
    import tempfile

    import torch

    from ddbench.api import RunContext, resolve_params
    from ddbench.host.plugins import load_plugins

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_eval import load_fashion_mnist

    reg = load_plugins()
    m = reg.get("methods", method)
    tmp = Path(tempfile.mkdtemp(prefix="ddb-speed-"))
    ctx = RunContext(dataset=load_fashion_mnist(reg), ipc=ipc, seed=0, device=torch.device("cpu"),
                     params=resolve_params(method, m.params, overrides), model="convnet", registry=reg,
                     work_dir=tmp, cache_dir=tmp, progress=False, log=lambda s: None)
    return m, ctx


def time_dm(ipc: int, iters: int, impl: str, batch_real: int = 256, extra: dict | None = None) -> list[float]:
    import torch

    from ddbench_baselines import dm
    from ddbench_baselines._common import class_indices, init_images, make_dsa

    _, ctx = _context("dm", ipc, {"batch_real": batch_real, "impl": impl, **(extra or {})})
    images, _ = init_images(ctx, "real")
    image_syn = images.requires_grad_(True)
    opt = torch.optim.SGD([image_syn], lr=1.0, momentum=0.5)
    idx = class_indices(ctx.dataset)
    dsa = make_dsa(ctx.params["dsa_strategy"])
    times = []
    for it in range(iters + WARMUP):
        t = time.perf_counter()
        loss, grad = dm._iteration(ctx, it, image_syn, ctx.dataset.train_x, idx, dsa, dm.resolve_impl(impl, "cpu"))
        opt.zero_grad()
        image_syn.grad = grad
        opt.step()
        float(loss)
        times.append(time.perf_counter() - t)
    return times[WARMUP:]


def time_gm(kind: str, ipc: int, iters: int, warmup: int, extra: dict | None = None) -> list[float]:
    """Seconds per DC (`kind` dc) or DSA (dsa) iteration at the paper settings, after `warmup` untimed ones."""
    import torch

    from ddbench_baselines import gm
    from ddbench_baselines._common import class_indices

    name = {"dc": "dc", "dsa": "dsa-gm"}[kind]
    _, ctx = _context(name, ipc, dict(extra or {}))
    images, labels, _ = gm.initial_images(ctx)
    image_syn = images.requires_grad_(True)
    opt = torch.optim.SGD([image_syn], lr=ctx.params["lr_img"], momentum=ctx.params["momentum"])
    step = gm.Step(ctx, name, kind == "dsa", ctx.dataset.train_x, class_indices(ctx.dataset))
    times = []
    for it in range(iters + warmup):
        t = time.perf_counter()
        step.iteration(it, image_syn, labels, opt)
        times.append(time.perf_counter() - t)
    return times[warmup:]


class _OneExpert:
    """A stand-in buffer (the cost of an iteration does not depend on the expert's values)."""

    def __init__(self, traj):
        self.traj = traj

    def pair(self, i, a, b, device):
        return self.traj[a].to(device), self.traj[b].to(device)


def time_mtt(ipc: int, iters: int, extra: dict) -> list[float]:
    import torch

    from ddbench_baselines import mtt
    from ddbench.helpers import seeded
    from ddbench_baselines._common import init_images, make_dsa

    over = {"syn_steps": 20, "expert_epochs": 1, "max_start_epoch": 2, "train_epochs": 4, "num_experts": 1}
    _, ctx = _context("mtt", ipc, {**over, **extra})
    with seeded(0, "bench"):
        student = ctx.build_model().train()
    flat = torch.cat([q.detach().reshape(-1) for q in student.parameters()])
    g = torch.Generator().manual_seed(0)
    buffer = _OneExpert(torch.stack([flat + 0.01 * e * torch.randn(flat.shape, generator=g) for e in range(5)]))
    names = [n for n, _ in student.named_parameters()]
    shapes = [q.shape for _, q in student.named_parameters()]
    sizes = [q.numel() for _, q in student.named_parameters()]

    def as_params(f):
        return {n: t.view(s) for n, s, t in zip(names, shapes, torch.split(f, sizes))}

    images, labels = init_images(ctx, "real")
    image_syn = images.requires_grad_(True)
    syn_lr = torch.tensor(0.01).requires_grad_(True)
    opt_img = torch.optim.SGD([image_syn], lr=1000.0, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    dsa = make_dsa(ctx.params["dsa_strategy"])
    times = []
    for it in range(iters + WARMUP):
        t = time.perf_counter()
        loss = mtt._trajectory_loss(ctx, it, buffer, student, as_params, image_syn, labels, syn_lr, dsa, len(labels))
        opt_img.zero_grad()
        opt_lr.zero_grad()
        loss.backward()
        opt_img.step()
        opt_lr.step()
        float(loss)
        times.append(time.perf_counter() - t)
    return times[WARMUP:]


def time_expert(n_images: int, extra: dict, experts: int = 1) -> list[float]:
    """Seconds per expert epoch over `n_images`: `experts` experts trained at once for 2 epochs (the layout
    ExpertBuffer.ensure uses); the second epoch is timed (from the last expert's end of epoch 1 to the
    last's end of epoch 2, divided by `experts`), the first is the warm-up."""
    from ddbench_baselines import mtt
    from ddbench_baselines.workers import map_workers

    stamps: list[tuple[int, float]] = []

    def log(msg: str) -> None:
        m = re.search(r"epoch (\d+)/", msg)
        if m:
            stamps.append((int(m.group(1)), time.perf_counter()))

    _, ctx = _context("mtt", 1, {"train_epochs": 2, **extra})
    ctx.log = log
    buf = mtt.ExpertBuffer(ctx, None)
    x, y = ctx.dataset.train_x[:n_images], ctx.dataset.train_y[:n_images]
    at_once = min(experts, ctx.params["workers"] or torch_threads())
    inner = 1 if at_once > 1 else ctx.params["workers"]
    map_workers(lambda i: buf._train_expert(i, x, y, inner), list(range(experts)), ctx.params["workers"], "cpu")
    end = {e: max(t for k, t in stamps if k == e) for e in (1, 2)}
    return [(end[2] - end[1]) / experts]


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run_one(spec: str, args) -> dict:
    """In a subprocess: one measurement, its seconds per unit and the process's peak RSS."""
    import torch

    torch.set_num_threads(args.threads)
    tuned = False
    if not args.no_malloc_tuning:
        from ddbench_baselines._common import keep_freed_memory

        tuned = keep_freed_memory()  # as DM.distill / MTT.distill do on CPU
    kind, arg = spec.split(":")
    arg = int(arg)
    if kind == "dm":
        times = time_dm(arg, args.dm_iters, args.dm_impl, args.batch_real, _sets(args.dm_set))
    elif kind == "mtt":
        times = time_mtt(arg, args.mtt_iters, _sets(args.mtt_set))
    elif kind in ("dc", "dsa"):
        times = time_gm(kind, arg, args.gm_iters, args.gm_warmup, {"batch_real": args.batch_real, **_sets(args.gm_set)})
    else:
        times = time_expert(arg, _sets(args.mtt_set), args.experts)
    return {"spec": spec, "times": times, "threads": torch.get_num_threads(), "peak_mb": _peak_mb(), "malloc_tuned": tuned}


def _sets(pairs: list[str]) -> dict:
    """KEY=VALUE settings, values as ints where they parse."""
    out = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------- reference side
PEAK_WRAPPER = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; sys.path.insert(0, '.');\n"
                "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
                "finally:\n    print('PEAK_MB %.1f' % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), flush=True)")


def reference_command(spec: str, args) -> tuple[list[str], str]:
    """The patched reference script's command line and its folder (docs/baselines.md#speed)."""
    kind, arg = spec.split(":")
    ref = Path(args.reference_dir)
    if kind == "dm":
        return (["main_DM.py", "--dataset", "FashionMNIST", "--ipc", arg, "--Iteration", str(args.dm_iters + WARMUP - 1),
                 "--num_exp", "1", "--batch_real", str(args.batch_real), "--data_path", str(ref / "data"),
                 "--save_path", str(ref / "result")], str(ref / "dc"))
    if kind in ("dc", "dsa"):
        extra = ["--method", "DSA", "--init", "real", "--dsa_strategy", "color_crop_cutout_flip_scale_rotate"] \
            if kind == "dsa" else ["--method", "DC"]
        return (["main.py", "--dataset", "FashionMNIST", "--ipc", arg, *extra,
                 "--Iteration", str(args.gm_iters + args.gm_warmup - 1), "--num_exp", "1",
                 "--batch_real", str(args.batch_real), "--data_path", str(ref / "data"),
                 "--save_path", str(ref / "result")], str(ref / "dc"))
    if kind == "mtt":
        return (["distill.py", "--dataset", "FashionMNIST", "--ipc", arg, "--syn_steps", "20", "--expert_epochs", "1",
                 "--max_start_epoch", "2", "--Iteration", str(args.mtt_iters + WARMUP - 1), "--load_all",
                 "--buffer_path", str(ref / "mtt" / "buffers"), "--data_path", str(ref / "data")], str(ref / "mtt"))
    return (["buffer.py", "--dataset", "FashionMNIST", "--num_experts", "1", "--train_epochs", "2",
             "--timing_images", arg, "--buffer_path", str(ref / "mtt" / "ref_buffers"),
             "--data_path", str(ref / "data")], str(ref / "mtt"))


def run_reference(spec: str, args) -> dict:
    argv, cwd = reference_command(spec, args)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-c", PEAK_WRAPPER, *argv]
    print(f"# reference: (cd {cwd} && OMP_NUM_THREADS={args.threads} python {' '.join(argv)})", flush=True)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"reference {spec} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    times = [float(t) for t in re.findall(r"^TIMING \w+ \d+ ([0-9.]+) s", out.stdout, re.M)]
    threads = re.findall(r"^threads (\d+)", out.stdout, re.M)
    if spec.startswith(("dc", "dsa")):
        times = times[args.gm_warmup:]
    else:
        times = times[WARMUP:] if spec.startswith(("dm", "mtt")) else times[1:]  # warm-up, as for ddbench
    return {"spec": spec, "times": times, "threads": int(threads[0]) if threads else None,
            "peak_mb": float(re.findall(r"^PEAK_MB ([0-9.]+)", out.stdout, re.M)[-1]),
            "command": f"OMP_NUM_THREADS={args.threads} python {' '.join(argv)}", "cwd": cwd}


# ----------------------------------------------------------------------------------------------- report
def summarize_presets(path: str) -> None:
    """Old vs new CPU preset, from JSON lines {"arm": "old"|"new", "cmd": ..., "run": `ddbench run --json`}:
    per (method, IPC, arm) the mean ± population std (np.std, as the reference) over seeds of each run's mean
    accuracy, distill seconds, and Welch's t-test new vs old (scipy.stats.ttest_ind(equal_var=False))."""
    import numpy as np
    from scipy.stats import ttest_ind

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["run"]["method"], r["run"]["ipc"], r["arm"]), []).append(r["run"])
    for method, ipc in sorted({k[:2] for k in groups}):
        accs = {}
        for arm in ("old", "new"):
            runs = groups.get((method, ipc, arm), [])
            accs[arm] = [x["accuracy_mean"] for x in runs]
            print(f"{method} IPC {ipc} {arm}: seeds {[x['seed'] for x in runs]}  accuracy {np.mean(accs[arm]):.2f} ± "
                  f"{np.std(accs[arm]):.2f}  per seed {[round(a, 2) for a in accs[arm]]}  distill s "
                  f"{[round(x['distill_seconds'], 1) for x in runs]}")
        if len(accs["old"]) > 1 and len(accs["new"]) > 1:
            t = ttest_ind(accs["new"], accs["old"], equal_var=False)
            print(f"{method} IPC {ipc} new - old: {np.mean(accs['new']) - np.mean(accs['old']):+.2f} points, "
                  f"Welch t = {t.statistic:.2f}, p = {t.pvalue:.3f}")


def rate(res: dict, spec: str) -> float:
    """Units per second: iterations/s, or full 60k-image expert epochs/s."""
    med = statistics.median(res["times"])
    if spec.startswith("expert"):
        return int(spec.split(":")[1]) / med / FULL_EPOCH
    return 1.0 / med


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def subprocess_one(spec: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", spec, "--threads", str(args.threads), "--dm-iters", str(args.dm_iters),
           "--mtt-iters", str(args.mtt_iters), "--dm-impl", args.dm_impl, "--batch-real", str(args.batch_real),
           "--gm-iters", str(args.gm_iters), "--gm-warmup", str(args.gm_warmup)] + [f"--gm-set={kv}" for kv in args.gm_set]
    cmd += ["--experts", str(args.experts)] + (["--no-malloc-tuning"] if args.no_malloc_tuning else []) + [f"--dm-set={kv}" for kv in args.dm_set] + [f"--mtt-set={kv}" for kv in args.mtt_set]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"ddbench {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dm-ipcs", type=int, nargs="*", default=[1, 10, 50])
    ap.add_argument("--mtt-ipcs", type=int, nargs="*", default=[1, 10])
    ap.add_argument("--dc-ipcs", type=int, nargs="*", default=[],
                    help="DC (main.py --method DC) IPCs; none by default (an IPC-10 iteration is minutes; "
                         "the commands: docs/baselines.md#speed-against-mainpy)")
    ap.add_argument("--dsa-ipcs", type=int, nargs="*", default=[], help="DSA (main.py --method DSA) IPCs; none by default")
    ap.add_argument("--gm-iters", type=int, default=3, help="timed DC/DSA iterations")
    ap.add_argument("--gm-warmup", type=int, default=1, help="untimed first DC/DSA iterations")
    ap.add_argument("--gm-set", action="append", default=[], metavar="KEY=VALUE", help="a DC/DSA setting (e.g. micro_batch=0)")
    ap.add_argument("--expert-images", type=int, nargs="*", default=[5120],
                    help="images of the timed expert epoch (a full one is 60000; 5120 = 20 batches of 256)")
    ap.add_argument("--dm-iters", type=int, default=5, help="timed DM iterations (after one warm-up)")
    ap.add_argument("--mtt-iters", type=int, default=3, help="timed MTT iterations (after one warm-up)")
    ap.add_argument("--batch-real", type=int, default=256, help="DM real images per class (main_DM.py: 256)")
    ap.add_argument("--dm-impl", default="auto", choices=("auto", "chunked", "batched"))
    ap.add_argument("--dm-set", action="append", default=[], metavar="KEY=VALUE", help="a DM setting (e.g. micro_batch=32)")
    ap.add_argument("--mtt-set", action="append", default=[], metavar="KEY=VALUE", help="an MTT setting (e.g. unroll_micro_batch=16)")
    ap.add_argument("--experts", type=int, default=1,
                    help="experts trained at once in the expert timing (the rate is per expert epoch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="ddbench side without keep_freed_memory() (glibc's default malloc thresholds)")
    ap.add_argument("--reference-dir", default=None, help="patched reference copies (docs/baselines.md#speed)")
    ap.add_argument("--reference-json", default=str(ROOT / "benchmarks/results/baseline-speed-reference.json"))
    ap.add_argument("--no-ddbench", action="store_true", help="only the reference (to store its figures)")
    ap.add_argument("--json", default=None, help="write every measurement here")
    ap.add_argument("--prepare-reference", default=None, metavar="DIR",
                    help="make the patched reference copies in DIR (then pass --reference-dir DIR)")
    ap.add_argument("--dc-src", default=None, help="checkout of VICO-UoE/DatasetCondensation (for --prepare-reference)")
    ap.add_argument("--mtt-src", default=None, help="checkout of GeorgeCazenavette/mtt-distillation (none: MTT not prepared)")
    ap.add_argument("--fmnist", default="/usr/share/datasets/fashion-mnist", help="folder with the Fashion-MNIST IDX .gz files")
    ap.add_argument("--summarize-presets", default=None, metavar="JSONL",
                    help="print old vs new preset accuracy (mean ± std over seeds, Welch test) and exit")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--fake-buffer", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.summarize_presets:
        summarize_presets(args.summarize_presets)
        return
    if args.fake_buffer:
        fake_buffer(args.fake_buffer, 4)
        return
    if args.prepare_reference:
        prepare_reference(Path(args.prepare_reference), Path(args.dc_src), Path(args.mtt_src) if args.mtt_src else None,
                          Path(args.fmnist))
        print(f"# patched reference copies in {args.prepare_reference}")
        return
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return

    specs = [f"dm:{i}" for i in args.dm_ipcs] + [f"mtt:{i}" for i in args.mtt_ipcs] + [f"expert:{n}" for n in args.expert_images]
    specs += [f"dc:{i}" for i in args.dc_ipcs] + [f"dsa:{i}" for i in args.dsa_ipcs]
    stored = {}
    if not args.reference_dir and Path(args.reference_json).is_file():
        rows = json.loads(Path(args.reference_json).read_text())["results"]
        stored = {r["spec"]: r["reference"] for r in rows if "reference" in r}
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} threads={args.threads} load before={loadavg()} "
          f"cpus={os.cpu_count()} dm_impl={args.dm_impl} batch_real={args.batch_real} dm_set={args.dm_set} "
          f"mtt_set={args.mtt_set} experts={args.experts} malloc_tuning={not args.no_malloc_tuning} "
          f"gm_iters={args.gm_iters} gm_warmup={args.gm_warmup} gm_set={args.gm_set}", flush=True)
    results = []
    for spec in specs:
        row = {"spec": spec, "load_before": loadavg()}
        if args.reference_dir:
            row["reference"] = run_reference(spec, args)
        elif spec in stored:
            row["reference"] = {**stored[spec], "stored": True}
        if not args.no_ddbench:
            row["ddbench"] = subprocess_one(spec, args)
        row["load_after"] = loadavg()
        results.append(row)
        _print_row(row)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "threads": args.threads, "results": results}, indent=1))
    print(f"# load after={loadavg()}")


def _print_row(row: dict) -> None:
    spec = row["spec"]
    unit = "epochs/s (60k)" if spec.startswith("expert") else "it/s"
    parts = [f"{spec:10s}"]
    for side in ("reference", "ddbench"):
        if side in row:
            r = row[side]
            parts.append(f"{side} {rate(r, spec):.4f} {unit} (median {statistics.median(r['times']):.3f} s of "
                         f"{len(r['times'])}, peak {r['peak_mb']:.0f} MB, threads {r['threads']}"
                         f"{', stored' if r.get('stored') else ''})")
    if "reference" in row and "ddbench" in row:
        parts.append(f"ratio {rate(row['ddbench'], spec) / rate(row['reference'], spec):.2f}x")
    print(" | ".join(parts) + f" | load {row['load_before']} -> {row['load_after']}", flush=True)


if __name__ == "__main__":
    main()
