"""The `minmax-diffusion` plugin: the method, the `dsr` sampler and the IPC-budget policies.

Method: Generative dataset distillation with a min-max diffusion model (Fan et al., ECCV 2024 DD challenge,
2nd place in the generative track), built on Minimax Diffusion (Gu et al., CVPR 2024,
vimar-gu/MinimaxDiffusion). See docs/minmax.md. The method's rooms: `settings` (its settings and their rules),
`planning` (budget check, throughput, policy, pilot), `sampling` (prototypes, request, pool), `refine`.
"""
from __future__ import annotations

import time
from typing import Any

from ddbench import hookimpl
from ddbench.api import DDBenchError, Method, RunContext, SyntheticSet
from ddbench.helpers import dataset_fingerprint, owned_label, reference_classifier

from . import refine
from .base import BaseRecipe
from .folder import is_folder_base
from .generator import check_base_folder, obtain_generator
from .losses import nn_cosine_distance
from .model import arch_config
from .planning import check_budget, plan
from .policy import Calibrated, FixedIpc, FixedSteps, MaxImages
from .sampler import DSRSampler
from .sampling import sample_set
from .settings import PARAMS, check_levers, check_sampler_levers, guidance_of
from .train import from_signed_pixels, to_signed_pixels


class MinMaxDiffusion(Method):
    name = "minmax-diffusion"
    description = ("generative distillation: a pretrained class-conditional diffusion model fine-tuned with min-max "
                   "representativeness/diversity losses, guided few-step DSR sampling, IPC or time-budget policy")
    params = PARAMS
    supports_budget = True

    def validate(self, ctx: RunContext) -> None:
        p = ctx.params
        folder = check_base_folder(p["base"], ctx.dataset) if is_folder_base(p["base"]) else None
        T = folder.as_denoiser_config().num_train_timesteps if folder else BaseRecipe.num_train_timesteps
        for key in ("steps", "min_steps"):
            if not 1 <= p[key] <= T:
                raise DDBenchError(f"{key}={p[key]} is not allowed; it must lie in [1, {T}] (the training timesteps)")
        # Checked under every policy: a setting is validated before any work, whether or not this run reads it.
        for s in p["pilot_steps"]:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= T:
                raise DDBenchError(f"pilot_steps value {s!r} is not allowed; each must be an integer in [1, {T}]")
        if len(set(p["pilot_steps"])) < 2:
            raise DDBenchError(f"pilot_steps={p['pilot_steps']!r} is not allowed; give at least two step counts")
        if not p["pilot_ipcs"]:
            raise DDBenchError("pilot_ipcs=() is not allowed; give at least one IPC")
        for i in p["pilot_ipcs"]:
            if isinstance(i, bool) or not isinstance(i, int) or i < 1:
                raise DDBenchError(f"pilot_ipcs value {i!r} is not allowed; each must be an integer >= 1")
        check_levers(p)
        refine.validate(ctx)
        if folder is None:
            arch_config(p["arch"], ctx.dataset.image_size)
        sampler = ctx.registry.get("samplers", p["sampler"])
        check_sampler_levers(sampler, p, owned_label(ctx.registry, "samplers", p["sampler"]))
        ctx.registry.get("policies", p["policy"])
        ctx.registry.get("selectors", p["selector"])  # checked at pool=1 too, as every setting is
        if ctx.budget is not None:
            check_budget(ctx, sampler, folder)

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p, ds = ctx.params, ctx.dataset
        t0 = time.perf_counter()
        classifier = self._classifier(ctx) if p["quality"] or p["embedding"] == "classifier" else None
        generator, gen_info = obtain_generator(ctx, classifier)
        generator.to(ctx.device).eval()
        t_gen = time.perf_counter() - t0
        sampler = ctx.registry.get("samplers", p["sampler"])
        planned = plan(ctx, sampler, generator, gen_info)
        decision, thr = planned.decision, planned.throughput
        x, y, gen_stats, extra, start = sample_set(ctx, sampler, generator, decision, thr)
        images = from_signed_pixels(ds, x)
        if refine.active(ctx):  # inside the budget: the sampling kept back extra["refine_reserve_seconds"]
            images, extra["refine"] = refine.run(ctx, images, y, deadline=None if ctx.budget is None else
                                                 start + ctx.budget,
                                                 expected=extra.get("refine_seconds_per_iteration", 0.0))
            x = to_signed_pixels(ds, images)  # the figures below describe the refined set
            stages = time.perf_counter() - start  # sampling, selection and refine, on one clock
        else:
            stages = gen_stats["seconds"] + extra.get("selection_seconds", 0.0)
        meta: dict[str, Any] = {
            "generator": gen_info,
            "generator_seconds": round(t_gen, 2),
            "policy": decision.as_meta(),
            "sampler": {"name": sampler.name, **gen_stats},
            "throughput_images_per_s": thr.table(sorted({*p["pilot_steps"], decision.steps, p["min_steps"]})),
            "throughput_fit": {"a": thr.a, "b": thr.b, "batch": thr.batch_size, "overhead": thr.overhead,
                               "threads": thr.threads},
            "measure_seconds": round(planned.measure_seconds, 3),
            "pilot_seconds": round(planned.pilot_seconds, 2),
            "budget": ctx.budget,
            **extra,
            "diversity_nn_cosine_distance": round(nn_cosine_distance(x, y)["mean"], 4),
        }
        if classifier is not None and p["quality"]:
            meta["quality"] = classifier.figures(images, y)
            ctx.log(f"minmax-diffusion: quality: class accuracy {meta['quality']['class_accuracy']} %, "
                    f"FD {meta['quality']['fd']} ({len(y)} images)")
        if ctx.budget is not None:
            meta["budget_honoured"] = stages <= ctx.budget
        ctx.log(f"minmax-diffusion: {gen_stats['images']} images ({gen_stats['ipc']}/class) at S={decision.steps}, "
                f"guidance {guidance_of(ctx):g}, in {gen_stats['seconds']:.1f}s "
                f"({gen_stats['images_per_second']} images/s)")
        return SyntheticSet(images=images, labels=y, meta=meta, ipc=gen_stats["ipc"],
                            generation_seconds=stages)  # every stage the budget counts: sampling, selection, refine

    @staticmethod
    def _classifier(ctx: RunContext):
        return reference_classifier(ctx.dataset, lambda: ctx.build_model("convnet"), ctx.cache_dir,
                                    dataset_fingerprint(ctx.dataset), log=ctx.log, progress=ctx.progress)


@hookimpl
def register_methods(register):
    register(MinMaxDiffusion())


@hookimpl
def register_samplers(register):
    register(DSRSampler())


@hookimpl
def register_policies(register):
    register(FixedSteps())
    register(MaxImages())
    register(FixedIpc())
    register(Calibrated())
