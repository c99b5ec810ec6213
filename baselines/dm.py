"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Follows `main_DM.py` of VICO-UoE/DatasetCondensation (the ConvNet branch, i.e. instance norm):

    for it in range(Iteration):
        net = fresh randomly initialised ConvNet, parameters frozen
        for every class c:
            real = batch_real random real images of c; syn = the ipc synthetic images of c
            one DSA draw (seeded), applied to both batches (siamese, params shared across the batch)
            loss += || mean(embed(real)) - mean(embed(syn)) ||^2
        SGD(lr_img, momentum 0.5) step on the synthetic images

Differences from the reference script, none of which changes the objective: every random draw of
iteration `it` comes from a generator seeded by (run seed, it), so a run interrupted and resumed from its
checkpoint gives exactly the images of an uninterrupted run; the reference evaluates every 2000
iterations, here evaluation is the host protocol's job, after distillation.

Layout (`impl`, docs/baselines.md#speed): on CPU (`chunked`) the classes run on worker threads with one
intra-op thread each and real images stream through the embedder in micro-batches whose activations stay
in cache; on CUDA (`batched`) all classes go through the embedder in one call and DSA runs once per drawn
group, with no per-class kernel launches. Instance norm and siamese DSA act per sample, so both compute
main_DM.py's loss up to float summation order (tests/test_dm.py compares them with `reference_loss`).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import torch

from ddbench import hookimpl
from ddbench.api import DDBenchError, MatchStep, Method, Objective, Param, RunContext, SyntheticSet
from ddbench.helpers import Deadline, DSAParams, config_hash, dataset_fingerprint, generator, seeded

from ._common import (DSA_STRATEGY, Resumable, check_ipc_fits, class_indices, keep_freed_memory,
                      make_dsa, matching_seconds, progress)
from .warm_start import check_init, init_param, initial_set

REF = "VICO-UoE/DatasetCondensation main_DM.py"
CHECKPOINT = "dm_checkpoint.pt"
LAYOUT_KEYS = ("impl", "micro_batch", "workers")


class DM(Method):
    name = "dm"
    description = ("Distribution Matching (Zhao & Bilen, WACV 2023): match mean ConvNet embeddings of real and "
                   "synthetic images")
    # --budget SECONDS: --ipc images per class, matching iterations (at most `iterations`) until the deadline
    # (docs/baselines.md#dm-under-a-budget): the equal-count, equal-seconds partner of a generated set's refine.
    supports_budget = True
    params = {
        "iterations": Param(20000, f"{REF}: --Iteration 20000", "image updates", min=0),
        "lr_img": Param(1.0, f"{REF}: --lr_img 1.0", "SGD learning rate on the synthetic images", min=0),
        "momentum": Param(0.5, f"{REF}: torch.optim.SGD([image_syn], lr=args.lr_img, momentum=0.5)", min=0, max=1),
        "batch_real": Param(256, f"{REF}: --batch_real 256", "real images per class per iteration", min=1),
        "init": init_param(f"{REF}: --init real; PATH and run:RUN_ID are ddbench's warm starts "
                           "(docs/baselines.md#warm-starts)"),
        "dsa_strategy": Param(DSA_STRATEGY, f"{REF}: --dsa_strategy {DSA_STRATEGY}", "'none' disables DSA"),
        "impl": Param("auto", "docs/baselines.md#speed (ddbench's layout, not the paper's; same objective)",
                      "chunked (CPU: classes on worker threads, real images in micro-batches), batched (CUDA: "
                      "all classes in one embedder call), auto (chunked on CPU, batched on CUDA)",
                      choices=("auto", "chunked", "batched")),
        "micro_batch": Param(16, "docs/evaluation.md (micro_batch=16, measured there; exact up to float order)",
                             "real images per embedder call in the chunked impl; 0 = the class's whole batch", min=0),
        "workers": Param(0, "docs/evaluation.md (one worker per core, one intra-op thread each)",
                         "worker threads of the chunked impl; 0 = torch.get_num_threads()", min=0),
        "checkpoint_every": Param(
            500,
            "docs/baselines.md (ddbench's resume granularity, not in the paper): iterations between checkpoints in the "
            "run's work_dir", min=1
        ),
    }

    def validate(self, ctx: RunContext) -> None:
        check_ipc_fits(ctx)
        check_dsa_strategy(ctx.params["dsa_strategy"])
        check_init(ctx, "init")

    # ----------------------------------------------------------------------------------------------

    def _fingerprint(self, ctx: RunContext, init_sha256: str | None = None) -> str:
        # the layout settings change only float summation order, not the run: a checkpoint stays usable;
        # a warm start's file enters by its content (the same path may hold another set later)
        p = {k: v for k, v in ctx.params.items() if k not in ("iterations", "checkpoint_every") + LAYOUT_KEYS}
        warm = {"init_sha256": init_sha256} if init_sha256 else {}
        return config_hash({"method": "dm", "params": p, "ipc": ctx.ipc, "seed": ctx.seed, "model": ctx.model,
                            "data": dataset_fingerprint(ctx.dataset), **warm})

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p = ctx.params
        ds, dev = ctx.dataset, ctx.device
        n_cls = ds.num_classes
        images, labels, provenance = initial_set(ctx, "init")
        fp = self._fingerprint(ctx, provenance and provenance["sha256"])
        ckpt_path = ctx.work_dir / CHECKPOINT

        if torch.device(dev).type == "cpu":
            keep_freed_memory()  # docs/baselines.md#speed: no page faults on every chunk's activations
        image_syn = images.to(dev).requires_grad_(True)
        opt = torch.optim.SGD([image_syn], lr=p["lr_img"], momentum=p["momentum"])
        ckpt = Resumable(ctx, ckpt_path, fp, "dm", p["iterations"], {"images": image_syn}, {"optimizer": opt},
                         {"labels": labels})
        budget = ctx.budget  # a budget run neither resumes nor checkpoints: its seconds are one clock
        start = ckpt.resume() if budget is None else 0
        losses = ckpt.losses
        save = ckpt.save if budget is None else (lambda it: None)

        step = DMStep(ctx, labels, p)  # the same loss code the `dm` objective gives other methods
        t0 = time.perf_counter()
        # under --budget no iteration starts that would end past the deadline (ddbench.helpers.Deadline, at its
        # default margin: minmax-diffusion's budget_safety), so DM and a generated set's refine stop alike
        deadline = Deadline(None if budget is None else t0 + budget)
        bar = progress(range(start, p["iterations"]), ctx, "dm", total=p["iterations"], initial=start)
        for it in bar:
            if not deadline.allows():
                break
            with deadline.timing():
                loss, grad = step(it, image_syn)
                opt.zero_grad()
                image_syn.grad = grad
                opt.step()
            losses.append(loss / n_cls)  # main_DM.py logs loss / num_classes
            if ctx.progress:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if (it + 1) % p["checkpoint_every"] == 0 or it + 1 == p["iterations"]:
                save(it + 1)
        bar.close()
        seconds = time.perf_counter() - t0
        if start == p["iterations"] and not ckpt_path.exists():
            save(start)  # iterations=0: still leave a checkpoint
        meta = {
            "iterations": p["iterations"],
            "init": p["init"],
            **({"init_provenance": provenance} if provenance else {}),
            "losses": losses,
            "final_loss": losses[-1] if losses else None,
            "resumed_from": ckpt.resumed_from,
            "impl": step.impl,
            "seconds_this_session": seconds,
        }
        if budget is None:
            return SyntheticSet(image_syn.detach().cpu(), labels.clone(), meta=meta,
                                generation_seconds=matching_seconds(meta))
        return _budget_set(ctx, image_syn.detach().cpu(), labels.clone(), meta, deadline.stopped)


def _budget_set(ctx: RunContext, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any],
                stopped: bool) -> SyntheticSet:
    """The set of a --budget run: its IPC declared and its matching seconds counted against the budget."""
    seconds, done = meta["seconds_this_session"], len(meta["losses"])
    meta.update(budget=ctx.budget, iterations_done=done, stopped_at_deadline=stopped,
                budget_honoured=seconds <= ctx.budget)
    ctx.log(f"dm: {done} of {meta['iterations']} iterations in {seconds:.1f}s of budget={ctx.budget:g}s"
            + (" (stopped at the deadline)" if stopped else ""))
    return SyntheticSet(images, labels, meta=meta, ipc=ctx.ipc, generation_seconds=round(seconds, 3))


