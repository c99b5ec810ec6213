"""minmax-diffusion's settings (every default with its source), and the rules that tie several of them together:
the guidance a run samples with, and the sampling levers a sampler must declare."""
from __future__ import annotations

from typing import Any

from ddbench.api import DDBenchError, Param, RunContext
from ddbench.helpers import BUDGET_SAFETY
from ddbench.helpers import SPACES as SELECTION_SPACES

from . import refine
from .prototypes import KINDS as PROTOTYPE_KINDS
from .sampler import LEVER_PARAMS, LEVERS_OFF, SCHEDULERS, check_lever_values, needs_prototypes

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
    "budget_safety": Param(BUDGET_SAFETY, "docs/minmax.md#dsr-sampler-and-policies: 10% margin so the last batch "
                                          "ends inside the budget",
                           "factor on predicted batch times under a budget", min=1.0),
    # -- levers beyond the seed paper (docs/minmax.md#levers-beyond-the-seed) ---------------------------
    "prototypes": Param("none", "D4M (Su et al., CVPR 2024; suduo94/D4M gen_prototype.py: per-class k-means, k = IPC) "
                        "and MGD3 (Chan-Santiago et al., ICML 2025; jachansantiago/mode_guidance); 'none' = the seed",
                        "class prototypes for strength < 1 and mode_guidance: none, or kmeans of the real images "
                        "in the generator's space (k = the images per class)", choices=PROTOTYPE_KINDS),
    **LEVER_PARAMS,  # strength, mode_guidance, mode_guidance_stop, guidance_interval: the DSR sampler's own
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


def policy_says(ctx: RunContext, attribute: str) -> bool:
    """A contract flag of the run's policy (`Policy.holds_ipc`, `Policy.fixed_steps`); a policy registered
    duck-typed, with decide() only, says neither."""
    return bool(getattr(ctx.registry.get("policies", ctx.params["policy"]), attribute, False))


def holds_ipc(ctx: RunContext) -> bool:
    """Whether the run's policy keeps --ipc under a budget."""
    return policy_says(ctx, "holds_ipc")


def fewest_steps(ctx: RunContext) -> int:
    """The fewest denoising steps the run's policy may sample at: `steps` for a policy with fixed S, else
    `min_steps`."""
    return ctx.params["steps"] if policy_says(ctx, "fixed_steps") else ctx.params["min_steps"]


LEVERS = ("prototypes", *LEVER_PARAMS)  # the pilot's cache key: every setting that changes the samples


def check_levers(p: dict[str, Any]) -> None:
    """The levers' settings that each Param alone cannot check."""
    check_lever_values(p)
    if needs_prototypes(p) and p["prototypes"] == "none":
        raise DDBenchError("strength < 1 and mode_guidance > 0 need prototypes; set prototypes=kmeans")


def check_sampler_levers(sampler, p: dict[str, Any], label: str) -> None:
    """Refuse levers turned on for a sampler that does not declare them in its `params` (ddbench.api.Sampler): a
    third party's sampler would ignore them and the run be recorded as if they applied. Prototypes are used only
    through strength or mode_guidance."""
    declared = set(sampler.params)
    on = [f"{k}={p[k]}" for k, off in LEVERS_OFF.items() if tuple(_seq(p[k])) != tuple(_seq(off)) and k not in declared]
    if p["prototypes"] != "none" and not declared & {"strength", "mode_guidance"}:
        on.insert(0, f"prototypes={p['prototypes']}")
    if on:
        raise DDBenchError(f"{label} does not honour {', '.join(on)} (its params: {', '.join(sorted(declared)) or 'none'}"
                           "); turn them off with --set (prototypes=none, strength=1, mode_guidance=0, "
                           "guidance_interval=0,1) or use a sampler that declares them")


def _seq(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)
