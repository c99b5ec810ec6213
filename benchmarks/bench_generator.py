"""Generator speed on this CPU: training steps/s and sampling images/s, before vs now, in one run.

    python benchmarks/bench_generator.py [--steps 12] [--contention]

"before" is the generator of the previous release (ddbench 0.1.0 at commit ccc6eae: UNet2DModel (32, 64, 64)
with diffusers' default mid-block attention, fp32, 2 threads, no guidance); "now" is ddbench_minmax's
(no mid-block attention, bf16 autocast, the null class). Sampling is one DDIM step on a batch of 100 images,
"now" with classifier-free guidance (both branches: the doubled batch) and without. Everything is measured
in this process, back to back, after a warm-up; the ratios are the result.

--contention also runs the training step while a second process keeps one core busy (a pure-Python loop),
for three thread policies: fixed 2 threads, fixed 1 thread, and ThreadGovernor ("auto").
Run it on a quiet machine; it prints the load average before and after.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F

BATCH = 128


def old_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, num_class_embeds=10,
                       block_out_channels=(32, 64, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3)


def new_model():
    from ddbench_minmax.base import BaseRecipe
    from ddbench_minmax.model import build_denoiser

    return build_denoiser(BaseRecipe().denoiser_config(1, 28, 10))


def train_steps(net, call, steps: int, bf16: bool, governor=None) -> list[float]:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    t = torch.randint(0, 1000, (BATCH,))
    times = []
    for i in range(steps + 1):
        if governor is not None:
            governor.choose(i)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = call(net, x, t, y)
        loss = F.mse_loss(out.float(), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if governor is not None:
            governor.record(dt)
        if i:  # the first step is the warm-up
            times.append(dt)
    return times


def sample_step(net, call, bf16: bool, guided: bool, repeats: int = 5) -> float:
    n = 100
    x = torch.randn(2 * n if guided else n, 1, 28, 28)
    y = torch.randint(0, 10, (x.shape[0],))
    t = torch.full((x.shape[0],), 500)
    best = float("inf")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        call(net, x, t, y)
        for _ in range(repeats):
            t0 = time.perf_counter()
            call(net, x, t, y)
            best = min(best, time.perf_counter() - t0)
    return n / best  # images advanced by one denoising step per second


def _old_call(net, x, t, y):
    return net(x, t, class_labels=y).sample


def _new_call(net, x, t, y):
    return net(x, t, y)


def _busy(stop) -> None:
    while not stop.is_set():
        sum(range(10000))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--contention", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"load average before: {os.getloadavg()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    old, new = old_unet(), new_model()
    print(f"parameters: before {sum(p.numel() for p in old.parameters()):,}, now {new.num_parameters():,}")
    t_old = statistics.median(train_steps(old, _old_call, args.steps, bf16=False))
    t_new = statistics.median(train_steps(new, _new_call, args.steps, bf16=True))
    print(f"training step, batch {BATCH}: before {t_old:.3f} s ({1 / t_old:.2f} steps/s), now {t_new:.3f} s "
          f"({1 / t_new:.2f} steps/s): {t_old / t_new:.2f}x")
    s_old = sample_step(old, _old_call, bf16=False, guided=False)
    s_new = sample_step(new, _new_call, bf16=True, guided=False)
    s_cfg = sample_step(new, _new_call, bf16=True, guided=True)
    print(f"sampling, images x steps / s (batch 100): before {s_old:.0f}, now {s_new:.0f} ({s_new / s_old:.2f}x), "
          f"now with guidance {s_cfg:.0f} ({s_cfg / s_old:.2f}x)")
    if args.contention:
        from ddbench_minmax.train import ThreadGovernor

        stop = mp.Event()
        hog = mp.Process(target=_busy, args=(stop,))
        hog.start()
        try:
            res = {}
            for label, threads in (("fixed 2 threads", 2), ("fixed 1 thread", 1)):
                torch.set_num_threads(threads)
                res[label] = statistics.median(train_steps(new, _new_call, args.steps, bf16=True))
            torch.set_num_threads(2)
            gov = ThreadGovernor(2, probe_every=10, probe_len=2)
            res["auto (ThreadGovernor)"] = statistics.median(train_steps(new, _new_call, 3 * args.steps, bf16=True,
                                                                         governor=gov))
        finally:
            stop.set()
            hog.join()
        for label, t in res.items():
            print(f"with one core busy, {label}: {t:.3f} s/step ({t / t_new:.2f}x the quiet 2-thread step)")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
