"""Evaluation protocols (the `protocols` plugin): `dsa` (the standard one) and `fast` (fewer epochs).

The protocol is `utils.py: evaluate_synset` of the DC/DSA/DM reference code (VICO-UoE/DatasetCondensation):
train a freshly initialised network on the synthetic set with DSA on every batch (per-sample parameters, not
siamese), SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 256 shuffled, the lr multiplied by 0.1 once
(after epoch index `epochs//2 + 1`, re-creating the optimizer as the reference does, which resets the
momentum), then test accuracy on the whole real test set. As in the reference loop `for ep in
range(Epoch+1)`, `epochs` = E runs E+1 passes over the synthetic set. Repeated for N networks.

Two implementations of the same protocol, chosen by the `impl` setting and recorded in `details["impl"]`:

- `loop`: the readable reference, one network after another, written like `evaluate_synset`/`epoch`.
- `fast` (default): the N networks train at once. On CPU (`parallel=threads`) each runs the loop's own code
  on its own core with single-threaded ops and micro-batched (exact) gradients; on CUDA (`parallel=stacked`)
  they train as one `StackedConvNet` (grouped convolutions, one element-wise SGD over the stacked
  parameters, which is exactly N independent SGDs). Each network keeps its own initialisation, data order and
  DSA parameters, drawn from its own generator in the same order as the loop, so both implementations
  compute the same thing up to floating-point summation order. `max_parallel` caps how many networks train
  at once (memory). Architectures other than the ConvNet fall back to the loop (recorded in details).

Network i is seeded from (ctx.seed, i): its initial weights, data order and augmentation depend only on those.
See docs/evaluation.md for the measured speed and the equivalence run. The training pieces both implementations
share, and the stacked passes, are dsa_training.py's.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import hookimpl
from ..api import (AUGMENTATION, EPOCHS, IMPLEMENTATION, NETWORKS, PRECISION, SPEED, DDBenchError, EvalResult, Param,
                   Protocol, RunContext, SyntheticSet)
from ..helpers import DEFAULT_STRATEGY, DSA, check_strategy, derive_seed
from .convnet_models import ConvNet, StackedConvNet
from .dsa_training import autocast, lr_decay_epoch, test_accuracy_stacked, train_stacked

REF = "VICO-UoE/DatasetCondensation"
PRECISIONS = ("fp32", "bf16", "auto")


def _params(epochs: int, epochs_source: str) -> dict[str, Param]:
    return {
        "epochs": Param(epochs, epochs_source,
                        "training epochs per network (E runs E+1 passes, as the reference; 0 = one pass)", min=0,
                        role=EPOCHS),
        "n_models": Param(5, "DSA/DM/MTT papers report mean±std over 5 networks (MTT distill.py num_eval=5; "
                             "DM main_DM.py num_eval=20)",
                          "number of freshly initialised networks", min=1, role=NETWORKS),
        "lr": Param(0.01, f"{REF} main.py/main_DM.py --lr_net 0.01", "SGD learning rate", min=0.0),
        "momentum": Param(0.9, f"{REF} utils.py evaluate_synset: SGD(momentum=0.9)", min=0.0, max=1.0),
        "weight_decay": Param(0.0005, f"{REF} utils.py evaluate_synset: SGD(weight_decay=0.0005)", min=0.0),
        "batch_size": Param(256, f"{REF} main.py/main_DM.py --batch_train 256", "training batch", min=1),
        "dsa": Param(True, f"{REF} utils.py epoch(aug=True) with args.dsa: DiffAugment on every training batch",
                     "DSA augmentation on every training batch", role=AUGMENTATION),
        "dsa_strategy": Param(DEFAULT_STRATEGY, f"{REF} main_DM.py --dsa_strategy", "DSA groups, '_'-joined",
                              check=check_strategy),
        "impl": Param("fast", "docs/evaluation.md#two-implementations-of-the-protocol: ddbench's fast implementation "
                              "by default; 'loop' is the plain reference",
                      "fast (N networks at once) or loop (one after another)",
                      choices=("fast", "loop"), role=IMPLEMENTATION),
        "parallel": Param("auto", "docs/evaluation.md#two-implementations-of-the-protocol, measured: "
                                  "threads beat grouped convs on CPU",
                          "how the fast impl trains networks together: threads (one network per core, single-threaded "
                          "ops), stacked (one grouped-conv model), auto (threads on CPU, stacked on CUDA)",
                          choices=("auto", "threads", "stacked"), role=SPEED),
        "micro_batch": Param(16, "docs/evaluation.md (measured on a 2-core CPU): 16-image chunks keep activations "
                             "in cache, 1.5-1.9x faster per image than 256",
                             "fast impl: forward/backward each batch in chunks of this many images, accumulating "
                             "gradients (exact: instance norm and DSA are per-sample); also the test chunk; "
                             "0 = whole batches", min=0, role=SPEED),
        "max_parallel": Param(0, "docs/evaluation.md#peak-memory (ddbench's memory cap): 0 = all n_models at once",
                              "networks trained at once (fast impl)", min=0, role=SPEED),
        "use_syn_lr": Param(True, "GeorgeCazenavette/mtt-distillation distill.py: args.lr_net = syn_lr.item() before "
                                  "evaluate_synset",
                            "train with SyntheticSet.lr when the method learned one"),
        "test_batch": Param(256, f"{REF} utils.py get_dataset: testloader batch_size=256",
                            "test images per forward", min=1, role=SPEED),
        "zca": Param(False, "GeorgeCazenavette/mtt-distillation distill.py: with --zca, evaluate_synset trains and "
                            "tests on ZCA-whitened images (kornia ZCAWhitening fitted on the real training set)",
                     "train on the whitened synthetic set and test on the whitened real test set "
                     "(MTT's --zca evaluation)"),
        "precision": Param("auto", "docs/evaluation.md#precision: bf16 passed the equivalence test against the "
                                   "reference's fp32 arithmetic (loop impl, 1000 epochs, 10 networks per side, IPC 1 "
                                   "and 10); auto keeps fp32 where bf16 is not native",
                           "arithmetic of the networks' forward and backward passes: fp32, bf16 (torch autocast: "
                           "activations in bf16; weights, gradients, optimizer, DSA and the loss stay fp32), or auto "
                           "(bf16 where the CPU has native bf16, avx512_bf16 or AMX; fp32 elsewhere and on CUDA); "
                           "the precision used is in details",
                           choices=PRECISIONS, role=PRECISION),
        "zca_eps": Param(0.1, "GeorgeCazenavette/mtt-distillation utils.py: K.enhance.ZCAWhitening(eps=0.1)",
                         "ZCA regularisation when zca=true", min=0.0),
    }


class DSAProtocol(Protocol):
    # Both follow evaluate_synset at main_DM.py's --epoch_eval_train 1000: `fast` is the same protocol cut short.
    standard_epochs = 1000

    def __init__(self, name: str, description: str, epochs: int, epochs_source: str):
        self.name = name
        self.description = description
        self.params = _params(epochs, epochs_source)

    def evaluate(self, syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]) -> EvalResult:
        return evaluate(syn, ctx, settings)


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX in /proc/cpuinfo): there oneDNN's bf16
    convolutions run at about twice the fp32 rate; elsewhere bf16 is emulated and no faster."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str, device) -> str:
    """The precision an evaluation runs at: `auto` is bf16 on a CPU with native bf16, fp32 elsewhere."""
    if setting != "auto":
        return setting
    return "bf16" if torch.device(device).type == "cpu" and native_bf16() else "fp32"


def network_seed(seed: int, i: int) -> int:
    """The seed of evaluation network i of a run with seed `seed` (a keyed hash: apart from every method stream)."""
    return derive_seed(seed, "evaluation-network", i)


_INIT_LOCK = threading.Lock()  # init_network seeds torch's global RNG: one thread at a time


def init_network(ctx: RunContext, i: int) -> tuple[nn.Module, torch.Generator]:
    """Network i: weights from torch's init under its seed; a generator for its data order and DSA draws."""
    s = network_seed(ctx.seed, i)
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        net = ctx.build_model()
    return net, torch.Generator().manual_seed(s + 1)


