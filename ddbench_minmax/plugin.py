"""The `minmax-diffusion` plugin: the method, the `dsr` sampler and the IPC-budget policies.

Method: Generative dataset distillation with a min-max diffusion model (Fan et al., ECCV 2024 DD challenge,
2nd place in the generative track), built on Minimax Diffusion (Gu et al., CVPR 2024,
vimar-gu/MinimaxDiffusion). See docs/minmax.md.
"""
from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

import torch

from ddbench import hookimpl
from ddbench.api import (SAMPLER_LEVERS, DDBenchError, Method, Param, PlanRequest, RunContext, SampleRequest,
                         SyntheticSet, unhonoured_levers)
from ddbench.guard import call_plugin, owned_label
from ddbench.features import SPACES as SELECTION_SPACES, select_pool
from ddbench.identity import config_hash, dataset_fingerprint
from ddbench.atomic import atomic_save, atomic_write_text
from ddbench.safeload import UnsafeFile, drop_refused, load_tensors
from ddbench.seeds import derive_seed

from .base import BaseRecipe
from .checks import BudgetNotMet, PluginOutputError, check_decision, check_samples
from .folder import is_folder_base
from .generator import (base_recipe, check_base_folder, obtain_generator, sample_shape, to_denoiser_space,
                        untrained_folder_base)
from .losses import nn_cosine_distance
from .model import arch_config, build_denoiser
from .policy import Calibrated, FixedIpc, FixedSteps, MaxImages
from .prototypes import KINDS as PROTOTYPE_KINDS, class_prototypes
from . import refine
from .quality import reference_classifier
from .sampler import SCHEDULERS, DSRSampler
from .train import from_signed_pixels, to_signed_pixels

ANCHOR = "vimar-gu/MinimaxDiffusion"
SEED_CODE = "FanJunqiao/DD_Track2"

