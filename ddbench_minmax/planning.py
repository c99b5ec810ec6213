"""How a minmax-diffusion run plans its sampling: the budget checked before any work, the sampler's measured
throughput, the policy's decision (S and the IPC) and the calibrated policy's pilot."""
from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from ddbench.api import DDBenchError, PlanRequest, RunContext, SyntheticSet
from ddbench.helpers import atomic_write_text, call_plugin, config_hash, derive_seed

from . import refine
from .checks import BudgetNotMet, check_decision
from .generator import base_recipe, sample_shape, to_denoiser_space, untrained_folder_base
from .model import build_denoiser
from .sampling import load_prototypes, sample_request
from .settings import LEVERS, fewest_steps, guidance_of, holds_ipc
from .train import from_signed_pixels

class Plan(NamedTuple):
    """What a run samples with: the policy's decision, the throughput it was made from, and their cost."""

    decision: Any  # ddbench.api.Decision
    throughput: Any  # ddbench.api.Throughput
    measure_seconds: float
    pilot_seconds: float


def check_budget(ctx: RunContext, sampler, folder) -> None:
    """A budget that cannot give each class one image, or that plans more than max_ipc, fails now."""
    p, ds = ctx.params, ctx.dataset
    if not ctx.budget > 0:
        raise DDBenchError(f"budget={ctx.budget!r} is not allowed; it must be a positive number of seconds")
    # Throughput does not depend on the weights: measure an untrained base of the same shape now,
    # so a hopeless budget fails before anything is trained.
    if folder is None:
        base = build_denoiser(base_recipe(ctx).denoiser_config(ds.channels, ds.image_size, ds.num_classes))
    else:
        base = untrained_folder_base(folder, ctx)
    base.to(ctx.device)
    thr = sampler.measure(base, ds.num_classes, sample_shape(base), p["sample_batch"], guidance=guidance_of(ctx))
    s = fewest_steps(ctx)  # the cheapest S the policy may choose: a budget that fails there fails at every S
    if holds_ipc(ctx):  # exactly --ipc images per class; refine takes whatever the sampling leaves
        need = thr.seconds(ctx.ipc * p["pool"] * ds.num_classes, s) * p["budget_safety"]
        if ctx.budget < need:
            raise DDBenchError(
                f"budget={ctx.budget:g}s is too small to sample the {ctx.ipc} images per class --ipc asks for at "
                f"S={s} steps (policy {p['policy']}); about {need:.2f}s on this device")
        return
    need = thr.min_budget(s, p["budget_safety"])
    if ctx.budget < need:
        raise DDBenchError(
            f"budget={ctx.budget:g}s is too small to give each of the {ds.num_classes} classes one image at "
            f"S={s} steps; the minimum on this device is about {need:.2f}s"
        )
    planned = thr.max_ipc(ctx.budget, s, p["budget_safety"])
    if planned > p["max_ipc"] * p["pool"]:
        raise DDBenchError(
            f"budget={ctx.budget:g}s plans {planned} images per class at S={s} on this device, above "
            f"max_ipc={p['max_ipc']}" + (f" x pool={p['pool']}" if p["pool"] > 1 else "")
            + "; give a smaller --budget or raise max_ipc with --set max_ipc=N")
    if refine.active(ctx):
        cost = refine.measure(ctx, (ds.channels, ds.image_size, ds.image_size), max(1, planned // p["pool"]))
        fits, kept = refine.split(ctx, cost,
                                  lambda i: thr.seconds(i * p["pool"] * ds.num_classes, s) * p["budget_safety"],
                                  ctx.budget, max(1, planned // p["pool"]))
        if not fits:
            raise DDBenchError(refine.too_long(ctx, kept))


def plan(ctx: RunContext, sampler, generator, gen_info: dict[str, Any]) -> Plan:
    """The sampler's throughput on the generator, and the policy's choice of S and IPC from it (the calibrated
    policy pilots candidate step counts here)."""
    p, k = ctx.params, ctx.dataset.num_classes
    policy = ctx.registry.get("policies", p["policy"])
    t1 = time.perf_counter()
    thr = call_plugin(ctx.registry, "samplers", p["sampler"], "measure()", lambda: sampler.measure(
        generator, k, sample_shape(generator), p["sample_batch"], guidance=guidance_of(ctx)))
    measure_s = time.perf_counter() - t1
    gen_key = (gen_info.get("finetune") or gen_info["base"])["sha256"]
    pilot_seconds = [0.0]

    def run_pilot(steps: int) -> dict[int, float]:
        return pilot(ctx, sampler, generator, gen_key, steps, pilot_seconds)

    req = PlanRequest(
        num_classes=k, budget=ctx.budget, ipc=ctx.ipc, steps=p["steps"], min_steps=p["min_steps"],
        max_steps=generator.config.num_train_timesteps, throughput=thr, candidates=list(p["pilot_steps"]),
        pilot=run_pilot, safety=p["budget_safety"], log=ctx.log,
    )
    decision = check_decision(call_plugin(ctx.registry, "policies", p["policy"], "decide()",
                                          lambda: decide(policy, req)), p["policy"], req)
    ctx.log(f"minmax-diffusion: policy {decision.policy}: {decision.reason}")
    if ctx.budget is not None and guidance_of(ctx) != p["guidance"]:
        ctx.log(f"minmax-diffusion: under --budget, guidance {p['budget_guidance']:g} (budget_guidance; "
                f"guidance {p['guidance']:g} is for fixed-IPC runs)")
    return Plan(decision, thr, measure_s, pilot_seconds[0])


def decide(policy, req: PlanRequest):
    """The policy's decision; under a budget, 'not even one image fits' now (the budget passed `validate`)
    means the machine is slower than when it was measured: a failed run saying so, not bad input."""
    try:
        return policy.decide(req)
    except DDBenchError as exc:
        if req.budget is None:
            raise
        raise BudgetNotMet(f"policy {policy.name!r}: {exc} (measured after fine-tuning; the budget passed the "
                           "check before it: the machine is slower now, another process on the cores?)") from None


def pilot(ctx, sampler, generator, gen_key: str, steps: int, seconds: list[float]) -> dict[int, float]:
    p, ds = ctx.params, ctx.dataset
    cfg = {"gen": gen_key, "steps": steps, "ipcs": list(p["pilot_ipcs"]), "scheduler": p["scheduler"],
           "guidance": guidance_of(ctx), "epochs": p["pilot_epochs"], "models": p["pilot_models"], "seed": ctx.seed,
           "levers": {k: p[k] for k in LEVERS},
           "model": ctx.model}  # the eval architecture (cache key)
    path = ctx.cache_dir / "minmax-diffusion" / "pilots" / f"{config_hash(cfg)}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return {int(i): float(a) for i, a in data["acc"].items()}
        except (OSError, ValueError, KeyError):
            pass
    t0 = time.perf_counter()
    ipcs = sorted(p["pilot_ipcs"])
    out = sampler.generate(generator, sample_request(
        ctx, generator, steps, ipcs[-1], seed=derive_seed(ctx.seed, "pilot"),
        prototypes=to_denoiser_space(generator, load_prototypes(ctx, ipcs[-1]))))
    x, y = from_signed_pixels(ds, out.images), out.labels
    acc = {}
    for ipc in ipcs:
        n = ipc * ds.num_classes  # batches are whole rounds, so the first n images are balanced
        res = ctx.evaluate(SyntheticSet(x[:n], y[:n]), "fast", epochs=p["pilot_epochs"], n_models=p["pilot_models"])
        acc[ipc] = res.mean
    seconds[0] += time.perf_counter() - t0
    atomic_write_text(json.dumps({"config": cfg, "acc": acc}), path)
    return acc