def prepare(syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]):
    """(images, labels, dsa): the set as float images and hard or soft labels on the run's device, and the
    DSA of the settings (None when off); what every implementation trains on."""
    images = syn.images.detach().to(ctx.device, torch.float32)
    labels = _soft_or_hard(syn.labels.detach()).to(ctx.device)
    return images, labels, (DSA(settings["dsa_strategy"]) if settings["dsa"] else None)


def train_and_test(ctx: RunContext, i: int, prepared, settings: dict[str, Any], lr: float, bar=None,
                   micro: int = 0, test_batch: int = 0) -> tuple[float, float]:
    """Network i of the loop, start to end: (test accuracy, last-epoch train accuracy), in %."""
    net, gen = init_network(ctx, i)
    net = net.to(ctx.device)
    train_acc = _train_one(net, gen, *prepared, settings, lr, bar, micro=micro)
    return test_accuracy(net, ctx, test_batch or settings["test_batch"], settings.get("precision", "fp32")), train_acc


def _check(syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]) -> None:
    ds = ctx.dataset
    if syn.images.shape[0] == 0:
        raise DDBenchError("the synthetic set is empty; a protocol needs at least one image")
    if tuple(syn.images.shape[1:]) != tuple(ds.test_x.shape[1:]):
        raise DDBenchError(
            f"synthetic images have shape {tuple(syn.images.shape[1:])}; the {ds.name} test set needs "
            f"{tuple(ds.test_x.shape[1:])}"
        )
    labels = syn.labels
    if labels.ndim == 1 and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= ds.num_classes):
        raise DDBenchError(f"synthetic labels must lie in [0, {ds.num_classes - 1}], "
                           f"got {int(labels.min())}..{int(labels.max())}")
    if labels.ndim == 2 and labels.shape[1] != ds.num_classes:
        raise DDBenchError(f"soft labels must have {ds.num_classes} columns, got {labels.shape[1]}")
    if not torch.isfinite(syn.images).all():
        raise DDBenchError("the synthetic images contain NaN or inf")
    lr = _lr(syn, settings)
    if not (math.isfinite(lr) and lr > 0):
        raise DDBenchError(f"evaluation lr={lr!r} is not allowed; it must be a positive finite number")