def check_dsa_strategy(strategy: str) -> None:
    """A DSA strategy the host's DSA accepts, or 'none'; else a one-line DDBenchError."""
    if strategy not in ("none", "None", ""):
        from ddbench.helpers import DSA

        try:
            DSA(strategy=strategy)
        except DDBenchError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DDBenchError(f"dsa_strategy={strategy!r} is not valid: {exc}; e.g. {DSA_STRATEGY} or none") from None


class DMStep:
    """main_DM.py's objective bound to one set: `step(it, images) -> (loss summed over classes, its gradient)`.

    The set's labels may come in any order (a generated set is class-interleaved): the images are put class-major
    for `_iteration` and the gradient back in the caller's order. `settings` holds DM's objective keys
    (batch_real, dsa_strategy, impl, micro_batch, workers); the embedder is `ctx.model`, the draws (ctx.seed, it)'s.
    """

    def __init__(self, ctx: RunContext, labels: torch.Tensor, settings: dict[str, Any]):
        ds = ctx.dataset
        ipc, self.order = class_major(labels, ds.num_classes)
        self.ctx = replace(ctx, params=dict(settings), ipc=ipc)
        self.train_x = ds.train_x.to(ctx.device)
        self.idx_by_class = class_indices(ds)  # CPU indices: the draws stay on the host (one transfer per batch)
        self.dsa = make_dsa(settings["dsa_strategy"])
        self.impl = resolve_impl(settings["impl"], ctx.device)

    def __call__(self, it: int, images: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = images if self.order is None else images[self.order.to(images.device)]
        loss, grad = _iteration(self.ctx, it, x, self.train_x, self.idx_by_class, self.dsa, self.impl)
        if self.order is not None:
            back = torch.empty_like(grad)
            back[self.order.to(grad.device)] = grad
            grad = back
        return float(loss), grad


def class_major(labels: torch.Tensor, num_classes: int, who: str = "dm") -> tuple[int, torch.Tensor | None]:
    """(images per class, the permutation that makes `labels` class-major, or None when they already are);
    DDBenchError naming objective `who` for labels a per-class matching cannot match (soft, outside the classes,
    unbalanced). Shared by every per-class objective (dm, and gradient matching in gm.py)."""
    if labels.ndim != 1 or labels.is_floating_point():
        raise DDBenchError(f"the {who} objective matches hard labels; got labels of shape {tuple(labels.shape)} "
                           f"({labels.dtype})")
    labels = labels.long().cpu()
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DDBenchError(f"the {who} objective needs labels in 0..{num_classes - 1}; got {labels.tolist()[:10]}")
    counts = torch.bincount(labels, minlength=num_classes)
    if int(counts.min()) != int(counts.max()):
        raise DDBenchError(f"the {who} objective needs every class equally often; images per class {counts.tolist()}")
    order = torch.argsort(labels, stable=True)
    return int(counts[0]), None if torch.equal(order, torch.arange(len(labels))) else order


OBJECTIVE_KEYS = ("batch_real", "dsa_strategy", "impl", "micro_batch", "workers")


class DMObjective(Objective):
    """DM's loss for other methods (`ctx.registry.get("objectives", "dm")`): the same `_iteration` DM runs."""

    name = "dm"
    description = ("DM's distribution matching: per class, mean embeddings of real and synthetic images under a fresh "
                   "random ConvNet")
    source = f"Zhao & Bilen, WACV 2023; {REF}"
    params = {
        "lr": Param(1.0, f"{REF}: --lr_img 1.0", "SGD learning rate on the images", min=0),
        "momentum": DM.params["momentum"],
        **{k: DM.params[k] for k in OBJECTIVE_KEYS},
    }

    def validate(self, ctx: RunContext, settings: dict[str, Any]) -> None:
        check_dsa_strategy(settings["dsa_strategy"])

    def bind(self, ctx: RunContext, labels: torch.Tensor, settings: dict[str, Any]) -> MatchStep:
        return DMStep(ctx, labels, settings)


def resolve_impl(impl: str, device) -> str:
    """auto: chunked on CPU, batched elsewhere (docs/baselines.md#speed)."""
    if impl != "auto":
        return impl
    return "chunked" if torch.device(device).type == "cpu" else "batched"


def _iteration(ctx: RunContext, it: int, image_syn: torch.Tensor, train_x: torch.Tensor,
               idx_by_class: list[torch.Tensor], dsa, impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One main_DM.py iteration: (loss summed over classes, its gradient w.r.t. the synthetic images).

    Both implementations make the same random draws in the same order (`_draws`) and compute the same
    objective; they differ only in how the work is laid out (and so in float summation order).
    """
    net, draws = _draws(ctx, it, idx_by_class, dsa, train_x)
    if impl == "chunked":
        return _chunked_loss_grad(net, draws, image_syn, train_x, ctx.ipc, dsa, ctx.params["micro_batch"],
                                  ctx.params["workers"])
    return _batched_loss_grad(net, draws, image_syn, train_x, ctx.ipc, dsa)


def _draws(ctx: RunContext, it: int, idx_by_class: list[torch.Tensor], dsa, train_x: torch.Tensor):
    """Iteration `it`'s fresh frozen embedder and, per class, its real-image indices and siamese DSA draw
    (main_DM.py: one seed per class, the same DSA parameters for real and synthetic)."""
    p, dev = ctx.params, ctx.device
    gen = generator(ctx.seed, "dm", it)
    with seeded(ctx.seed, "dm-net", it):
        net = ctx.build_model()  # a fresh random embedder every iteration (main_DM.py)
    net = net.to(dev).train()
    for q in net.parameters():
        q.requires_grad_(False)
    shape_of = train_x[:1]
    draws = []
    for idx in idx_by_class:
        pick = idx[torch.randperm(len(idx), generator=gen)[: p["batch_real"]]]
        params = dsa.sample(shape_of, gen, siamese=True) if dsa is not None else None
        draws.append((pick, params))
    return net, draws


def _batched_loss_grad(net, draws, image_syn: torch.Tensor, train_x: torch.Tensor, ipc: int, dsa):
    """All classes through the embedder in one call each for real and synthetic images (the CUDA layout:
    few large kernels, no per-class launches or host syncs). DSA runs once per drawn group, not once per
    class: the classes that drew a group are augmented together, each with its own parameters."""
    n_cls = len(draws)
    dev = image_syn.device
    syn_leaf = image_syn.detach().requires_grad_(True)
    real_counts = [len(pick) for pick, _ in draws]
    real = train_x[torch.cat([pick for pick, _ in draws]).to(dev)]  # picks are CPU indices: one transfer
    syn = syn_leaf
    if dsa is not None:
        params = [pr for _, pr in draws]
        real = _apply_grouped(dsa, real, real_counts, params)
        syn = _apply_grouped(dsa, syn, [ipc] * n_cls, params)
    with torch.no_grad():
        mean_real = _class_means(net.embed(real), real_counts)
    mean_syn = _class_means(net.embed(syn), [ipc] * n_cls)
    loss = ((mean_real - mean_syn) ** 2).sum()
    grad, = torch.autograd.grad(loss, syn_leaf)
    return loss.detach(), grad


def _apply_grouped(dsa, x: torch.Tensor, counts: list[int], params: list) -> torch.Tensor:
    """DSA on class-major rows (`counts[c]` rows of class c) with class c's batch-1 parameters, one
    `apply` per drawn group; the same values as augmenting class by class."""
    by_op: dict[str, list[int]] = {}
    for c, pr in enumerate(params):
        by_op.setdefault(pr.op, []).append(c)
    starts = [sum(counts[:c]) for c in range(len(counts))]
    parts = []
    for classes in by_op.values():
        rows = torch.cat([torch.arange(starts[c], starts[c] + counts[c]) for c in classes])
        group = DSAParams.cat([_expand(params[c], counts[c]) for c in classes])
        if len(by_op) == 1:
            return dsa.apply(x, group)  # every class drew the same group: rows already line up
        parts.append((rows, dsa.apply(x[rows.to(x.device)], group)))
    order = torch.cat([rows for rows, _ in parts]).argsort().to(x.device)  # back to class-major order
    return torch.cat([out for _, out in parts])[order]


def _expand(params, n: int):
    """Batch-1 DSA parameters repeated for `n` rows (what `apply` broadcasts for one class)."""
    return DSAParams([(name, {k: v.expand(n, *v.shape[1:]) for k, v in vals.items()}) for name, vals in params.ops], n)


def _class_means(emb: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Per-class mean rows of class-major `emb` (`counts[c]` rows of class c)."""
    row_cls = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts)).to(emb.device)
    sums = emb.new_zeros((len(counts), emb.shape[1])).index_add(0, row_cls, emb)
    return sums / torch.tensor(counts, dtype=emb.dtype).to(emb.device)[:, None]


