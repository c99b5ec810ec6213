"""The network class, `Denoiser`, and its one config: architecture, classes (+ the null class), noise schedule.

One object, three stages, one name each throughout this package:
- `Denoiser` (this module): the network class; a `denoiser` is an instance whose stage does not matter
  (training, sampling, the cache);
- the *base*: the pretrained denoiser a run starts from (shipped, trained here, or a diffusers folder; base.py);
- the *generator*: the denoiser a run samples, the base after min-max fine-tuning (generator.py).

A diffusers UNet2DModel (default) or DiTTransformer2DModel predicts the noise epsilon of x_t in pixel space
scaled to [-1, 1], conditioned on the timestep and the class label. The label table has one extra entry,
the *null class* (index = num_classes), which training uses for label dropout and sampling for the
unconditional branch of classifier-free guidance (Ho & Salimans 2022; facebookresearch/DiT `models.py`
LabelEmbedder: `class_dropout_prob=0.1`, the null label is `num_classes`).

`DenoiserConfig` is the one place that says what a denoiser is; it is saved beside the diffusers weights
(`ddbench_generator.json`, the file name of the first release, kept so saved caches and the shipped base load),
so a loaded denoiser brings its schedule and class count with it and the sampler never has to be told them again.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddbench.api import DDBenchError

# One config place per (architecture, image size). 28/32 px: channels (32, 64, 64), one ResNet layer per
# level, no attention anywhere (the mid-block attention diffusers adds by default cost 10 % of a step and is
# not needed at 7x7; measured in benchmarks/bench_generator.py). 64 px adds a level with attention at 8x8.
_UNET_SMALL = dict(  # 28 and 32 px share one layout
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    add_attention=False,
)
ARCH_CONFIGS: dict[str, dict[int, dict[str, Any]]] = {
    "unet": {
        28: dict(_UNET_SMALL),
        32: dict(_UNET_SMALL),
        64: dict(
            block_out_channels=(32, 64, 128, 128),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        ),
    },
    # A small DiT (the anchor fine-tunes DiT-XL/2: patch 2, adaLN-zero, 28 layers, 1152 wide).
    # Here 6 layers of width 128 (4 heads x 32), patch 2, in pixel space.
    "dit": {
        28: dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, patch_size=2),
        32: dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, patch_size=2),
        64: dict(num_layers=6, num_attention_heads=4, attention_head_dim=32, patch_size=4),
    },
}

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")


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


@dataclass
class DenoiserConfig:
    """What a denoiser is. Everything a sampler or a loader needs, saved beside the weights."""

    arch: str
    channels: int
    image_size: int
    num_classes: int  # real classes; the label table holds num_classes + 1 entries (the last = null)
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    beta_start: float = 0.0001  # diffusers' defaults = facebookresearch/DiT gaussian_diffusion.py linear schedule
    beta_end: float = 0.02
    clip_sample: bool = True  # x̂0 clipped to [-1, 1] while sampling: pixel space only (latents are not bounded)
    net: dict[str, Any] = field(default_factory=dict)  # the diffusers constructor arguments (ARCH_CONFIGS)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DenoiserConfig":
        d = json.loads(text)
        d["net"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.get("net", {}).items()}
        return cls(**d)




def schedule_kwargs(c: DenoiserConfig) -> dict[str, Any]:
    """The noise schedule of a denoiser, as the arguments of any diffusers scheduler (training and sampling)."""
    return dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                prediction_type=c.prediction_type, beta_start=c.beta_start, beta_end=c.beta_end)


CONFIG_FILE = "ddbench_generator.json"


class Denoiser(nn.Module):
    """eps = net(x_t, t, y) for either diffusers backbone; `y` may hold the null class."""

    def __init__(self, net: nn.Module, config: DenoiserConfig):
        super().__init__()
        self.net = net
        self.config = config
        _no_internal_label_dropout(net)

    decoder = None  # latent.LatentSpace of a latent base (set in generator.py); None in pixel space

    @property
    def arch(self) -> str:
        return self.config.arch

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The denoiser's samples as pixels in [-1, 1] at the dataset's size: the VAE decode of a latent base."""
        return x if self.decoder is None else self.decoder.decode(x)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if self.arch == "dit":
            out = self.net(x, timestep=t, class_labels=y).sample
        else:
            out = self.net(x, t, class_labels=y).sample
        if out.shape[1] == 2 * x.shape[1]:  # a learned-variance DiT (DiT-XL/2: 8 channels): keep eps, as DiTPipeline
            out = out[:, :x.shape[1]]
        return out

    def save(self, path: Path) -> None:
        """diffusers `save_pretrained` with safetensors, plus the DenoiserConfig."""
        self.net.save_pretrained(str(path), safe_serialization=True)
        (Path(path) / CONFIG_FILE).write_text(self.config.to_json())

    @classmethod
    def load(cls, path: Path) -> "Denoiser":
        config = DenoiserConfig.from_json((Path(path) / CONFIG_FILE).read_text())
        net = _net_class(config.arch).from_pretrained(str(path), use_safetensors=True, low_cpu_mem_usage=False)
        return cls(net, config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _no_internal_label_dropout(net: nn.Module) -> None:
    """diffusers' DiT drops labels itself in train mode (LabelEmbedding.dropout_prob, 0.1), independently in every
    block's copy of the label table; ddbench drops them once, outside (`p_uncond`), so that dropped samples are
    known (they join no min-max memory). The table keeps its null row; only the hidden dropout is switched off."""
    from diffusers.models.embeddings import LabelEmbedding

    for m in net.modules():
        if isinstance(m, LabelEmbedding):
            m.dropout_prob = 0.0


def _net_class(arch: str):
    from diffusers import DiTTransformer2DModel, UNet2DModel

    return {"unet": UNet2DModel, "dit": DiTTransformer2DModel}[arch]


def build_denoiser(config: DenoiserConfig) -> Denoiser:
    cfg = dict(config.net)
    n_labels = config.num_classes + 1  # + the null class of classifier-free guidance
    if config.arch == "unet":
        from diffusers import UNet2DModel

        net = UNet2DModel(sample_size=config.image_size, in_channels=config.channels,
                          out_channels=config.channels, num_class_embeds=n_labels, **cfg)
    else:
        from diffusers import DiTTransformer2DModel

        if config.image_size % cfg["patch_size"]:
            raise DDBenchError(f"image size {config.image_size} is not a multiple of the DiT patch size "
                               f"{cfg['patch_size']}")
        net = DiTTransformer2DModel(sample_size=config.image_size, in_channels=config.channels,
                                    out_channels=config.channels, num_embeds_ada_norm=n_labels,
                                    norm_type="ada_norm_zero", **cfg)
    return Denoiser(net, config)


def guided_eps(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance in DiT's form, eps_u + s * (eps_c - eps_u) (facebookresearch/DiT `models.py`
    forward_with_cfg), both branches in one batched call. s = 1 is the conditional branch alone (one call)."""
    n = x.shape[0]
    if t.ndim == 0:
        t = t.expand(n)
    if scale == 1.0:
        return denoiser(x, t, y)
    null = torch.full_like(y, denoiser.config.null_class)
    eps = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    eps_c, eps_u = eps[:n], eps[n:]
    return eps_u + scale * (eps_c - eps_u)