PARAMS: dict[str, Param] = {
    # -- generator: the pretrained base ------------------------------------------------------------
    "base": Param("shipped", f"{ANCHOR} and {SEED_CODE} fine-tune a pretrained generator; ours ships in "
                  "ddbench_minmax/weights/ (how it was made: docs/minmax.md#the-shipped-base)",
                  "'shipped': the packaged base when it was trained on exactly this data (else trained here); "
                  "'train': train a base with the recipe here (cached); PATH: a local diffusers folder, e.g. "
                  "a DiTPipeline (transformer/ vae/ scheduler/: latent space) or a UNet2DModel (pixel space); "
                  "docs/minmax.md#a-pretrained-base-from-a-diffusers-folder"),
    "arch": Param("unet", "docs/minmax.md#the-generator: diffusers UNet2DModel in pixel space; 'dit' = diffusers "
                  f"DiTTransformer2DModel (the anchors fine-tune DiT-XL/2, {ANCHOR} train_dit.py)",
                  "denoiser backbone (sizes per image size in ddbench_minmax/model.py ARCH_CONFIGS)",
                  choices=("unet", "dit")),
    "base_steps": Param(4000, "TeaPearce/Conditional_Diffusion_MNIST: ~4.7k steps give good 28 px samples; "
                        "docs/minmax.md#the-shipped-base (quality vs steps)",
                        "steps of the base recipe when a base is trained here (batch 128)", min=1),
    # -- min-max fine-tuning ---------------------------------------------------------------------
    "finetune_steps": Param(12000, f"{ANCHOR} run.sh: fine-tuning checkpoint 0012000.pt is the one sampled",
                            "steps of L_diff + L_r + L_d from the base (0 = sample the base)", min=0),
    "batch_size": Param(8, f"{ANCHOR} run.sh: --global-batch-size 8", "fine-tuning batch", min=1),
    "lr": Param(1e-4, f"{SEED_CODE} train_dit.py: AdamW(lr=1e-4, weight_decay=0)", "fine-tuning AdamW lr", min=0.0),
    "trainable": Param("difffit", f"{SEED_CODE} train_dit.py: DiffFit (Xie et al. 2023), only bias, norm and "
                       "class-embedding parameters train", "which parameters fine-tune: difffit or all",
                       choices=("difffit", "all")),
    "ema_decay": Param(0.9999, f"{ANCHOR} train_dit.py update_ema(decay=0.9999); warm-up 1-(1+k)^-3/4 of "
                       "diffusers EMAModel(use_ema_warmup=True, power=3/4)", "EMA decay of the kept weights",
                       min=0.0, max=1.0),
    "p_uncond": Param(0.1, "facebookresearch/DiT models.py: class_dropout_prob=0.1",
                      "label dropout to the null class (classifier-free guidance)", min=0.0, max=0.99),
    "snr_gamma": Param(5.0, "Hang et al., ICCV 2023 (Min-SNR-γ, γ=5); diffusers train_text_to_image.py --snr_gamma",
                       "Min-SNR loss weighting γ (0 = plain MSE)", min=0.0),
    "lambda_pos": Param(0.002, f"{ANCHOR} train_dit.py --lambda-pos 0.002; {SEED_CODE} the same",
                        "lambda_r, representativeness weight", min=0.0),
    "lambda_neg": Param(0.001, f"{SEED_CODE} train_dit.py --lambda-neg 0.001 ({ANCHOR}: 0.008)",
                        "lambda_d, diversity weight", min=0.0),
    "memory_size": Param(64, f"{ANCHOR} train_dit.py --memory-size 64", "entries per class in each memory", min=1),
    "embedding": Param("x0", f"{ANCHOR} train_dit.py: the losses compare pred_xstart (x̂0); 'classifier' = features "
                       "of the real-data ConvNet of the quality figures; 'random-convnet' = a frozen random ConvNet "
                       "(DM's embedder); measured in docs/minmax.md#the-min-max-losses",
                       "space of the min-max losses", choices=("x0", "classifier", "random-convnet")),
    "precision": Param("bf16", "docs/minmax.md#min-max-fine-tuning: bf16 autocast, fp32 master weights (1.7x faster "
                       "steps on this CPU, same loss curve: benchmarks/bench_generator.py)",
                       "fine-tuning autocast precision", choices=("bf16", "fp32")),
    "gradient_checkpointing": Param(False, "diffusers ModelMixin.enable_gradient_checkpointing (DiT and UNet support "
                                    "it): recompute activations in the backward pass, "
                                    "for DiT-XL/2 batches on a small GPU",
                                    "trade fine-tuning speed for memory"),
    "vae_batch": Param(16, "diffusers AutoencoderKL.enable_slicing decodes a batch in slices to bound memory; "
                       "16 images per slice is a choice here, not a measurement "
                       "(docs/minmax.md#a-pretrained-base-from-a-diffusers-folder)",
                       "images per VAE decode call of a latent base", min=1),
    "checkpoint_every": Param(100, "docs/minmax.md#min-max-fine-tuning: resume granularity (the anchors' --ckpt-every "
                                   "12000 is for GPU runs)",
                              "training steps between checkpoints (0 = none)", min=0),
    "on_corrupt_cache": Param("rebuild",
                              "docs/minmax.md#min-max-fine-tuning: a corrupt cached generator is rebuilt or refused",
                              "what to do with a corrupt cached generator", choices=("rebuild", "error")),
    # -- sampling (DSR) and the IPC-budget policy --------------------------------------------------
    "sampler": Param("dsr", "Fan et al. (seed paper): Diffusion Step Reduction", "registered sampler name"),
    "scheduler": Param("ddim", f"{SEED_CODE} sample.py: respaced DDPM; DDIM (eta 0) here, 'dpm++' = "
                       "DPMSolverMultistepScheduler(algorithm_type='dpmsolver++')", "sampling scheduler",
                       choices=SCHEDULERS),
    "guidance": Param(4.0, f"{ANCHOR} sample.py --cfg-scale 4.0; {SEED_CODE} the same",
                      "classifier-free guidance scale s (DiT form; 1 = no guidance)", min=1.0),
    "budget_guidance": Param(None, f"{SEED_CODE} sample.py: one --cfg-scale for every run (None = `guidance`); "
                             "docs/minmax.md#unguided-sampling-under-a-10-s-budget-5-method-seeds: under a budget a "
                             "guided image costs two network calls per step",
                             "guidance scale under --budget (None = the `guidance` setting; not used by a policy "
                             "that holds --ipc, e.g. fixed-ipc)", min=1.0),
    "steps": Param(10, f"{SEED_CODE} sample.py: --num-sampling-steps 10 (DSR)",
                   "denoising steps S (fixed-steps policy)",
                   min=1),
    "min_steps": Param(5, "docs/minmax.md#dsr-sampler-and-policies: smallest step count tried (the seed paper's Fig. 2 "
                          "shows 10 and 30)",
                       "fewest steps any policy may use (max-images uses it)", min=1),
    "policy": Param("fixed-steps", "the classic fixed-IPC benchmark (DC/DSA/DM papers)",
                    "registered policy: fixed-steps, max-images, calibrated"),
    "pilot_steps": Param((5, 10, 20, 30, 50),
                         "docs/minmax.md#dsr-sampler-and-policies: candidate S (seed paper Fig. 2: 10 and 30)",
                         "calibrated policy: candidate S of the pilot"),
    "pilot_ipcs": Param((2, 10), "docs/minmax.md#dsr-sampler-and-policies: two IPCs so the fit sees the IPC axis",
                        "calibrated: pilot IPCs"),
    "pilot_epochs": Param(300, "VICO-UoE/DatasetCondensation main.py: epoch_eval_train 300 (the `fast` protocol)",
                          "calibrated: epochs per pilot network", min=1),
    "pilot_models": Param(1, "docs/minmax.md#dsr-sampler-and-policies: one network per pilot point (cost)",
                          "calibrated: networks per pilot point", min=1),
    "sample_batch": Param(100,
                          "docs/minmax.md#dsr-sampler-and-policies: batches of 100 images (whole rounds of 10 classes)",
                          "images per sampling batch", min=1),
    "budget_safety": Param(1.1, "docs/minmax.md#dsr-sampler-and-policies: 10% margin so the last batch ends "
                                "inside the budget",
                           "factor on predicted batch times under a budget", min=1.0),
    # -- levers beyond the seed paper (docs/minmax.md#levers-beyond-the-seed) ---------------------------
    "prototypes": Param("none", "D4M (Su et al., CVPR 2024; suduo94/D4M gen_prototype.py: per-class k-means, k = IPC) "
                        "and MGD3 (Chan-Santiago et al., ICML 2025; jachansantiago/mode_guidance); 'none' = the seed",
                        "class prototypes for strength < 1 and mode_guidance: none, or kmeans of the real images "
                        "in the generator's space (k = the images per class)", choices=PROTOTYPE_KINDS),
    "strength": Param(1.0, "suduo94/D4M: img2img from the noised centroids at strength 0.7-0.75; 1 = from pure "
                      "noise (the seed)", "fraction of the S steps run from the noised prototype", min=0.0, max=1.0),
    "mode_guidance": Param(0.0, "MGD3 (jachansantiago/mode_guidance): lambda = 0.1; 0 = off (the seed)",
                           "pull of the predicted clean image toward its prototype", min=0.0),
    "mode_guidance_stop": Param(0.5, "MGD3 (jachansantiago/mode_guidance): guidance stopped at step 25 of 50",
                                "fraction of the steps after which mode guidance stops", min=0.0, max=1.0),
    "guidance_interval": Param((0.0, 1.0), "Kynkäänniemi et al., NeurIPS 2024 (arXiv 2404.07724): guidance only in "
                               "the middle of the noise range; (0, 1) = everywhere (the seed)",
                               "lo,hi: classifier-free guidance only while t/T lies in [lo, hi]"),
    "pool": Param(1, "CaO2 (hatchetProject/CaO2 sample_imagenet.py): 4 x IPC candidates per class; 1 = no pool "
                  "(the seed)", "candidates sampled per kept image; the selector keeps IPC per class", min=1),
    "selector": Param("confidence",
                      "hatchetProject/CaO2 sample_imagenet.py: a teacher's most confident correct candidates first",
                      "registered selector that picks from the pool (pool > 1)"),
    "selector_space": Param("classifier", "DC-BENCH Kmeans-emb (justincui03/dc_benchmark): features of a network "
                            "trained on the real data", "feature space of the pool's selection",
                            choices=SELECTION_SPACES),
    "max_ipc": Param(1000, "docs/minmax.md#budgets-on-a-busy-machine: a cap on the images per class a --budget run "
                     "plans and makes (the IPC tables of the distillation papers stop at 1000)",
                     "most images per class under --budget; a budget planning more is refused", min=1),
    # -- refine: a matching objective on the generated set (docs/minmax.md#refine) ----------------------
    **refine.PARAMS,
    "quality": Param(True, "docs/minmax.md#quality-figures: class accuracy and Fréchet distance of the set under a "
                     "real-data ConvNet (trained once, cached)", "record generator-quality figures in the run's meta"),
}


