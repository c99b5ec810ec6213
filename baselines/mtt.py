"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Follows GeorgeCazenavette/mtt-distillation:

* `buffer.py` (experts): train `num_experts` ConvNets on the real training set, SGD lr 0.01, batch 256,
  momentum 0, L2 0, DSA on every batch, for `train_epochs` epochs, saving the parameters after every
  epoch (and at initialisation). Here the buffer is a cache under `ctx.cache_dir/mtt_buffers/`, keyed by
  dataset (name and a fingerprint of its pixels), network, seed and every expert setting; it is built
  incrementally, one file per finished expert written atomically, so an interrupted build keeps its
  experts and a later run only trains the missing ones. Expert i is seeded by (seed, i), so a rebuilt
  expert is the same expert. Every file is validated when a run starts (readable, same key, shape
  (train_epochs + 1, num_params), finite, SHA-256 of the trajectory): a bad one is retrained
  (`buffer=auto`, logged) or is an error (`buffer=require`), never used.
* `distill.py` (distillation): per iteration pick an expert and a start epoch uniformly in
  [0, max_start_epoch), start a student at the expert's parameters of that epoch, take `syn_steps` SGD
  steps on (DSA-augmented) synthetic mini-batches with the learnable lr `syn_lr` (initialised to
  lr_teacher), and minimise ||θ_student − θ_target||² / ||θ_start − θ_target||² with θ_target the expert
  `expert_epochs` later; SGD (momentum 0.5) on the images (lr_img) and on syn_lr (lr_lr). The student is
  one flat parameter vector unrolled through `torch.func.functional_call`, so the graph through all
  syn_steps updates is explicit (the reference uses its `ReparamModule` for the same purpose).