def _chunked_loss_grad(net, draws, image_syn: torch.Tensor, train_x: torch.Tensor, ipc: int, dsa,
                       micro_batch: int, workers: int):
    """The CPU layout (docs/evaluation.md): classes run on worker threads with one intra-op thread each
    (no OpenMP barrier per op), and real images stream through the embedder in chunks of `micro_batch`
    whose activations stay in cache (main_DM.py streams one class of 256 at a time; the batched layout
    allocates the first layer's activations of every class at once)."""
    threads = torch.get_num_threads()
    n_workers = min(len(draws), workers or threads) if image_syn.device.type == "cpu" else 1
    syn = image_syn.detach()

    def one(c: int):
        if n_workers > 1:
            torch.set_num_threads(max(1, threads // n_workers))
        pick, params = draws[c]
        return _class_loss_grad(net, train_x, pick, syn[c * ipc:(c + 1) * ipc], params, dsa, micro_batch)

    try:
        if n_workers <= 1:
            results = [one(c) for c in range(len(draws))]
        else:
            with ThreadPoolExecutor(n_workers, thread_name_prefix="ddbench-dm") as pool:
                results = list(pool.map(one, range(len(draws))))
    finally:
        torch.set_num_threads(threads)
    loss = torch.stack([r[0] for r in results]).sum()
    return loss, torch.cat([r[1] for r in results])


def _class_loss_grad(net, train_x: torch.Tensor, pick: torch.Tensor, syn_c: torch.Tensor, params, dsa,
                     micro_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c's term ||mean embed(real) - mean embed(syn)||^2 and its gradient w.r.t. syn_c; the real
    mean is a sum over chunks (no graph kept: the embedder is frozen and real images are constants); the
    synthetic images also go through in chunks, whose graphs are kept for the one backward."""
    with torch.no_grad():
        total = None
        for part in pick.split(micro_batch or len(pick)):
            x = train_x[part]
            if dsa is not None:
                x = dsa.apply(x, params)
            s = net.embed(x).sum(0)
            total = s if total is None else total + s
        mean_real = total / len(pick)
    leaf = syn_c.detach().requires_grad_(True)
    x = dsa.apply(leaf, params) if dsa is not None else leaf
    # synthetic images in chunks too: each op of the forward and of its backward works on a chunk
    emb = torch.cat([net.embed(part) for part in x.split(micro_batch or len(x))])
    loss = ((mean_real - emb.mean(0)) ** 2).sum()
    grad, = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def reference_loss(ctx: RunContext, it: int, image_syn: torch.Tensor, train_x: torch.Tensor,
                   idx_by_class: list[torch.Tensor], dsa) -> torch.Tensor:
    """main_DM.py's loop written plainly (class by class, whole batches, autograd through everything):
    what the tests compare both implementations with."""
    net, draws = _draws(ctx, it, idx_by_class, dsa, train_x)
    ipc = ctx.ipc
    loss = image_syn.new_zeros(())
    for c, (pick, params) in enumerate(draws):
        real, syn = train_x[pick], image_syn[c * ipc:(c + 1) * ipc]
        if dsa is not None:
            real, syn = dsa.apply(real, params), dsa.apply(syn, params)
        loss = loss + ((net.embed(real).detach().mean(0) - net.embed(syn).mean(0)) ** 2).sum()
    return loss


@hookimpl
def register_methods(register):
    register(DM())


@hookimpl
def register_objectives(register):
    register(DMObjective())