def _lr(syn: SyntheticSet, settings: dict[str, Any]) -> float:
    if settings["use_syn_lr"] and syn.lr is not None:
        return float(syn.lr)
    return float(settings["lr"])


def _progress(ctx: RunContext, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", disable=not ctx.progress, leave=False)


def evaluate(syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]) -> EvalResult:
    """Train settings['n_models'] networks on `syn`, return their test accuracies (in %)."""
    _check(syn, ctx, settings)
    start = time.perf_counter()
    if settings["zca"]:
        syn, ctx = _whitened(syn, ctx, settings["zca_eps"])
    impl = settings["impl"]
    settings = {**settings, "precision": resolve_precision(settings["precision"], ctx.device)}
    details: dict[str, Any] = {"impl": impl, "lr": _lr(syn, settings), "epochs": settings["epochs"],
                               "n_models": settings["n_models"], "images": int(syn.images.shape[0]),
                               "precision": settings["precision"]}
    if impl == "fast":
        probe, _ = init_network(ctx, 0)
        if not isinstance(probe, ConvNet):
            details["impl"] = "loop"
            details["fallback"] = f"fast impl supports ConvNet only; {type(probe).__name__} trained with the loop"
            impl = "loop"
    if impl == "loop":
        accs, train_acc = _evaluate_loop(syn, ctx, settings)
    else:
        mode = settings["parallel"]
        if mode == "auto":
            mode = "threads" if torch.device(ctx.device).type == "cpu" else "stacked"
        details["parallel"] = mode
        if mode == "threads":
            accs, train_acc = _evaluate_threads(syn, ctx, settings, details)
        else:
            accs, train_acc = _evaluate_stacked(syn, ctx, settings, details)
    details["train_accuracies"] = train_acc
    return EvalResult(accuracies=accs, seconds=time.perf_counter() - start, details=details)