def guidance_of(ctx: RunContext) -> float:
    """The guidance scale of this run: `budget_guidance` under a --budget that buys images, else `guidance`. A
    policy that holds --ipc under the budget (fixed-ipc) samples the fixed-IPC run's images: its seconds buy
    refine, not more images."""
    p = ctx.params
    if ctx.budget is not None and p.get("budget_guidance") is not None and not holds_ipc(ctx):
        return float(p["budget_guidance"])
    return float(p["guidance"])


def holds_ipc(ctx: RunContext) -> bool:
    """Whether the run's policy keeps --ipc under a budget (`Policy.holds_ipc`; a policy registered duck-typed,
    with decide() only, holds nothing)."""
    return bool(getattr(ctx.registry.get("policies", ctx.params["policy"]), "holds_ipc", False))


class Plan(NamedTuple):
    """What a run samples with: the policy's decision, the throughput it was made from, and their cost."""

    decision: Any  # ddbench.api.Decision
    throughput: Any  # ddbench.api.Throughput
    measure_seconds: float
    pilot_seconds: float


LEVERS = ("prototypes", "strength", "mode_guidance", "mode_guidance_stop", "guidance_interval")


def check_levers(p: dict[str, Any]) -> None:
    """The levers' settings that each Param alone cannot check."""
    gi = tuple(p["guidance_interval"])
    if len(gi) != 2 or not all(isinstance(v, (int, float)) for v in gi) or not 0 <= gi[0] <= gi[1] <= 1:
        raise DDBenchError(f"guidance_interval={','.join(map(str, gi))} is not allowed; "
                           "give lo,hi with 0 <= lo <= hi <= 1")
    if not p["strength"] > 0:
        raise DDBenchError(f"strength={p['strength']!r} is not allowed; it must lie in (0, 1]")
    if (p["strength"] < 1 or p["mode_guidance"] > 0) and p["prototypes"] == "none":
        raise DDBenchError("strength < 1 and mode_guidance > 0 need prototypes; set prototypes=kmeans")


