"""The pretrained base: its recipe and how a base is trained with it.

The anchors fine-tune a *pretrained, converged* denoiser (DiT-XL/2). Nothing can be downloaded here, so the
base is trained on this machine by

    python -m ddbench_minmax.base train [--steps N] [--threads auto|N] [--out DIR]

(the command's parser is ./cli.py; resumable: rerun the same command after an interruption), and the result
for Fashion-MNIST ships inside the package under `ddbench_minmax/weights/fashion-mnist/` (./shipped.py):
`generator/` (diffusers safetensors, its config and `ddbench_generator.json`) and `meta.json` (the weights'
sha256, the full recipe, the data fingerprint, the measured training time and the machine's load). A run loads
it when the dataset's fingerprint matches; `base=train` (or any other dataset) trains a base with the same
recipe into the run's cache instead.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cache import DenoiserCache
from .model import DenoiserConfig, arch_config


@dataclass
class BaseRecipe:
    """How the base is trained. Each default cites where it comes from."""

    arch: str = "unet"  # diffusers UNet2DModel, 1.05 M parameters at 28 px (model.py ARCH_CONFIGS)
    # Cosine schedule: Nichol & Dhariwal 2021 (improved DDPM), better than linear at 28-32 px; the class-
    # conditioned MNIST example of huggingface/diffusion-models-class unit 2 uses `squaredcos_cap_v2`.
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000  # facebookresearch/DiT diffusion/__init__.py create_diffusion: 1000
    steps: int = 4000  # ~8.5 epochs of 60k at batch 128 (TeaPearce/Conditional_Diffusion_MNIST: ~4.7k steps)
    batch_size: int = 128  # huggingface/diffusion-models-class unit 2: batch 128
    lr: float = 1e-3  # huggingface/diffusion-models-class unit 2: Adam lr 1e-3
    warmup_steps: int = 200  # diffusers train_unconditional.py --lr_warmup_steps (500 for 10x longer runs)
    lr_schedule: str = "cosine"  # diffusers train_unconditional.py --lr_scheduler cosine
    ema_decay: float = 0.9999  # vimar-gu/MinimaxDiffusion train_dit.py update_ema(decay=0.9999), with warm-up
    p_uncond: float = 0.1  # facebookresearch/DiT models.py class_dropout_prob=0.1
    snr_gamma: float = 5.0  # Min-SNR-γ, Hang et al. ICCV 2023 (γ = 5)
    precision: str = "bf16"
    seed: int = 0
    snapshot_every: int = 500  # EMA snapshots for the quality-vs-steps curve (docs/minmax.md)

    def denoiser_config(self, channels: int, image_size: int, num_classes: int) -> DenoiserConfig:
        return DenoiserConfig(arch=self.arch, channels=channels, image_size=image_size, num_classes=num_classes,
                               num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                               net=arch_config(self.arch, image_size))


def train_base(dataset, recipe: BaseRecipe, work_dir: Path, out: DenoiserCache, progress: bool = True, log=print,
               device: str = "cpu", threads: int | str = "auto", stop_at: int | None = None,
               command: str | None = None) -> dict[str, Any]:
    """Train the base with `recipe` on `dataset`, resumable through work_dir; save it into `out`. `command`: the
    command line recorded in meta.json (the training command's, cli.py)."""
    from ddbench.helpers import dataset_fingerprint, seeded

    from .model import build_denoiser
    from .train import TrainSpec, to_signed_pixels, train_phase

    cfg = recipe.denoiser_config(dataset.channels, dataset.image_size, dataset.num_classes)
    with seeded(recipe.seed, "minmax-base", "init"):
        base = build_denoiser(cfg)
    spec = TrainSpec(steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.seed,
                     warmup_steps=recipe.warmup_steps, lr_schedule=recipe.lr_schedule, ema_decay=recipe.ema_decay,
                     p_uncond=recipe.p_uncond, snr_gamma=recipe.snr_gamma, precision=recipe.precision,
                     snapshot_every=recipe.snapshot_every, name="base")
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"minmax-diffusion: training the base ({base.num_parameters():,} parameters, "
        f"{recipe.steps} steps of batch {recipe.batch_size}, {recipe.precision}) in {work_dir}")
    load_before = os.getloadavg()
    ema, stats = train_phase(base, to_signed_pixels(dataset, dataset.train_x.float()), dataset.train_y.long(), spec,
                             checkpoint_path=work_dir / "checkpoint.pt", snapshot_dir=work_dir / "snapshots",
                             progress=progress, log=log, device=device, threads=threads, stop_at=stop_at)
    import torch

    meta = {
        "dataset": dataset.name,
        "data": dataset_fingerprint(dataset),
        "recipe": asdict(recipe),
        "generator_config": asdict(cfg),  # the meta key the shipped base was written with
        "train": stats,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "command": command or " ".join(["python -m ddbench_minmax.base", *sys.argv[1:]]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return out.save(ema, meta)


if __name__ == "__main__":  # the documented command `python -m ddbench_minmax.base train` (its parser: cli.py)
    from ddbench_minmax.cli import main

    raise SystemExit(main(BaseRecipe, train_base))
