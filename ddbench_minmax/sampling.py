"""How a minmax-diffusion run samples its set: the k-means prototypes, the sampler's request, the pool and its
selection, and what a budget keeps back for them."""
from __future__ import annotations

import time
from typing import Any

import torch

from ddbench.api import RunContext, SampleRequest, resolve_params
from ddbench.helpers import (UnsafeFile, atomic_save, call_plugin, config_hash, dataset_fingerprint, derive_seed,
                             drop_refused, load_tensors, select_pool)

from . import refine
from .checks import BudgetNotMet, PluginOutputError, check_samples
from .generator import sample_shape, to_denoiser_space
from .prototypes import class_prototypes
from .settings import guidance_of
from .train import from_signed_pixels, to_signed_pixels

# Under --budget the prototypes are made before the clock, with k-means' cost growing with k: k is capped here
# (ddbench's bound on that set-up; rounds past k cycle through the prototypes, as a fixed IPC's pool rounds do):
# docs/minmax.md#budgets-and-prototypes.
BUDGET_PROTOTYPES = 50


def prototype_count(ctx: RunContext, ipc: int, pool: int) -> int:
    """Prototypes per class to compute: the IPC; under a budget the planned IPC per kept image, capped at
    BUDGET_PROTOTYPES and the smallest class (said in the log when capped)."""
    if ctx.budget is None or ctx.params["prototypes"] == "none":
        return ipc
    planned = max(1, ipc // pool)
    smallest = int(torch.bincount(ctx.dataset.train_y.long(), minlength=ctx.dataset.num_classes).min())
    k = max(1, min(planned, BUDGET_PROTOTYPES, smallest))
    if k < planned:
        ctx.log(f"minmax-diffusion: {k} k-means prototypes per class, not the {planned} the budget plans (capped at "
                f"{min(BUDGET_PROTOTYPES, smallest)}: they are made before the clock); rounds cycle through them")
    return k


def sample_set(ctx: RunContext, sampler, generator, decision, thr):
    """Sample the set (over-generating `pool` candidates per kept image when pool > 1, then selecting)."""
    p, ds = ctx.params, ctx.dataset
    pool = p["pool"]
    # Prototypes are computed (and cached) before the budget's clock starts, as D4M's gen_prototype.py runs
    # before its generation script: like the fine-tuned generator, they are made from the training data once.
    t_proto = time.perf_counter()
    # one prototype per kept image: a fixed IPC's rounds cycle through them `pool` times; under a budget the
    # policy's predicted rounds are divided by the pool
    prototypes = to_denoiser_space(  # VAE-encoded for a latent base
        generator, load_prototypes(ctx, prototype_count(ctx, decision.ipc, pool)))
    extra: dict[str, Any] = {"prototype_seconds": round(time.perf_counter() - t_proto, 3)}
    reserve = selection_reserve(ctx, decision, thr) if pool > 1 and ctx.budget is not None else 0.0
    held = ctx.budget is not None and decision.mode == "ipc"  # a policy holding --ipc under the budget
    kept_for_refine = refine_reserve(ctx, decision, thr, held, reserve, extra)
    start = time.perf_counter()
    deadline = None if ctx.budget is None else start + ctx.budget - reserve - kept_for_refine
    # under a budget: a cap, unless the policy holds the count
    ipc = p["max_ipc"] * pool if ctx.budget is not None and not held else decision.ipc * pool
    request = sample_request(ctx, generator, decision.steps, ipc, seed=ctx.seed, deadline=deadline, throughput=thr,
                            prototypes=prototypes)
    out = call_plugin(ctx.registry, "samplers", p["sampler"], "generate()",
                      lambda: sampler.generate(generator, request))
    seconds = time.perf_counter() - start  # timed here: a sampler's stats are free metadata
    made = check_samples(out, p["sampler"], ds.num_classes, (ds.channels, ds.image_size, ds.image_size))
    x, y, stats = out.images, out.labels.long(), dict(out.stats)
    check_count(ctx, decision, made, ipc, held, seconds)
    keep = made // pool
    if keep < 1:
        raise budget_not_met(ctx, thr, decision.steps, stats, seconds, pool)
    stats.update(ipc=made, images=int(x.shape[0]), seconds=round(seconds, 3),
                 images_per_second=round(x.shape[0] / seconds, 3) if seconds > 0 else None)
    if pool > 1:
        t_sel = time.perf_counter()
        idx = select_pool(ctx, from_signed_pixels(ds, x), y, keep, p["selector"], p["selector_space"],
                          seed=derive_seed(ctx.seed, "pool"))
        x, y = x[idx], y[idx]
        extra.update(pool=pool, selector=p["selector"], selector_space=p["selector_space"],
                     pool_images=stats["images"], selection_seconds=round(time.perf_counter() - t_sel, 3),
                     selection_reserve_seconds=round(reserve, 3))
        stats.update(ipc=keep, images=int(x.shape[0]))
    return x, y, stats, extra, start


def refine_reserve(ctx: RunContext, decision, thr, held: bool, reserve: float, extra: dict[str, Any]) -> float:
    """Seconds the sampling keeps back for refine under a budget, measured before the clock (0 without a budget,
    and when the policy holds --ipc: refine then takes what the sampling leaves); the cost of an iteration goes to
    `extra` for the refine loop's first prediction and the run's meta."""
    p, ds = ctx.params, ctx.dataset
    if not refine.active(ctx) or ctx.budget is None:
        return 0.0
    shape, pool = (ds.channels, ds.image_size, ds.image_size), p["pool"]
    if held:
        per_iteration = refine.measure(ctx, shape, decision.ipc).seconds(decision.ipc)
        extra.update(refine_seconds_per_iteration=round(per_iteration, 4), refine_share="the rest")
        return 0.0
    largest = max(1, min(thr.max_ipc(ctx.budget, decision.steps, p["budget_safety"]) // pool, p["max_ipc"]))
    cost = refine.measure(ctx, shape, largest)
    fits, kept = refine.split(
        ctx, cost, lambda i: thr.seconds(i * pool * ds.num_classes, decision.steps) * p["budget_safety"],
        ctx.budget - reserve, largest)
    if not fits:
        raise BudgetNotMet(refine.too_long(ctx, kept) + " (measured after fine-tuning)")
    extra.update(refine_reserve_seconds=round(kept, 3), refine_planned_ipc=fits,
                 refine_seconds_per_iteration=round(cost.seconds(fits), 4))
    return kept


def check_count(ctx: RunContext, decision, made: int, ipc: int, held: bool, seconds: float) -> None:
    """The sampler made exactly the images per class asked for (a fixed IPC, or a count the policy holds under a
    budget: fewer is the budget not met, more is the sampler's fault)."""
    sampler = ctx.params["sampler"]
    if (ctx.budget is None and made != ipc) or (held and made > ipc):
        raise PluginOutputError(f"sampler {sampler!r} returned {made} image(s) per class; {ipc} were asked for")
    if held and made < ipc:  # the deadline stopped the sampling short of the count the policy holds
        raise BudgetNotMet(
            f"budget={ctx.budget:g}s sampled {made} of the {ipc} images per class policy {decision.policy!r} "
            f"holds at S={decision.steps} in {seconds:.2f}s (slower than measured: another process on the "
            "cores?); the run is recorded as failed")


def budget_not_met(ctx: RunContext, thr, steps: int, stats: dict[str, Any], seconds: float,
                    pool: int = 1) -> BudgetNotMet:
    """The failure of a budget run that made no balanced round, with the slowdown the sampler observed."""
    p, k = ctx.params, ctx.dataset.num_classes
    one_round = thr.seconds(k, steps) * p["budget_safety"] * pool
    slowdown = stats.get("slowdown_vs_measured")
    slower = f"generation ran {slowdown:g}x slower than measured" if isinstance(slowdown, (int, float)) and \
        slowdown > 1 else "generation was not faster than measured"
    rounds = f"fewer than {pool} balanced rounds (pool={pool})" if pool > 1 else "no balanced round"
    return BudgetNotMet(
        f"budget={ctx.budget:g}s gave {rounds} of {k} images at S={steps} in {seconds:.2f}s: "
        f"{'they were' if pool > 1 else 'one round was'} predicted to take {one_round:.2f}s (with the "
        f"{p['budget_safety']:g} safety factor) and {slower} (another process on the cores?); the run is "
        "recorded as failed")


def selection_reserve(ctx: RunContext, decision, thr) -> float:
    """Seconds kept back from sampling for the selection of a budget's pool: the pool the policy predicts,
    at the feature + classifier cost per image measured now (before the clock), with the budget's margin."""
    p, ds = ctx.params, ctx.dataset
    probe = torch.zeros(min(200, p["sample_batch"] * 2), ds.channels, ds.image_size, ds.image_size)
    y = torch.arange(probe.shape[0]) % ds.num_classes
    t0 = time.perf_counter()
    select_pool(ctx, probe, y, 1, p["selector"], p["selector_space"])
    per_image = (time.perf_counter() - t0) / probe.shape[0]
    predicted = thr.max_ipc(ctx.budget, decision.steps, p["budget_safety"]) * ds.num_classes
    return per_image * predicted * p["budget_safety"]


def sample_request(ctx: RunContext, generator, steps: int, ipc: int | None, prototypes=None, **kw: Any) -> SampleRequest:
    """The request of this run: the sampler's own settings resolved from the run's settings of the same names
    (its levers; a setting the method does not offer keeps the sampler's default), the prototypes as an input."""
    p, ds = ctx.params, ctx.dataset
    sampler = ctx.registry.get("samplers", p["sampler"])
    settings = resolve_params(f"sampler {p['sampler']}", sampler.params,
                              {k: p[k] for k in sampler.params if k in p})
    return SampleRequest(num_classes=ds.num_classes, steps=steps, image_shape=sample_shape(generator),
                         ipc=ipc, guidance=guidance_of(ctx), scheduler=p["scheduler"], batch_size=p["sample_batch"],
                         safety=p["budget_safety"], progress=ctx.progress, settings=settings,
                         inputs={} if prototypes is None else {"prototypes": prototypes}, **kw)


def load_prototypes(ctx: RunContext, k: int):
    """Per-class k-means prototypes of the real images in the generator's space (None when off)."""
    p, ds = ctx.params, ctx.dataset
    if p["prototypes"] == "none":
        return None
    seed = derive_seed(ctx.seed, "prototypes")
    path = ctx.cache_dir / "minmax-diffusion" / "prototypes" / (
        config_hash({"data": dataset_fingerprint(ds), "kind": p["prototypes"], "k": k, "seed": seed}) + ".pt")
    if path.is_file():
        try:
            protos = load_tensors(path)
            if tuple(protos.shape[:2]) == (ds.num_classes, k):
                ctx.log(f"minmax-diffusion: {k} k-means prototypes per class loaded from {path}")
                return protos
        except UnsafeFile as exc:
            drop_refused(exc, ctx.log, "recomputing the prototypes")
        except (OSError, RuntimeError, ValueError, EOFError):
            pass  # an unreadable cache file is recomputed
    t0 = time.perf_counter()
    protos = class_prototypes(to_signed_pixels(ds, ds.train_x.float()), ds.train_y.long(), ds.num_classes, k, seed)
    atomic_save(protos, path)
    ctx.log(f"minmax-diffusion: {k} k-means prototypes per class in {time.perf_counter() - t0:.2f}s")
    return protos

