"""Worker threads for the baselines' CPU layout (docs/baselines.md#speed): items mapped over threads, each with an
equal share of the intra-op threads (no OpenMP barrier per small op), and a per-thread copy of a module for
work that swaps its parameters. None of it changes results beyond float summation order."""
from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import torch


_LOCAL = threading.local()


def thread_copy(module: torch.nn.Module) -> torch.nn.Module:
    """This thread's own copy of `module` (the main thread uses the module itself)."""
    if threading.current_thread() is threading.main_thread():
        return module
    copies = getattr(_LOCAL, "copies", None)
    if copies is None:
        copies = _LOCAL.copies = {}
    if id(module) not in copies:
        copies[id(module)] = (module, copy.deepcopy(module))
    return copies[id(module)][1]


def map_workers(fn, items: list, workers: int, device="cpu") -> list:
    """[fn(item) ...] in order: on CPU on `workers` threads (0 = torch.get_num_threads()) with an equal share of
    the intra-op threads each (docs/baselines.md#speed: no OpenMP barrier per small op); elsewhere, or with one
    worker, in turn."""
    threads = torch.get_num_threads()
    n = min(len(items), workers or threads) if torch.device(device).type == "cpu" else 1
    if n <= 1:
        return [fn(item) for item in items]

    def one(item):
        torch.set_num_threads(max(1, threads // n))
        return fn(item)

    try:
        with ThreadPoolExecutor(n, thread_name_prefix="ddbench-baseline") as pool:
            return list(pool.map(one, items))
    finally:
        torch.set_num_threads(threads)
