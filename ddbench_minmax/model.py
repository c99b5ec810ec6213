"""The class-conditional denoiser: a diffusers UNet2DModel (default) or DiTTransformer2DModel.

Both predict the noise epsilon of x_t in pixel space scaled to [-1, 1], conditioned on the timestep and
the class label, behind one call: `Denoiser(x, t, y) -> eps`. Architectures are sized per image size in
ARCH_CONFIGS, the one place that says how big the generator is.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddbench.api import DDBenchError

# One config place per (architecture, image size). The 28/32 px UNet is the one measured in REFERENCE.md §8
# (~1.1 M parameters, no attention: ~0.52 s per training step of batch 64 at 28x28x1 on 2 CPU cores).
# 64 px adds a fourth level with one attention block at 8x8 (not measured here).
ARCH_CONFIGS: dict[str, dict[int, dict[str, Any]]] = {
    "unet": {
        28: dict(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        ),
        32: dict(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        ),
        64: dict(
            block_out_channels=(32, 64, 128, 128),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        ),
    },
    # A small DiT (the anchor Minimax Diffusion fine-tunes DiT-XL/2: patch 2, adaLN-zero, 28 layers, 1152
    # wide). Here 6 layers of width 128 (4 heads x 32), patch 2, trained from scratch in pixel space.
    "dit": {
        28: dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, patch_size=2),
        32: dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, patch_size=2),
        64: dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, patch_size=4),
    },
}


def arch_config(arch: str, image_size: int) -> dict[str, Any]:
    if arch not in ARCH_CONFIGS:
        raise DDBenchError(f"arch={arch!r} is not allowed; choose one of {', '.join(ARCH_CONFIGS)}")
    sizes = ARCH_CONFIGS[arch]
    if image_size not in sizes:
        raise DDBenchError(
            f"no {arch} generator configured for {image_size} px images; configured sizes: "
            f"{', '.join(map(str, sizes))} (add one to ddbench_minmax/model.py ARCH_CONFIGS)"
        )
    return copy.deepcopy(sizes[image_size])


class Denoiser(nn.Module):
    """eps = net(x_t, t, y) for either diffusers backbone."""

    def __init__(self, net: nn.Module, arch: str):
        super().__init__()
        self.net = net
        self.arch = arch

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if self.arch == "dit":
            return self.net(x, timestep=t, class_labels=y).sample
        return self.net(x, t, class_labels=y).sample

    def save(self, path: Path) -> None:
        """diffusers `save_pretrained` with safetensors."""
        self.net.save_pretrained(str(path), safe_serialization=True)

    @classmethod
    def load(cls, path: Path, arch: str) -> "Denoiser":
        net_cls = _net_class(arch)
        net = net_cls.from_pretrained(str(path), use_safetensors=True, low_cpu_mem_usage=False)
        return cls(net, arch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _net_class(arch: str):
    from diffusers import DiTTransformer2DModel, UNet2DModel

    return {"unet": UNet2DModel, "dit": DiTTransformer2DModel}[arch]


def build_denoiser(arch: str, channels: int, num_classes: int, image_size: int) -> Denoiser:
    cfg = arch_config(arch, image_size)
    if arch == "unet":
        from diffusers import UNet2DModel

        net = UNet2DModel(
            sample_size=image_size,
            in_channels=channels,
            out_channels=channels,
            num_class_embeds=num_classes,  # class embedding added to the timestep embedding
            **cfg,
        )
    else:
        from diffusers import DiTTransformer2DModel

        if image_size % cfg["patch_size"]:
            raise DDBenchError(f"image size {image_size} is not a multiple of the DiT patch size {cfg['patch_size']}")
        net = DiTTransformer2DModel(
            sample_size=image_size,
            in_channels=channels,
            out_channels=channels,
            num_embeds_ada_norm=num_classes,  # class labels for the adaLN-zero conditioning
            norm_type="ada_norm_zero",
            **cfg,
        )
    return Denoiser(net, arch)
