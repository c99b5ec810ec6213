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

import dataclasses
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ddbench import hookimpl
from ddbench.api import DDBenchError, Method, Param, RunContext, SyntheticSet
from ddbench.helpers import config_hash, generator, seeded

from ._common import (DSA_STRATEGY, NO_AUGMENT, Resumable, check_ipc_fits, keep_freed_memory,
                      make_dsa, matching_seconds, progress)
from .mtt_buffer import ExpertBuffer
from .warm_start import check_init, init_param, initial_set
from .workers import map_workers, thread_copy

DISTILL = "GeorgeCazenavette/mtt-distillation distill.py"
BUFFER = "GeorgeCazenavette/mtt-distillation buffer.py"
CHECKPOINT = "mtt_checkpoint.pt"
# settings that change only how the work is laid out (float summation order), not the run
LAYOUT_KEYS = ("micro_batch", "unroll_micro_batch", "workers")


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
                     "distill in ZCA-whitened space (ddbench.host.zca); the set is returned in normalised space"),
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
        from ddbench.helpers import fit_zca, whiten_dataset

        zca = fit_zca(ctx.dataset, ctx.params["zca_eps"], ctx.cache_dir)
        return whiten_dataset(ctx.dataset, zca), zca

    @staticmethod
    def _initial(ctx: RunContext, wctx: RunContext, zca, buffer: ExpertBuffer):
        """(images, labels, provenance, fingerprint): the initial set and the key of the run's checkpoint. Real and
        noise are drawn in the whitened space (distill.py); a stored set is checked against the real data and
        whitened like it."""
        images, labels, provenance = initial_set(ctx, "pix_init", draw=wctx)
        if provenance is not None and zca is not None:
            images = zca.from_normalised(images, ctx.dataset)
        warm = {"init_sha256": provenance["sha256"]} if provenance else {}  # a file enters by its content
        fp = config_hash({"method": "mtt",
                          "params": {k: v for k, v in ctx.params.items()
                                     if k not in ("iterations", "checkpoint_every", "buffer") + LAYOUT_KEYS},
                          "ipc": ctx.ipc, "seed": ctx.seed, "model": ctx.model, "buffer": buffer.key, **warm})
        return images, labels, provenance, fp

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p = ctx.params
        dev = ctx.device
        data, zca = self._data(ctx)
        if torch.device(dev).type == "cpu":
            keep_freed_memory()  # docs/baselines.md#speed: no page faults on every chunk's activations
        wctx = dataclasses.replace(ctx, dataset=data)

        buffer = ExpertBuffer(ctx, data)
        buffer.ensure(p["num_experts"])

        images, labels, provenance, fp = self._initial(ctx, wctx, zca, buffer)
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
    return SyntheticSet(out_images.cpu(), labels.clone(), meta={**meta, "syn_lr": final_lr}, lr=final_lr,
                        generation_seconds=matching_seconds(meta))


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
        net = thread_copy(student)  # functional_call swaps a module's parameters: one module per thread
        ce = F.cross_entropy(functional_call(net, params, (xc,)), yc, reduction="sum") / n
        return torch.autograd.grad(ce, flat, create_graph=True)[0]

    parts = list(zip(x.split(micro_batch), y.split(micro_batch)))
    grads = map_workers(chunk, parts, workers, x.device)
    total = grads[0]
    for g in grads[1:]:
        total = total + g
    return total


# --------------------------------------------------------------------------------------------------
# Expert buffer
# --------------------------------------------------------------------------------------------------




@hookimpl
def register_methods(register):
    register(MTT())