def check_sampler_levers(sampler, p: dict[str, Any], label: str) -> None:
    """Refuse levers turned on for a sampler that does not declare them (ddbench.api.Sampler.levers): a third
    party's sampler would ignore them and the run be recorded as if they applied."""
    on = {k: v for k, v in (("prototypes", p["prototypes"]), ("strength", p["strength"]),
                            ("mode_guidance", p["mode_guidance"]), ("guidance_interval", tuple(p["guidance_interval"])))
          if v != {"prototypes": "none"}.get(k, SAMPLER_LEVERS[k])}
    missing = unhonoured_levers(sampler, on)
    if missing:
        raise DDBenchError(f"{label} does not honour {', '.join(missing)} (it declares levers: "
                           f"{', '.join(getattr(sampler, 'levers', ()) or ()) or 'none'}); turn them off with --set "
                           "(prototypes=none, strength=1, mode_guidance=0, guidance_interval=0,1) or use a sampler "
                           "that declares them")


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
            self._check_budget(ctx, sampler, folder)

    @staticmethod
    def _check_budget(ctx: RunContext, sampler, folder) -> None:
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
        s = p["steps"] if p["policy"] in ("fixed-steps", "fixed-ipc") else p["min_steps"]
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

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p, ds = ctx.params, ctx.dataset
        t0 = time.perf_counter()
        classifier = self._classifier(ctx) if p["quality"] or p["embedding"] == "classifier" else None
        generator, gen_info = obtain_generator(ctx, classifier)
        generator.to(ctx.device).eval()
        t_gen = time.perf_counter() - t0
        sampler = ctx.registry.get("samplers", p["sampler"])
        plan = self._plan(ctx, sampler, generator, gen_info)
        decision, thr = plan.decision, plan.throughput
        x, y, gen_stats, extra, start = self._sample_set(ctx, sampler, generator, decision, thr)
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
            "measure_seconds": round(plan.measure_seconds, 3),
            "pilot_seconds": round(plan.pilot_seconds, 2),
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

    def _plan(self, ctx: RunContext, sampler, generator, gen_info: dict[str, Any]) -> Plan:
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

        def pilot(steps: int) -> dict[int, float]:
            return self._pilot(ctx, sampler, generator, gen_key, steps, pilot_seconds)

        req = PlanRequest(
            num_classes=k, budget=ctx.budget, ipc=ctx.ipc, steps=p["steps"], min_steps=p["min_steps"],
            max_steps=generator.config.num_train_timesteps, throughput=thr, candidates=list(p["pilot_steps"]),
            pilot=pilot, safety=p["budget_safety"], log=ctx.log,
        )
        decision = check_decision(call_plugin(ctx.registry, "policies", p["policy"], "decide()",
                                              lambda: self._decide(policy, req)), p["policy"], req)
        ctx.log(f"minmax-diffusion: policy {decision.policy}: {decision.reason}")
        if ctx.budget is not None and guidance_of(ctx) != p["guidance"]:
            ctx.log(f"minmax-diffusion: under --budget, guidance {p['budget_guidance']:g} (budget_guidance; "
                    f"guidance {p['guidance']:g} is for fixed-IPC runs)")
        return Plan(decision, thr, measure_s, pilot_seconds[0])

    def _sample_set(self, ctx: RunContext, sampler, generator, decision, thr):
        """Sample the set (over-generating `pool` candidates per kept image when pool > 1, then selecting)."""
        p, ds = ctx.params, ctx.dataset
        pool = p["pool"]
        # Prototypes are computed (and cached) before the budget's clock starts, as D4M's gen_prototype.py runs
        # before its generation script: like the fine-tuned generator, they are made from the training data once.
        t_proto = time.perf_counter()
        # one prototype per kept image: a fixed IPC's rounds cycle through them `pool` times; under a budget the
        # policy's predicted rounds are divided by the pool
        prototypes = to_denoiser_space(  # VAE-encoded for a latent base
            generator, self._prototypes(ctx, prototype_count(ctx, decision.ipc, pool)))
        extra: dict[str, Any] = {"prototype_seconds": round(time.perf_counter() - t_proto, 3)}
        reserve = self._selection_reserve(ctx, decision, thr) if pool > 1 and ctx.budget is not None else 0.0
        kept_for_refine, per_iteration = 0.0, 0.0
        held = ctx.budget is not None and decision.mode == "ipc"  # a policy holding --ipc under the budget
        if held and refine.active(ctx):  # refine gets what the sampling leaves; its first iteration is predicted
            per_iteration = refine.measure(ctx, (ds.channels, ds.image_size, ds.image_size), decision.ipc).seconds(
                decision.ipc)
            extra.update(refine_seconds_per_iteration=round(per_iteration, 4), refine_share="the rest")
        elif refine.active(ctx) and ctx.budget is not None:  # measured before the clock, as the selection's reserve
            largest = max(1, min(thr.max_ipc(ctx.budget, decision.steps, p["budget_safety"]) // pool, p["max_ipc"]))
            cost = refine.measure(ctx, (ds.channels, ds.image_size, ds.image_size), largest)
            fits, kept_for_refine = refine.split(
                ctx, cost, lambda i: thr.seconds(i * pool * ds.num_classes, decision.steps) * p["budget_safety"],
                ctx.budget - reserve, largest)
            if not fits:
                raise BudgetNotMet(refine.too_long(ctx, kept_for_refine) + " (measured after fine-tuning)")
            per_iteration = cost.seconds(fits)
            extra.update(refine_reserve_seconds=round(kept_for_refine, 3), refine_planned_ipc=fits,
                         refine_seconds_per_iteration=round(per_iteration, 4))
        start = time.perf_counter()
        deadline = None if ctx.budget is None else start + ctx.budget - reserve - kept_for_refine
        # under a budget: a cap, unless the policy holds the count
        ipc = p["max_ipc"] * pool if ctx.budget is not None and not held else decision.ipc * pool
        request = self._request(ctx, generator, decision.steps, ipc, seed=ctx.seed, deadline=deadline, throughput=thr,
                                prototypes=prototypes)
        out = call_plugin(ctx.registry, "samplers", p["sampler"], "generate()",
                          lambda: sampler.generate(generator, request))
        seconds = time.perf_counter() - start  # timed here: a sampler's stats are free metadata
        made = check_samples(out, p["sampler"], ds.num_classes, (ds.channels, ds.image_size, ds.image_size))
        x, y, stats = out.images, out.labels.long(), dict(out.stats)
        if ctx.budget is None and made != ipc:
            raise PluginOutputError(f"sampler {p['sampler']!r} returned {made} image(s) per class; "
                                    f"{ipc} were asked for")
        if held and made < ipc:  # the deadline stopped the sampling short of the count the policy holds
            raise BudgetNotMet(
                f"budget={ctx.budget:g}s sampled {made} of the {ipc} images per class policy {decision.policy!r} "
                f"holds at S={decision.steps} in {seconds:.2f}s (slower than measured: another process on the "
                "cores?); the run is recorded as failed")
        if held and made > ipc:
            raise PluginOutputError(f"sampler {p['sampler']!r} returned {made} image(s) per class; "
                                    f"{ipc} were asked for")
        keep = made // pool
        if keep < 1:
            raise self._budget_not_met(ctx, thr, decision.steps, stats, seconds, pool)
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

    @staticmethod
    def _decide(policy, req: PlanRequest):
        """The policy's decision; under a budget, 'not even one image fits' now (the budget passed `validate`)
        means the machine is slower than when it was measured: a failed run saying so, not bad input."""
        try:
            return policy.decide(req)
        except DDBenchError as exc:
            if req.budget is None:
                raise
            raise BudgetNotMet(f"policy {policy.name!r}: {exc} (measured after fine-tuning; the budget passed the "
                               "check before it: the machine is slower now, another process on the cores?)") from None

    @staticmethod
    def _budget_not_met(ctx: RunContext, thr, steps: int, stats: dict[str, Any], seconds: float,
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

    @staticmethod
    def _selection_reserve(ctx: RunContext, decision, thr) -> float:
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

    @staticmethod
    def _request(ctx: RunContext, generator, steps: int, ipc: int | None, **kw: Any) -> SampleRequest:
        p, ds = ctx.params, ctx.dataset
        return SampleRequest(num_classes=ds.num_classes, steps=steps, image_shape=sample_shape(generator),
                             ipc=ipc, guidance=guidance_of(ctx), scheduler=p["scheduler"], batch_size=p["sample_batch"],
                             safety=p["budget_safety"], progress=ctx.progress, strength=p["strength"],
                             mode_guidance=p["mode_guidance"], mode_guidance_stop=p["mode_guidance_stop"],
                             guidance_interval=tuple(p["guidance_interval"]), **kw)

    @staticmethod
    def _prototypes(ctx: RunContext, k: int):
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

    @staticmethod
    def _classifier(ctx: RunContext):
        return reference_classifier(ctx.dataset, lambda: ctx.build_model("convnet"), ctx.cache_dir,
                                    dataset_fingerprint(ctx.dataset), log=ctx.log, progress=ctx.progress)

    # -- the calibrated policy's pilot -----------------------------------------------------------------
    def _pilot(self, ctx, sampler, generator, gen_key: str, steps: int, seconds: list[float]) -> dict[int, float]:
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
        out = sampler.generate(generator, self._request(
            ctx, generator, steps, ipcs[-1], seed=derive_seed(ctx.seed, "pilot"),
            prototypes=to_denoiser_space(generator, self._prototypes(ctx, ipcs[-1]))))
        x, y = from_signed_pixels(ds, out.images), out.labels
        acc = {}
        for ipc in ipcs:
            n = ipc * ds.num_classes  # batches are whole rounds, so the first n images are balanced
            res = ctx.evaluate(SyntheticSet(x[:n], y[:n]), "fast", epochs=p["pilot_epochs"], n_models=p["pilot_models"])
            acc[ipc] = res.mean
        seconds[0] += time.perf_counter() - t0
        atomic_write_text(json.dumps({"config": cfg, "acc": acc}), path)
        return acc


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
