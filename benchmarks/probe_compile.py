"""Is torch.compile (inductor's C++ backend) a lever for the CPU evaluation? (docs/evaluation.md#bf16-speed)

One ConvNet training step (forward under bf16 autocast, cross-entropy, backward, SGD), ms per training image:
eager against `torch.compile(net, dynamic=False)`, (a) one network on the main thread with one torch thread,
(b) two networks at once on two worker threads with one torch thread each, as the `fast` impl's CPU mode
(`parallel=threads`) trains them, (c) the 5-network `StackedConvNet` on 2 threads (`parallel=stacked`).

    flock /tmp/ddbench-cpu.lock python benchmarks/probe_compile.py > benchmarks/results/probe-compile.log 2>&1
"""
from __future__ import annotations

import os
import threading
import time

import torch
import torch.nn.functional as F

from ddbench.default_plugins.convnet_models import ConvNet, StackedConvNet
from ddbench.default_plugins.dsa_training import stacked_loss


def step(net, x, y, opt, loss_fn=F.cross_entropy) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x).float()
    loss = loss_fn(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def per_image_ms(net, x, y, reps: int, images: int, loss_fn=F.cross_entropy) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(4):  # the first call compiles
        step(net, x, y, opt, loss_fn)
    t = time.perf_counter()
    for _ in range(reps):
        step(net, x, y, opt, loss_fn)
    return (time.perf_counter() - t) / reps / images * 1000


def make(mode: str, module):
    return module if mode == "eager" else torch.compile(module, dynamic=False)


def main() -> None:
    flags = open("/proc/cpuinfo").read()
    print(f"avx512_bf16: {'avx512_bf16' in flags}; torch {torch.__version__}; load before {os.getloadavg()[0]:.2f}")
    for b in (10, 16):  # IPC 1 (10 images a step) and the fast impl's 16-image micro-batch
        x, y = torch.randn(b, 1, 28, 28), torch.randint(0, 10, (b,))
        for mode in ("eager", "compiled"):
            torch.set_num_threads(1)
            torch.manual_seed(0)
            one = per_image_ms(make(mode, ConvNet(1, 10, 28)), x, y, 60, b)
            res: dict[int, float] = {}

            def worker(i: int) -> None:
                torch.set_num_threads(1)
                torch.manual_seed(i)
                res[i] = per_image_ms(make(mode, ConvNet(1, 10, 28)), x, y, 60, b)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            print(f"B={b:3d} {mode:8s} (a) 1 net, main thread: {one:.2f} ms/image; "
                  f"(b) 2 nets on 2 worker threads: {res[0]:.2f} / {res[1]:.2f} ms/image/net", flush=True)
    torch.set_num_threads(2)
    for b in (10, 100):
        x, y = torch.randn(b, 5, 28, 28), torch.randint(0, 10, (5, b))
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            net = StackedConvNet(5, 1, 10, 28, 128, 3)
            for p in net.parameters():
                torch.nn.init.normal_(p, std=0.05)
            ms = per_image_ms(make(mode, net), x, y, 20 if b <= 16 else 6, 5 * b, stacked_loss)
            print(f"B={b:3d} {mode:8s} (c) 5 stacked nets, 2 threads: {ms:.2f} ms/image/net", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