def _whitened(syn: SyntheticSet, ctx: RunContext, eps: float) -> tuple[SyntheticSet, RunContext]:
    """The set and the run's data (training and test images alike) in ZCA-whitened space, as MTT evaluates
    with --zca: both sides of the evaluation are always in the same space."""
    import dataclasses

    from ..helpers import fit_zca, whiten_dataset

    zca = fit_zca(ctx.dataset, eps, ctx.cache_dir)
    white = dataclasses.replace(syn, images=zca.from_normalised(syn.images.detach().cpu().float(), ctx.dataset))
    return white, dataclasses.replace(ctx, dataset=whiten_dataset(ctx.dataset, zca))


def _soft_or_hard(labels: torch.Tensor) -> torch.Tensor:
    return labels.float() if labels.ndim == 2 else labels.long()


# --------------------------------------------------------------------------------------------------
# loop: the reference, plainly
# --------------------------------------------------------------------------------------------------


def _evaluate_loop(syn: SyntheticSet, ctx: RunContext, settings: dict[str, Any]) -> tuple[list[float], list[float]]:
    prepared = prepare(syn, ctx, settings)
    epochs, n_models = settings["epochs"], settings["n_models"]
    bar = _progress(ctx, n_models * (epochs + 1), "evaluate (loop)")
    results = [train_and_test(ctx, i, prepared, settings, _lr(syn, settings), bar) for i in range(n_models)]
    bar.close()
    return [r[0] for r in results], [r[1] for r in results]


def epoch_batches(net: nn.Module, gen: torch.Generator, n: int, device, settings: dict[str, Any], lr: float,
                  bar=None) -> Iterator[tuple[int, torch.Tensor, torch.optim.Optimizer]]:
    """The reference epoch loop (utils.py evaluate_synset): E+1 shuffled passes in batches, SGD with momentum and
    weight decay, lr x0.1 once at `lr_decay_epoch` with a fresh optimizer. Yields (epoch, batch indices,
    optimizer); the caller does the step. One loop for every protocol that trains a network on a set."""
    epochs, bs = settings["epochs"], settings["batch_size"]
    mom, wd = settings["momentum"], settings["weight_decay"]
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    for ep in range(epochs + 1):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, bs):
            yield ep, perm[start:start + bs], optimizer
        if ep == lr_decay_epoch(epochs):
            lr *= 0.1
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=wd)
        if bar is not None:
            bar.update(1)


def _train_one(net, gen, images, labels, dsa, settings, lr, bar=None, micro: int = 0) -> float:
    """utils.py evaluate_synset + epoch('train', ...) for one network; returns the last epoch's train acc (%).

    `micro` > 0 (fast impl only) runs each batch's forward/backward in chunks of `micro` images and sums
    their gradients before the one optimizer step: the same gradient, as every op is per-sample.
    """
    epochs, n = settings["epochs"], images.shape[0]
    amp = settings.get("precision", "fp32")
    net.train()
    correct = 0
    for ep, idx, optimizer in epoch_batches(net, gen, n, images.device, settings, lr, bar):
        x, y = images[idx], labels[idx]
        if dsa is not None:
            x = dsa(x, generator=gen)
        if micro and micro < len(idx):
            optimizer.zero_grad()
            outs = []
            for s in range(0, len(idx), micro):
                with autocast(amp, x.device):
                    out = net(x[s:s + micro]).float()
                (F.cross_entropy(out, y[s:s + micro], reduction="sum") / len(idx)).backward()
                outs.append(out.detach())
            optimizer.step()
            out = torch.cat(outs)
        else:
            with autocast(amp, x.device):
                out = net(x).float()
            loss = F.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if ep == epochs:
            target = y if y.ndim == 1 else y.argmax(1)
            correct += int((out.argmax(1) == target).sum())
    return 100.0 * correct / n


@torch.inference_mode()
def test_accuracy(net: nn.Module, ctx: RunContext, batch: int, precision: str = "fp32") -> float:
    """Accuracy (%) of one network on the whole real test set."""
    net.eval()
    x_all, y_all = ctx.dataset.test_x, ctx.dataset.test_y
    correct = 0
    for s in range(0, x_all.shape[0], batch):
        x = x_all[s:s + batch].to(ctx.device, torch.float32)
        y = y_all[s:s + batch].to(ctx.device)
        with autocast(precision, ctx.device):
            out = net(x)
        correct += int((out.argmax(1) == y).sum())
    return 100.0 * correct / x_all.shape[0]


