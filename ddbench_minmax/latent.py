"""Latent space: the VAE between a dataset's pixels and a latent DiT (the seed's configuration).

FanJunqiao/DD_Track2 `train_dit.py` resizes 32 px CIFAR images to 256 (`transforms.Resize([256, 256])`),
encodes them with the Stable Diffusion VAE (`sd-vae-ft-ema`) and scales the latents by 0.18215
(`vae.encode(x).latent_dist.sample().mul_(0.18215)`); `sample.py` decodes `vae.decode(z / 0.18215)`. Here the
factor is the VAE's own `scaling_factor` (0.18215 in sd-vae-ft-*), the size is the denoiser's `sample_size`
times the VAE's downsampling factor (32 x 8 = 256 for DiT-XL-2-256), images go in as [-1, 1] (the range the VAE
was trained on), a grey dataset repeats its channel into an RGB VAE and averages the three out, and decoded
images are resized to the dataset's size. Everything outside this module keeps working in pixels scaled to
[-1, 1] at the dataset's size (`train.to_signed_pixels`); the latents exist only inside training and sampling.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


class LatentSpace:
    """encode: dataset-size pixels in [-1, 1] -> scaled latents; decode: the way back. Holds the frozen VAE."""

    def __init__(self, vae, pixel_size: int, image_size: int, channels: int, device: torch.device | str = "cpu",
                 decode_batch: int = 16):
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.scale = float(vae.config.scaling_factor)
        self.pixel_size, self.image_size, self.channels = pixel_size, image_size, channels
        self.vae_channels = int(vae.config.in_channels)
        self.decode_batch = decode_batch

    def describe(self) -> dict:
        """What the run records (and the fine-tuning cache key holds) about the pixel <-> latent mapping."""
        return {"pixel_size": self.pixel_size, "scaling_factor": self.scale, "resize": "bilinear, antialias",
                "grey": "repeat in, mean out" if self.channels == 1 and self.vae_channels == 3 else "none"}

    def _resize(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One draw from the VAE's posterior, as the seed's `latent_dist.sample()`, with `gen` for its noise;
        without `gen`, the posterior mean (deterministic: prototypes)."""
        x = x.to(self.device, torch.float32)
        if x.shape[1] == 1 and self.vae_channels == 3:
            x = x.repeat(1, 3, 1, 1)
        x = self._resize(x, self.pixel_size).clamp(-1, 1)
        dist = self.vae.encode(x).latent_dist
        if gen is None:
            return dist.mean * self.scale
        noise = torch.randn(dist.mean.shape, generator=gen).to(self.device)
        return (dist.mean + dist.std * noise) * self.scale

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(z.to(self.device, torch.float32) / self.scale).sample
        x = self._resize(x, self.image_size)
        if self.channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        return x.clamp(-1, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> dataset-size pixels in [-1, 1]; in chunks of `decode_batch` unless gradients are wanted."""
        if torch.is_grad_enabled():
            return self._decode(z)
        with torch.no_grad():
            return torch.cat([self._decode(c) for c in z.split(self.decode_batch)]) if len(z) else z

    def through_decoder(self, embed: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """A pixel-space embedder of the min-max losses applied to latents: decode (with gradient), then embed."""
        return lambda z: embed(self.decode(z))