Differences from the reference, stated: experts are drawn uniformly from the whole buffer each
iteration (the reference's `--load_all` mode; its default streams shuffled files of 10 experts); experts
do not evaluate on the test set after every epoch (only logging in the reference); the optional
`expert_images_per_class` trains experts on a per-class subset, which is a CPU economy, not the paper.

Layout on CPU (docs/baselines.md#speed; none of it changes results beyond float summation order, none of it
is in the buffer key): expert batches run in `micro_batch` chunks with summed gradients; missing experts
train one per worker thread (or one expert's chunks are shared among the workers); glibc keeps freed memory
(`keep_freed_memory`); `unroll_micro_batch` optionally chunks each unrolled step the same way.

Memory: the unrolled graph keeps, for each of the syn_steps steps, the student parameter vector (P
floats; P ≈ 0.32 M for ConvNet-3 on 28x28x1, 0.32 M on 32x32x3) and the activations of the forward and
its double backward for batch_syn images (about 2.2 M floats per 28x28 image for ConvNet-3, more for
32x32x3). So memory grows linearly in syn_steps × batch_syn (batch_syn = num_classes × IPC by default):
CIFAR-10 IPC 50 with syn_steps 30 does not fit a 24 GB GPU without `batch_syn`. See docs/baselines.md.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ddbench import hookimpl
from ddbench.api import DDBenchError, Method, Param, RunContext, SyntheticSet

from ddbench.atomic import atomic_write_json

from ._common import (
    DSA_STRATEGY,
    NO_AUGMENT,
    Resumable,
    atomic_save,
    check_ipc_fits,
    class_indices,
    dataset_fingerprint,
    fingerprint,
    generator,
    keep_freed_memory,
    make_dsa,
    progress,
    seeded,
    try_load,
)
from .warm_start import check_init, init_param, initial_set

DISTILL = "GeorgeCazenavette/mtt-distillation distill.py"
BUFFER = "GeorgeCazenavette/mtt-distillation buffer.py"
CHECKPOINT = "mtt_checkpoint.pt"
BUFFER_FORMAT = 1
# settings that define the expert buffer (part of its cache key)
# settings that change only how the work is laid out (float summation order), not the run
LAYOUT_KEYS = ("micro_batch", "unroll_micro_batch", "workers")
_INIT_LOCK = threading.Lock()
EXPERT_KEYS = ("train_epochs", "expert_lr", "expert_batch", "expert_momentum", "expert_l2",
               "expert_images_per_class", "dsa_strategy", "zca", "zca_eps")


class MTT(Method):
    name = "mtt"
    description = ("Matching Training Trajectories (Cazenavette et al., CVPR 2022): unrolled student steps matched to "
                   "expert trajectories")
    params = {
        # distillation (distill.py)
        "iterations": Param(5000, f"{DISTILL}: --Iteration 5000", "image/lr updates", min=0),
        "lr_img": Param(1000.0, f"{DISTILL}: --lr_img 1000", "SGD lr on the synthetic images", min=0),
        "lr_lr": Param(1e-05, f"{DISTILL}: --lr_lr 1e-05", "SGD lr on the learnable synthetic lr", min=0),
        "lr_teacher": Param(0.01, f"{DISTILL}: --lr_teacher 0.01",
                            "initial value of the learnable synthetic lr", min=0),
        "momentum": Param(0.5,
                          f"{DISTILL}: SGD([image_syn], momentum=0.5) and SGD([syn_lr], momentum=0.5)", min=0, max=1),
        "syn_steps": Param(20, f"{DISTILL}: --syn_steps 20", "student steps unrolled per iteration", min=1),
        "expert_epochs": Param(3, f"{DISTILL}: --expert_epochs 3",
                               "target = expert this many epochs after the start", min=1),
        "max_start_epoch": Param(25, f"{DISTILL}: --max_start_epoch 25",
                                 "start epoch drawn in [0, max_start_epoch)", min=1),
        "batch_syn": Param(0, f"{DISTILL}: --batch_syn None = all synthetic images (0 here)",
                           "synthetic mini-batch per step; 0 = all", min=0),
        "pix_init": init_param(f"{DISTILL}: --pix_init real; PATH and run:RUN_ID are ddbench's warm starts "
                               "(docs/baselines.md#warm-starts)"),
        "dsa_strategy": Param(DSA_STRATEGY,
                              f"{DISTILL} / {BUFFER}: --dsa True --dsa_strategy {DSA_STRATEGY}", "'none' disables DSA"),
        # experts (buffer.py)
        "num_experts": Param(100, f"{BUFFER}: --num_experts 100", "expert trajectories in the buffer", min=1),
        "train_epochs": Param(50, f"{BUFFER}: --train_epochs 50", "epochs per expert", min=1),
        "expert_lr": Param(0.01, f"{BUFFER}: --lr_teacher 0.01", "expert SGD lr", min=0),
        "expert_batch": Param(256, f"{BUFFER}: --batch_train 256", "expert batch size", min=1),
        "expert_momentum": Param(0.0, f"{BUFFER}: --mom 0", "expert SGD momentum", min=0, max=1),
        "expert_l2": Param(0.0, f"{BUFFER}: --l2 0", "expert weight decay", min=0),
        "expert_images_per_class": Param(
            0,
            "docs/baselines.md (MTT: a ddbench CPU economy, not in the paper): experts train on this many real images "
            "per class; 0 = all", min=0
        ),
        "zca": Param(False, f"{BUFFER} / {DISTILL}: --zca (off by default; the README uses it for CIFAR)",
                     "distill in ZCA-whitened space (ddbench.zca); the set is returned in normalised space"),
        "zca_eps": Param(0.1, "GeorgeCazenavette/mtt-distillation utils.py: K.enhance.ZCAWhitening(eps=0.1)", min=0),
        "buffer": Param("auto",
                        "docs/baselines.md (MTT, ddbench's setting): auto = build missing/corrupt experts; "
                        "require = error unless complete",
                        choices=("auto", "require")),
        "micro_batch": Param(16, "docs/evaluation.md (micro_batch=16, measured there; exact up to float order)",
                             "images per forward/backward chunk when training experts (gradients summed); "
                             "0 = the whole batch", min=0),
        "unroll_micro_batch": Param(0, "docs/baselines.md#speed (ddbench's layout; exact up to float order)",
                                    "synthetic images per forward/grad chunk of an unrolled step (gradients summed); "
                                    "0 = the whole batch", min=0),
        "workers": Param(0, "docs/evaluation.md (one worker per core, one intra-op thread each)",
                         "CPU worker threads (one intra-op thread each) for experts trained at once and for unroll "
                         "chunks; 0 = torch.get_num_threads()", min=0),
        "checkpoint_every": Param(100,
                                  "docs/baselines.md (ddbench's resume granularity, not in the paper): "
                                  "iterations between checkpoints in work_dir", min=1),
    }

    # ----------------------------------------------------------------------------------------------
    # checks

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)
        p = ctx.params
        last_start = p["max_start_epoch"] - 1
        need = last_start + p["expert_epochs"]
        if need > p["train_epochs"]:
            raise DDBenchError(
                f"max_start_epoch={p['max_start_epoch']} with expert_epochs={p['expert_epochs']} needs expert "
                f"epoch {need}, but the buffer's experts train for train_epochs={p['train_epochs']}; "
                f"allowed: max_start_epoch - 1 + expert_epochs <= train_epochs"
            )
        if p["dsa_strategy"] not in NO_AUGMENT:
            make_dsa(p["dsa_strategy"])
        if p["zca"] and not p["zca_eps"] > 0:
            raise DDBenchError(f"zca_eps={p['zca_eps']!r} must be > 0 when zca=true")
        check_init(ctx, "pix_init")
        if p["buffer"] == "require":
            buf = ExpertBuffer(ctx, None)
            bad = buf.problems(range(p["num_experts"]))
            if bad:
                raise DDBenchError(f"buffer=require but the expert buffer {buf.dir} is not complete: {bad[0]}"
                                   f" ({len(bad)} of {p['num_experts']} experts missing or invalid); "
                                   "use buffer=auto to build it")

    # ----------------------------------------------------------------------------------------------

    def _data(self, ctx: RunContext):
        """The dataset the method works on: the real one, or its ZCA-whitened version, and the ZCA."""
        if not ctx.params["zca"]:
            return ctx.dataset, None
        from ddbench.zca import fit_zca, whiten_dataset

        zca = fit_zca(ctx.dataset, ctx.params["zca_eps"], ctx.cache_dir)
        return whiten_dataset(ctx.dataset, zca), zca

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p = ctx.params
        dev = ctx.device
        data, zca = self._data(ctx)
        if torch.device(dev).type == "cpu":
            keep_freed_memory()  # docs/baselines.md#speed: no page faults on every chunk's activations
        wctx = dataclasses.replace(ctx, dataset=data)

        buffer = ExpertBuffer(ctx, data)
        buffer.ensure(p["num_experts"])

        # real / noise are drawn in the whitened space (distill.py); a stored set is checked against the real data
        # and whitened like it
        images, labels, provenance = initial_set(ctx, "pix_init", draw=wctx)
        if provenance is not None and zca is not None:
            images = zca.from_normalised(images, ctx.dataset)
        warm = {"init_sha256": provenance["sha256"]} if provenance else {}  # a file enters by its content
        fp = fingerprint({"method": "mtt",
                          "params": {k: v for k, v in p.items()
                                     if k not in ("iterations", "checkpoint_every", "buffer") + LAYOUT_KEYS},
                          "ipc": ctx.ipc, "seed": ctx.seed, "model": ctx.model, "buffer": buffer.key, **warm})
        ckpt_path = ctx.work_dir / CHECKPOINT

        labels_dev = labels.to(dev)
        image_syn = images.to(dev).requires_grad_(True)
        syn_lr = torch.tensor(float(p["lr_teacher"]), device=dev).requires_grad_(True)
        opt_img = torch.optim.SGD([image_syn], lr=p["lr_img"], momentum=p["momentum"])
        opt_lr = torch.optim.SGD([syn_lr], lr=p["lr_lr"], momentum=p["momentum"])
        ckpt = Resumable(ctx, ckpt_path, fp, "mtt", p["iterations"], {"images": image_syn, "syn_lr": syn_lr},
                         {"opt_img": opt_img, "opt_lr": opt_lr}, {"labels": labels})
        start = ckpt.resume()
        losses, save = ckpt.losses, ckpt.save

        with seeded(ctx.seed, "mtt-student"):
            student = ctx.build_model().to(dev).train()
        names, shapes, sizes = buffer.layout(student)

        def as_params(flat: torch.Tensor) -> dict[str, torch.Tensor]:
            return {n: t.view(s) for n, s, t in zip(names, shapes, torch.split(flat, sizes))}

        dsa = make_dsa(p["dsa_strategy"])
        n_syn = len(labels)
        batch_syn = p["batch_syn"] or n_syn
        t0 = time.perf_counter()
        bar = progress(range(start, p["iterations"]), ctx, "mtt", total=p["iterations"], initial=start)
        for it in bar:
            loss = _trajectory_loss(ctx, it, buffer, student, as_params, image_syn, labels_dev, syn_lr, dsa, batch_syn)
            opt_img.zero_grad()
            opt_lr.zero_grad()
            loss.backward()
            opt_img.step()
            opt_lr.step()
            losses.append(loss.item())
            if ctx.progress:
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{syn_lr.item():.4g}")
            if (it + 1) % p["checkpoint_every"] == 0 or it + 1 == p["iterations"]:
                save(it + 1)

        meta = {"iterations": p["iterations"], "pix_init": p["pix_init"],
                **({"init_provenance": provenance} if provenance else {}), "losses": losses,
                "final_loss": losses[-1] if losses else None,
                "resumed_from": ckpt.resumed_from, "buffer": str(buffer.dir), "zca": bool(zca is not None),
                "seconds_this_session": time.perf_counter() - t0}
        return _result(ctx, image_syn, labels, syn_lr, zca, meta)


def _result(ctx: RunContext, image_syn: torch.Tensor, labels: torch.Tensor, syn_lr: torch.Tensor, zca,
            meta: dict) -> SyntheticSet:
    """The set in the dataset's normalised space (ZCA undone) with its learned evaluation lr."""
    final_lr = float(syn_lr.detach())
    if not final_lr > 0:
        ctx.log(f"mtt: the learned lr went to {final_lr:.3g} (<= 0); lower lr_lr")
    out_images = image_syn.detach()
    if zca is not None:
        out_images = zca.to_normalised(out_images, ctx.dataset)
    return SyntheticSet(out_images.cpu(), labels.clone(), meta={**meta, "syn_lr": final_lr}, lr=final_lr)


def _trajectory_loss(ctx: RunContext, it: int, buffer: "ExpertBuffer", student, as_params, image_syn: torch.Tensor,
                     labels: torch.Tensor, syn_lr: torch.Tensor, dsa, batch_syn: int) -> torch.Tensor:
    """One distill.py iteration: from a random expert's epoch, `syn_steps` student steps on the synthetic set,
    then the distance to the expert `expert_epochs` later, normalised by the expert's own move."""
    p, dev, n_syn = ctx.params, ctx.device, len(labels)
    gen = generator(ctx.seed, "mtt", it)
    expert = int(torch.randint(p["num_experts"], (1,), generator=gen))
    start_epoch = int(torch.randint(p["max_start_epoch"], (1,), generator=gen))
    theta_start, theta_target = buffer.pair(expert, start_epoch, start_epoch + p["expert_epochs"], dev)
    params = [theta_start.clone().requires_grad_(True)]
    chunks: list[torch.Tensor] = []
    for _ in range(p["syn_steps"]):
        if not chunks:
            chunks = list(torch.randperm(n_syn, generator=gen).to(dev).split(batch_syn))
        ind = chunks.pop()
        x = image_syn[ind]
        if dsa is not None:
            x = dsa(x, gen)  # per-sample DSA, not siamese (distill.py: DiffAugment without seed)
        grad = _step_grad(student, as_params, params[-1], x, labels[ind], p["unroll_micro_batch"], p["workers"])
        params.append(params[-1] - syn_lr * grad)
    # distill.py: mse(sum)/num_params over mse(sum)/num_params; num_params cancels
    return ((params[-1] - theta_target) ** 2).sum() / ((theta_start - theta_target) ** 2).sum()


def _step_grad(student, as_params, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, micro_batch: int,
               workers: int) -> torch.Tensor:
    """d mean-CE / d flat with its graph kept (create_graph): one student step's gradient.

    With `micro_batch`, the batch's mean cross-entropy is taken chunk by chunk (sum over the chunk / batch
    size) and the chunk gradients are summed: the same gradient up to float summation order (instance norm
    and DSA are per sample), computed in cache-sized pieces, on CPU optionally on worker threads with one
    intra-op thread each (docs/baselines.md#speed)."""
    if not micro_batch or micro_batch >= len(y):
        ce = F.cross_entropy(functional_call(student, as_params(flat), (x,)), y)
        return torch.autograd.grad(ce, flat, create_graph=True)[0]
    n = len(y)
    params = as_params(flat)

    def chunk(xy):
        xc, yc = xy
        net = _thread_copy(student)  # functional_call swaps a module's parameters: one module per thread
        ce = F.cross_entropy(functional_call(net, params, (xc,)), yc, reduction="sum") / n
        return torch.autograd.grad(ce, flat, create_graph=True)[0]

    parts = list(zip(x.split(micro_batch), y.split(micro_batch)))
    grads = _map_workers(chunk, parts, workers, x.device)
    total = grads[0]
    for g in grads[1:]:
        total = total + g
    return total


# --------------------------------------------------------------------------------------------------
# Expert buffer
# --------------------------------------------------------------------------------------------------


class ExpertBuffer:
    """Expert trajectories cached on disk: `<cache>/mtt_buffers/<dataset>-<model>-<key>/expert_0007.pt`.

    Each file holds {"key", "index", "trajectory": float32 (train_epochs + 1, P), "sha256"} and is written
    atomically when its expert finishes; `manifest.json` records the settings for humans.
    """

    def __init__(self, ctx: RunContext, data=None):
        """ctx: the run's context (real dataset); data: what experts train on (the ZCA-whitened set, if zca)."""
        self.ctx = ctx
        self.data = data if data is not None else ctx.dataset
        p = ctx.params
        ds = ctx.dataset
        self.settings = {
            "format": BUFFER_FORMAT,
            "dataset": ds.name,
            "data": dataset_fingerprint(ds),
            "model": ctx.model,
            "seed": ctx.seed,
            **{k: p[k] for k in EXPERT_KEYS},
        }
        if not p["zca"]:
            self.settings["zca_eps"] = None
        self.key = fingerprint(self.settings)
        base = ds.name + ("+zca" if p["zca"] else "")
        self.dir = Path(ctx.cache_dir) / "mtt_buffers" / f"{base}-{ctx.model}-{self.key}".replace("/", "_")
        self.epochs = p["train_epochs"]
        self._num_params: int | None = None
        self._cache: dict[int, torch.Tensor] = {}

    def path(self, i: int) -> Path:
        return self.dir / f"expert_{i:04d}.pt"

    def num_params(self) -> int:
        if self._num_params is None:
            with seeded(0):
                net = self.ctx.build_model()
            self._num_params = sum(q.numel() for q in net.parameters())
        return self._num_params

    def layout(self, net: torch.nn.Module):
        names = [n for n, _ in net.named_parameters()]
        shapes = [q.shape for _, q in net.named_parameters()]
        sizes = [q.numel() for _, q in net.named_parameters()]
        if sum(sizes) != self.num_params():
            raise DDBenchError(f"model {self.ctx.model!r} has {sum(sizes)} parameters, the buffer {self.num_params()}")
        return names, shapes, sizes

    def check(self, i: int) -> str | None:
        """None if expert i is present and valid, else why not."""
        path = self.path(i)
        state, why = try_load(path, mmap=True)  # memory-mapped: a large buffer need not fit in RAM
        if state is None:
            return f"expert {i}: {path} {why}"
        want = (self.epochs + 1, self.num_params())
        if not isinstance(state, dict) or state.get("key") != self.key or state.get("index") != i:
            return f"expert {i}: {path} was written for other settings"
        traj = state.get("trajectory")
        if not isinstance(traj, torch.Tensor) or tuple(traj.shape) != want:
            got = tuple(traj.shape) if isinstance(traj, torch.Tensor) else type(traj).__name__
            return f"expert {i}: {path} has shape {got}, expected {want}"
        if not torch.isfinite(traj).all():
            return f"expert {i}: {path} holds non-finite parameters"
        if _digest(traj) != state.get("sha256"):
            return f"expert {i}: {path} fails its checksum"
        self._cache[i] = traj
        return None

    def problems(self, indices) -> list[str]:
        return [why for i in indices if (why := self.check(i)) is not None]

    def ensure(self, n: int) -> None:
        """Make experts 0..n-1 available: validate what is there, train what is missing or invalid."""
        todo = []
        for i in range(n):
            why = self.check(i)
            if why is not None:
                if self.path(i).exists():
                    if self.ctx.params["buffer"] == "require":
                        raise DDBenchError(f"buffer=require: {why}; use buffer=auto to rebuild it")
                    self.ctx.log(f"mtt: {why}; retraining it")
                elif self.ctx.params["buffer"] == "require":
                    raise DDBenchError(f"buffer=require: {why}; use buffer=auto to build it")
                todo.append(i)
        if not todo:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            atomic_write_json({**self.settings, "num_params": self.num_params()}, manifest, indent=1)
        self.ctx.log(f"mtt: training {len(todo)} expert(s) into {self.dir}")
        real_x, real_y = self._expert_data()
        bar = progress(todo, self.ctx, "mtt experts")

        threads = torch.get_num_threads()
        at_once = min(len(todo), self.ctx.params["workers"] or threads)
        # several experts: one per worker thread; one expert (or fewer experts than cores): its batches'
        # chunks are split over the worker threads instead (docs/baselines.md#speed)
        inner = 1 if at_once > 1 else self.ctx.params["workers"]

        def build(i: int) -> None:
            traj = self._train_expert(i, real_x, real_y, inner)
            atomic_save({"key": self.key, "index": i, "trajectory": traj, "sha256": _digest(traj)}, self.path(i))
            self._cache[i] = traj
            bar.update(1)

        _map_workers(build, todo, self.ctx.params["workers"], self.ctx.device)
        bar.close()

    def pair(self, i: int, a: int, b: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        traj = self._cache.get(i)
        if traj is None:
            why = self.check(i)
            if why is not None:
                raise DDBenchError(f"expert buffer changed during the run: {why}")
            traj = self._cache[i]
        return traj[a].to(device), traj[b].to(device)

    def _expert_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.data
        k = self.ctx.params["expert_images_per_class"]
        if not k:
            return ds.train_x, ds.train_y
        g = generator(self.ctx.seed, "mtt-expert-subset")
        pick = torch.cat([idx[torch.randperm(len(idx), generator=g)[:k]] for idx in class_indices(ds)])
        return ds.train_x[pick], ds.train_y[pick]

    def _train_expert(self, i: int, real_x: torch.Tensor, real_y: torch.Tensor, workers: int = 1) -> torch.Tensor:
        """buffer.py: SGD(lr_teacher, momentum mom, weight_decay l2), DSA on every batch, params every epoch.

        Each batch's forward/backward runs in chunks of `micro_batch` images whose gradients are summed
        before the one optimizer step (docs/evaluation.md: instance norm and DSA act per sample, so the
        step is the same up to float summation order, and small chunks stay in cache). With `workers` > 1
        (CPU) the chunks of each batch are shared among that many threads of one intra-op thread each."""
        ctx, p, dev = self.ctx, self.ctx.params, self.ctx.device
        with _INIT_LOCK, seeded(ctx.seed, "mtt-expert", i):  # seeds torch's global RNG: one thread at a time
            net = ctx.build_model()
        net = net.to(dev).train()
        opt = torch.optim.SGD(net.parameters(), lr=p["expert_lr"], momentum=p["expert_momentum"],
                              weight_decay=p["expert_l2"])
        dsa = make_dsa(p["dsa_strategy"])
        gen = generator(ctx.seed, "mtt-expert-data", i)
        x_all, y_all = real_x.to(dev), real_y.to(dev)
        snaps = [_flat(net)]
        n = len(y_all)
        for e in progress(range(p["train_epochs"]), ctx, f"expert {i}"):
            correct, total = 0, 0
            for ind in torch.randperm(n, generator=gen).to(dev).split(p["expert_batch"]):
                x, y = x_all[ind], y_all[ind]
                if dsa is not None:
                    x = dsa(x, gen)
                opt.zero_grad()
                correct += _accumulate_grads(net, x, y, p["micro_batch"], workers)
                opt.step()
                total += len(y)
            snaps.append(_flat(net))
            ctx.log(f"mtt: expert {i} epoch {e + 1}/{p['train_epochs']} train acc {correct / total:.3f}")
        return torch.stack(snaps)


def _accumulate_grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, micro_batch: int,
                      workers: int = 1) -> int:
    """Gradients of the batch's mean cross-entropy, chunk by chunk, into the parameters' .grad; the number
    correct. With several workers each takes a contiguous share of the chunks (the module is only read:
    its gradients come back through autograd.grad and are summed here)."""
    chunks = list(zip(x.split(micro_batch or len(y)), y.split(micro_batch or len(y))))
    n = len(y)
    params = list(net.parameters())
    share = -(-len(chunks) // max(1, min(workers or torch.get_num_threads(), len(chunks))))
    groups = [chunks[k:k + share] for k in range(0, len(chunks), share)]

    def run(group):
        grads, correct = None, 0
        for xc, yc in group:
            out = net(xc)
            g = torch.autograd.grad(F.cross_entropy(out, yc, reduction="sum") / n, params)
            grads = list(g) if grads is None else [a + b for a, b in zip(grads, g)]
            correct += int((out.argmax(1) == yc).sum())
        return grads, correct

    results = _map_workers(run, groups, len(groups), x.device)
    for k, q in enumerate(params):
        total = results[0][0][k]
        for grads, _ in results[1:]:
            total = total + grads[k]
        q.grad = total
    return sum(c for _, c in results)


_LOCAL = threading.local()


def _thread_copy(module: torch.nn.Module) -> torch.nn.Module:
    """This thread's own copy of `module` (the main thread uses the module itself)."""
    if threading.current_thread() is threading.main_thread():
        return module
    copies = getattr(_LOCAL, "copies", None)
    if copies is None:
        copies = _LOCAL.copies = {}
    if id(module) not in copies:
        copies[id(module)] = (module, copy.deepcopy(module))
    return copies[id(module)][1]


def _map_workers(fn, items: list, workers: int, device) -> list:
    """[fn(item) ...] in order: on CPU on `workers` threads (0 = torch.get_num_threads()) with one intra-op
    thread each (docs/evaluation.md: no OpenMP barrier per small op); elsewhere, or with one worker, in turn."""
    threads = torch.get_num_threads()
    n = min(len(items), workers or threads) if torch.device(device).type == "cpu" else 1
    if n <= 1:
        return [fn(item) for item in items]

    def one(item):
        torch.set_num_threads(max(1, threads // n))
        return fn(item)

    try:
        with ThreadPoolExecutor(n, thread_name_prefix="ddbench-mtt") as pool:
            return list(pool.map(one, items))
    finally:
        torch.set_num_threads(threads)


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([q.detach().reshape(-1) for q in net.parameters()]).float().cpu()


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().cpu().numpy().tobytes()).hexdigest()


@hookimpl
def register_methods(register):
    register(MTT())
