"""Forward-only embedder throughput (DM's real images): layouts on this CPU. GFLOP/s = 96.8 MFLOP/image."""
import sys, time
import torch, torch.nn as nn, torch.nn.functional as F
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, "/work/main/tests")
from ddbench.default_plugins.convnet_models import ConvNet
torch.set_num_threads(2)
torch.manual_seed(0)
net = ConvNet(1, 10, 28).train()
for q in net.parameters(): q.requires_grad_(False)
N = 1280
X = torch.randn(N, 1, 28, 28)
FL = 96.8e6 * N

def peak():
    a = torch.randn(2048, 2048); b = torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter(); 
    for _ in range(5): a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9

def nnpack_embed(x):
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    i = 0
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            x = torch._nnpack_spatial_convolution(x.contiguous(), m.weight, m.bias, m.padding, m.stride)
        else:
            x = m(x)
    return x.reshape(x.shape[0], -1)

def run_chunks(x, c, fn, cl=False):
    tot = 0
    for part in x.split(c):
        if cl: part = part.contiguous(memory_format=torch.channels_last)
        tot = tot + fn(part).sum(0)
    return tot

def one(label, f, reps=2):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    t = min(ts)
    print(f"{label:40s} {t:.3f} s  {FL / t / 1e9:6.1f} GFLOP/s", flush=True)

def workers(c, fn, cl=False):
    halves = X.split(N // 2)
    def w(h):
        torch.set_num_threads(1)
        return run_chunks(h, c, fn, cl)
    with ThreadPoolExecutor(2) as pool:
        r = list(pool.map(w, halves))
    torch.set_num_threads(2)
    return r

with torch.no_grad():
    print(f"peak matmul 2 threads: {peak():.1f} GFLOP/s", flush=True)
    for c in (16, 32, 64, 256):
        one(f"2 threads, chunk {c}", lambda: run_chunks(X, c, net.embed))
    for c in (8, 16, 32, 64):
        one(f"2 workers x 1 thread, chunk {c}", lambda: workers(c, net.embed))
    one("2 workers, chunk 16, channels_last", lambda: workers(16, net.embed, True))
    one("2 threads, chunk 64, channels_last", lambda: run_chunks(X, 64, net.embed, True))
    try:
        d = (nnpack_embed(X[:16]) - net.embed(X[:16])).abs().max() / net.embed(X[:16]).abs().max()
        print("nnpack rel err", float(d))
        for c in (16, 64, 256):
            one(f"nnpack 2 threads chunk {c}", lambda: run_chunks(X, c, nnpack_embed))
        one("nnpack 2 workers chunk 64", lambda: workers(64, nnpack_embed))
    except Exception as e:
        print("nnpack failed", e)