# --------------------------------------------------------------------------------------------------
# fast: N networks at once
# --------------------------------------------------------------------------------------------------


def _evaluate_stacked(syn, ctx, settings, details) -> tuple[list[float], list[float]]:
    device = ctx.device
    images, labels, dsa = prepare(syn, ctx, settings)
    epochs, n_models = settings["epochs"], settings["n_models"]
    group = settings["max_parallel"] or n_models
    group = min(group, n_models)
    details["max_parallel"] = group
    accs, train_accs = [], []
    bar = _progress(ctx, n_models * (epochs + 1), "evaluate (fast)")
    for first in range(0, n_models, group):
        ids = list(range(first, min(first + group, n_models)))
        nets, gens = zip(*(init_network(ctx, i) for i in ids))
        stacked = StackedConvNet.from_nets(list(nets)).to(device)
        train_accs += train_stacked(stacked, list(gens), images, labels, dsa, settings, _lr(syn, settings), bar)
        accs += test_accuracy_stacked(stacked, ctx, settings["test_batch"], settings["precision"])
    bar.close()
    return accs, train_accs


def _evaluate_threads(syn, ctx, settings, details) -> tuple[list[float], list[float]]:
    """Networks on separate cores: each runs the loop's code on its own core(s), `workers` at a time.

    On a CPU, small convolutions split over 2 OpenMP threads synchronise at every op; giving each core a
    whole network removes that, and keeps the results exactly those of the loop run with one thread.
    """
    prepared = prepare(syn, ctx, settings)
    epochs, n_models = settings["epochs"], settings["n_models"]
    threads = torch.get_num_threads()
    workers = worker_count(n_models, settings["max_parallel"], threads)
    details["max_parallel"] = workers
    details["workers"] = workers  # 1 worker = the loop with torch's usual intra-op threads
    lr = _lr(syn, settings)
    micro = settings["micro_batch"]
    details["micro_batch"] = micro
    bar = _progress(ctx, n_models * (epochs + 1), "evaluate (fast)")

    per_worker = max(1, threads // workers)  # intra-op threads of each worker (1 on a 2-core machine)
    details["threads_per_worker"] = per_worker if workers > 1 else threads
    test_batch = min(settings["test_batch"], micro) if micro else settings["test_batch"]

    def run(i: int) -> tuple[float, float]:
        if workers > 1:
            torch.set_num_threads(per_worker)
        return train_and_test(ctx, i, prepared, settings, lr, bar, micro=micro, test_batch=test_batch)

    try:
        if workers == 1:
            results = [run(i) for i in range(n_models)]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="ddbench-eval") as pool:
                results = list(pool.map(run, range(n_models)))
    finally:
        torch.set_num_threads(threads)
        bar.close()
    return [r[0] for r in results], [r[1] for r in results]


def worker_count(n_models: int, max_parallel: int, threads: int) -> int:
    """How many networks train at once in the threads mode.

    Up to one per core. When the networks do not fill whole rounds of `threads` (5 networks on 2 cores
    would run 2 + 2 + 1, one core idle for the last third), all of them start at once with one thread
    each and the OS shares the cores between them: measured on 2 cores, 5 networks finish 18% sooner
    (docs/evaluation.md). `max_parallel` (memory) caps it either way.
    """
    n = min(max_parallel or n_models, n_models)
    if n > threads and n % threads == 0:
        return threads
    return n


@hookimpl
def register_protocols(register):
    register(DSAProtocol(
        "dsa",
        "standard DSA/DM/MTT evaluation: N fresh ConvNets, DSA on every batch, SGD, 1000 epochs, real test set",
        1000, f"{REF} main_DM.py --epoch_eval_train 1000 (main.py sets 1000 when DSA is on); MTT distill.py 1000",
    ))
    register(DSAProtocol(
        "fast",
        "the dsa protocol with 300 epochs, for smoke runs and pilots",
        300, f"{REF} main.py --epoch_eval_train default 300 (used there without augmentation)",
    ))
