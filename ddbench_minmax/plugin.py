"""The `minmax-diffusion` plugin: the method, the `dsr` sampler and the IPC-budget policies.

Method: Generative dataset distillation with a min-max diffusion model (Fan et al., ECCV 2024 DD challenge,
2nd place in the generative track), built on Minimax Diffusion (Gu et al., CVPR 2024,
vimar-gu/MinimaxDiffusion). See docs/minmax.md.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import torch

from ddbench import hookimpl
from ddbench.api import DDBenchError, Method, Param, RunContext, SyntheticSet

from .losses import nn_cosine_distance
from .model import arch_config, build_denoiser
from .policy import Calibrated, FixedSteps, MaxImages, PlanRequest
from .sampler import SCHEDULERS, DSRSampler
from .train import from_model_space, obtain_generator

ANCHOR = "vimar-gu/MinimaxDiffusion"

PARAMS: dict[str, Param] = {
    # -- generator ---------------------------------------------------------------------------------
    "arch": Param("unet", "ddbench issue 4: diffusers UNet2DModel with class embeddings in pixel space; 'dit' = "
                  "diffusers DiTTransformer2DModel (the anchor fine-tunes DiT-XL/2, train_dit.py)",
                  "denoiser backbone (sizes per image size in ddbench_minmax/model.py ARCH_CONFIGS)",
                  choices=("unet", "dit")),
    "num_train_timesteps": Param(1000, f"{ANCHOR} train_dit.py: create_diffusion(timestep_respacing='') = 1000 linear steps",
                                 "diffusion training timesteps T (DDPMScheduler)", min=2),
    "base_steps": Param(20000, "ddbench choice, no paper value: the anchor starts from a pretrained DiT, none exists "
                        "here, so plain diffusion is trained from scratch first (REFERENCE.md §4)",
                        "phase 1: steps of plain diffusion (L_diff) from scratch", min=0),
    "finetune_steps": Param(12000, f"{ANCHOR} run.sh: fine-tuning checkpoint 0012000.pt is the one sampled",
                            "phase 2: steps of L_diff + L_r + L_d starting from the base", min=0),
    "batch_size": Param(256, f"{ANCHOR} train_dit.py --global-batch-size 256 (run.sh uses 8)", "training batch", min=1),
    "lr": Param(1e-3, f"{ANCHOR} train_dit.py: AdamW(lr=1e-3, weight_decay=0)", "AdamW learning rate", min=0.0),
    "ema_decay": Param(0.9999, f"{ANCHOR} train_dit.py update_ema(decay=0.9999); warm-up min(decay,(1+k)/(10+k)) "
                       "as diffusers EMAModel", "EMA decay of the kept weights", min=0.0, max=1.0),
    "lambda_pos": Param(0.002, f"{ANCHOR} train_dit.py --lambda-pos 0.002", "lambda_r, representativeness weight", min=0.0),
    "lambda_neg": Param(0.008, f"{ANCHOR} train_dit.py --lambda-neg 0.008", "lambda_d, diversity weight", min=0.0),
    "memory_size": Param(64, f"{ANCHOR} train_dit.py --memory-size 64", "entries per class in each memory", min=1),
    "embedding": Param("x0", f"{ANCHOR} train_dit.py: the losses compare loss_dict['output'] = pred_xstart "
                       "(REFERENCE.md §4); 'convnet' = features of a frozen random ConvNet (implemented, not yet measured: docs/minmax.md)",
                       "space of the min-max losses", choices=("x0", "convnet")),
    "checkpoint_every": Param(100, "ddbench: resume granularity (anchor --ckpt-every 12000 is for hours-long GPU runs)",
                              "training steps between checkpoints (0 = none)", min=0),
    "on_corrupt_cache": Param("rebuild", "ddbench issue 4: a corrupt cached generator is rebuilt or a clear error",
                              "what to do with a corrupt cached generator", choices=("rebuild", "error")),
    # -- sampling (DSR) and the IPC-budget policy --------------------------------------------------
    "sampler": Param("dsr", "seed paper (Fan et al.): Diffusion Step Reduction", "registered sampler name"),
    "scheduler": Param("ddim", "seed paper: DSR with few-step sampling; DDIM (eta 0) here, 'dpm++' = "
                       "DPMSolverMultistepScheduler(algorithm_type='dpmsolver++')", "sampling scheduler",
                       choices=SCHEDULERS),
    "steps": Param(50, f"{ANCHOR} sample.py --num-sampling-steps 50", "denoising steps S (fixed-steps policy)", min=1),
    "min_steps": Param(5, "ddbench issue 4: smallest pilot candidate S=5 (the seed paper's Fig. 2 shows 10 and 30)",
                       "fewest steps any policy may use (max-images uses it)", min=1),
    "policy": Param("fixed-steps", "ddbench issue 4: fixed IPC at S steps is the classic benchmark",
                    "registered policy: fixed-steps, max-images, calibrated"),
    "pilot_steps": Param((5, 10, 20, 30, 50), "ddbench issue 4: candidate S 5, 10, 20, 30, 50",
                         "calibrated policy: candidate S of the pilot"),
    "pilot_ipcs": Param((2, 10), "ddbench choice: two IPCs so the fit sees the IPC axis", "calibrated: pilot IPCs"),
    "pilot_epochs": Param(300, "ddbench/evaluate.py `fast` protocol default (300 epochs)", "calibrated: epochs per pilot network", min=1),
    "pilot_models": Param(1, "ddbench choice: one network per pilot point (cost)", "calibrated: networks per pilot point", min=1),
    "sample_batch": Param(100, "REFERENCE.md §8: DDIM steps measured on batches of 100 images", "images per sampling batch", min=1),
    "budget_safety": Param(1.1, "ddbench choice: 10% margin so the last batch ends inside the budget",
                           "factor on predicted batch times under a budget", min=1.0),
}


class MinMaxDiffusion(Method):
    name = "minmax-diffusion"
    description = ("generative distillation: class-conditional diffusion trained with min-max "
                   "representativeness/diversity losses, few-step DSR sampling, IPC or time-budget policy")
    params = PARAMS
    supports_budget = True

    def validate(self, ctx: RunContext) -> None:
        p = ctx.params
        for key in ("lambda_pos", "lambda_neg"):
            if p[key] < 0:
                raise DDBenchError(f"{key}={p[key]} is not allowed; it must be >= 0")
        T = p["num_train_timesteps"]
        for key in ("steps", "min_steps"):
            if not 1 <= p[key] <= T:
                raise DDBenchError(f"{key}={p[key]} is not allowed; it must lie in [1, {T}] (num_train_timesteps)")
        if p["policy"] == "calibrated":
            for s in p["pilot_steps"]:
                if not isinstance(s, int) or not 1 <= s <= T:
                    raise DDBenchError(f"pilot_steps value {s!r} is not allowed; each must be an integer in [1, {T}]")
            if len(set(p["pilot_steps"])) < 2:
                raise DDBenchError(f"pilot_steps={p['pilot_steps']!r} is not allowed; give at least two step counts")
            for i in p["pilot_ipcs"]:
                if not isinstance(i, int) or i < 1:
                    raise DDBenchError(f"pilot_ipcs value {i!r} is not allowed; each must be an integer >= 1")
        if p["base_steps"] + p["finetune_steps"] < 1:
            raise DDBenchError("base_steps=0 and finetune_steps=0: the generator needs at least one training step")
        arch_config(p["arch"], ctx.dataset.image_size)
        ctx.registry.get("samplers", p["sampler"])
        ctx.registry.get("policies", p["policy"])
        if ctx.budget is not None:
            if not ctx.budget > 0:
                raise DDBenchError(f"budget={ctx.budget!r} is not allowed; it must be a positive number of seconds")
            # Throughput does not depend on the weights: measure an untrained denoiser of the same shape now,
            # so a hopeless budget fails before the generator is trained.
            ds = ctx.dataset
            sampler = ctx.registry.get("samplers", p["sampler"])
            if hasattr(sampler, "measure"):
                model = build_denoiser(p["arch"], ds.channels, ds.num_classes, ds.image_size)
                thr = sampler.measure(model, ds.num_classes, (ds.channels, ds.image_size, ds.image_size), p["sample_batch"])
                s = p["steps"] if p["policy"] == "fixed-steps" else p["min_steps"]
                need = thr.min_budget(s, p["budget_safety"])
                if ctx.budget < need:
                    raise DDBenchError(
                        f"budget={ctx.budget:g}s is too small to give each of the {ds.num_classes} classes one image at "
                        f"S={s} steps; the minimum on this device is about {need:.2f}s"
                    )

    def distill(self, ctx: RunContext) -> SyntheticSet:
        p, ds = ctx.params, ctx.dataset
        k = ds.num_classes
        shape = (ds.channels, ds.image_size, ds.image_size)
        T = p["num_train_timesteps"]
        t0 = time.perf_counter()
        model, gen_info = obtain_generator(ctx)
        model.to(ctx.device).eval()
        t_gen = time.perf_counter() - t0
        sampler = ctx.registry.get("samplers", p["sampler"])
        policy = ctx.registry.get("policies", p["policy"])

        t1 = time.perf_counter()
        thr = sampler.measure(model, k, shape, p["sample_batch"])
        measure_s = time.perf_counter() - t1
        final_key = (gen_info.get("finetune") or gen_info.get("base"))["key"]

        pilot_seconds = [0.0]

        def pilot(steps: int) -> dict[int, float]:
            return self._pilot(ctx, sampler, model, final_key, steps, pilot_seconds)

        req = PlanRequest(
            num_classes=k, budget=ctx.budget, ipc=ctx.ipc, steps=p["steps"], min_steps=p["min_steps"], max_steps=T,
            throughput=thr, candidates=list(p["pilot_steps"]), pilot=pilot, safety=p["budget_safety"], log=ctx.log,
        )
        decision = policy.decide(req)
        ctx.log(f"minmax-diffusion: policy {decision.policy}: {decision.reason}")

        deadline = None if ctx.budget is None else time.perf_counter() + ctx.budget
        x, y, gen_stats = sampler.generate(
            model, k, decision.steps, image_shape=shape, num_train_timesteps=T,
            ipc=None if ctx.budget is not None else decision.ipc, deadline=deadline, scheduler=p["scheduler"],
            batch_size=p["sample_batch"], seed=ctx.seed, throughput=thr, safety=p["budget_safety"],
            progress=ctx.progress,
        )
        if x.shape[0] == 0:
            need = thr.min_budget(decision.steps, p["budget_safety"])
            raise DDBenchError(
                f"budget={ctx.budget:g}s gave no image per class at S={decision.steps} on this device; "
                f"the minimum is about {need:.2f}s"
            )
        images = from_model_space(ds, x)
        meta: dict[str, Any] = {
            "generator": gen_info,
            "generator_seconds": round(t_gen, 2),
            "policy": decision.as_meta(),
            "sampler": {"name": sampler.name, **gen_stats},
            "throughput_images_per_s": thr.table(sorted({*p["pilot_steps"], decision.steps, p["min_steps"]})),
            "throughput_fit": {"a": thr.a, "b": thr.b, "batch": thr.batch_size},
            "measure_seconds": round(measure_s, 3),
            "pilot_seconds": round(pilot_seconds[0], 2),
            "budget": ctx.budget,
            "diversity_nn_cosine_distance": round(nn_cosine_distance(x, y)["mean"], 4),
        }
        if ctx.budget is not None:
            meta["budget_honoured"] = gen_stats["seconds"] <= ctx.budget
        ctx.log(f"minmax-diffusion: {gen_stats['images']} images ({gen_stats['ipc']}/class) at S={decision.steps} in "
                f"{gen_stats['seconds']:.1f}s ({gen_stats['images_per_second']} images/s)")
        return SyntheticSet(images=images, labels=y, meta=meta)

    # -- the calibrated policy's pilot -----------------------------------------------------------------
    def _pilot(self, ctx, sampler, model, gen_key: str, steps: int, seconds: list[float]) -> dict[int, float]:
        p, ds = ctx.params, ctx.dataset
        cfg = {"gen": gen_key, "steps": steps, "ipcs": list(p["pilot_ipcs"]), "scheduler": p["scheduler"],
               "epochs": p["pilot_epochs"], "models": p["pilot_models"], "seed": ctx.seed, "model": ctx.model}
        h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
        path = ctx.cache_dir / "minmax-diffusion" / "pilots" / f"{h}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                return {int(i): float(a) for i, a in data["acc"].items()}
            except (OSError, ValueError, KeyError):
                pass
        t0 = time.perf_counter()
        ipcs = sorted(p["pilot_ipcs"])
        x, y, _ = sampler.generate(model, ds.num_classes, steps, image_shape=(ds.channels, ds.image_size, ds.image_size),
                                   num_train_timesteps=p["num_train_timesteps"], ipc=ipcs[-1], scheduler=p["scheduler"],
                                   batch_size=p["sample_batch"], seed=ctx.seed + 7_777)
        x = from_model_space(ds, x)
        out = {}
        for ipc in ipcs:
            n = ipc * ds.num_classes  # batches are whole rounds, so the first n images are balanced
            res = ctx.evaluate(SyntheticSet(x[:n], y[:n]), "fast", epochs=p["pilot_epochs"], n_models=p["pilot_models"])
            out[ipc] = res.mean
        seconds[0] += time.perf_counter() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": cfg, "acc": out}))
        return out


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
    register(Calibrated())
