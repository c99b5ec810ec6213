"""A user's pretrained base as a local diffusers folder (`--set base=PATH`): layout checks, hashing, loading.

Accepted layouts, all read offline (`local_files_only=True`, never a hub download):

- a pipeline folder (`model_index.json`), e.g. the diffusers `DiTPipeline` of DiT-XL-2-256 (`transformer/`,
  `vae/`, `scheduler/`) or a `DDPMPipeline` (`unet/`, `scheduler/`): with a `vae/` it runs in latent space;
- a bare `DiTTransformer2DModel` / `UNet2DModel` folder (`config.json` + weights) with the noise schedule in a
  `scheduler_config.json` beside it, or a folder ddbench saved itself (`ddbench_generator.json`): pixel space.

`inspect_folder` checks the layout and the configs (cheap: no weights are read) so a missing or foreign piece is a
one-line error before any work; `folder_identity` hashes the weights (sha256 per file) and the configs, the
provenance a run records and the key its fine-tuning cache uses; `load_folder` builds the models.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ddbench.api import DDBenchError

from .model import CONFIG_FILE, Denoiser, DenoiserConfig

BUILTIN = ("shipped", "train")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
BIN_OPT_IN = "DDBENCH_ALLOW_BIN_WEIGHTS"  # a .bin (pickled) weight file is read only with this set to 1
# diffusers names of the class-conditional denoisers ddbench can drive. The hub's DiT-XL-2-256 still says
# "Transformer2DModel" (diffusers maps it to DiTTransformer2DModel when norm_type is ada_norm_zero).
DIT_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")
UNET_CLASSES = ("UNet2DModel",)
VAE_CLASSES = ("AutoencoderKL",)


def is_folder_base(value: str) -> bool:
    """`base` names a folder unless it is one of the built-in choices."""
    return value not in BUILTIN


@dataclass
class BaseFolder:
    """What a checked folder holds: where each part is and its config (weights not read yet)."""

    path: Path
    arch: str  # "dit" | "unet"
    denoiser_dir: Path
    denoiser_config: dict[str, Any]
    scheduler_config: dict[str, Any]
    vae_dir: Path | None = None
    vae_config: dict[str, Any] | None = None
    weight_files: dict[str, Path] = field(default_factory=dict)  # relative name -> path

    @property
    def latent(self) -> bool:
        return self.vae_dir is not None

    @property
    def num_classes(self) -> int:
        """Real label rows; the null row of classifier-free guidance is the one after them (DiT's LabelEmbedder).
        A folder ddbench saved says it in its DenoiserConfig (its DiT tables have one spare row)."""
        own = self.denoiser_dir / CONFIG_FILE
        if own.is_file():
            return DenoiserConfig.from_json(own.read_text()).num_classes
        c = self.denoiser_config
        if self.arch == "dit":
            return int(c["num_embeds_ada_norm"])
        return int(c["num_class_embeds"]) - 1  # ddbench's UNet tables end with the null row

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell: 2^(levels-1), as diffusers pipelines compute `vae_scale_factor`."""
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1) if self.vae_config else 1

    @property
    def pixel_size(self) -> int:
        """The image size the base sees: its sample size, times the VAE factor in latent space."""
        return int(self.denoiser_config["sample_size"]) * self.vae_factor

    def as_denoiser_config(self) -> DenoiserConfig:
        """The folder's diffusers configs as the DenoiserConfig ddbench drives the base with."""
        c, s = self.denoiser_config, self.scheduler_config
        return DenoiserConfig(
            arch=self.arch, channels=int(c["in_channels"]), image_size=int(c["sample_size"]),
            num_classes=self.num_classes, num_train_timesteps=int(s.get("num_train_timesteps", 1000)),
            beta_schedule=s.get("beta_schedule", "linear"), prediction_type=s.get("prediction_type", "epsilon"),
            beta_start=float(s.get("beta_start", 0.0001)), beta_end=float(s.get("beta_end", 0.02)),
            # facebookresearch/DiT sample.py: clip_denoised=False in latent space (latents are not in [-1, 1])
            clip_sample=not self.latent,
        )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DDBenchError(f"base folder {path.parent}: {path.name} is missing ({what})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DDBenchError(f"base folder: {path} is not readable JSON ({exc})") from None


def _weights(d: Path) -> Path:
    """The folder's weight file: safetensors (tensors only, by construction); a `.bin` is a pickle, read only where
    the user opts in (BIN_OPT_IN=1), and then by diffusers with torch's weights-only unpickler."""
    for name in WEIGHT_FILES:
        if (d / name).is_file():
            if name.endswith(".bin") and os.environ.get(BIN_OPT_IN) != "1":
                raise DDBenchError(f"base folder {d}: its weights are a pickle ({name}), which ddbench does not read "
                                   f"unless {BIN_OPT_IN}=1 is set; give safetensors (diffusers: "
                                   "save_pretrained(..., safe_serialization=True))")
            if name.endswith(".safetensors"):
                _check_safetensors(d / name)
            return d / name
    raise DDBenchError(f"base folder {d}: no weights ({' or '.join(WEIGHT_FILES)} is missing)")


MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header (huggingface/safetensors: MAX_HEADER_SIZE)


def _check_safetensors(path: Path) -> None:
    """The file's header against its size, before anything big is read: a sparse or truncated multi-GB file
    used to fill memory before the loader refused it. safetensors layout: an 8-byte little-endian header length,
    a JSON header of tensors with their `data_offsets`, then exactly the bytes those offsets cover."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= min(MAX_HEADER, size - 8):
                raise ValueError(f"a header length of {n} bytes in a file of {size}")
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise DDBenchError(f"base folder: {path} is not a readable safetensors file ({exc})") from None
    if max(ends, default=0) != size - 8 - n:
        raise DDBenchError(f"base folder: {path} holds {size} bytes but its header describes "
                           f"{8 + n + max(ends, default=0)}; the file is truncated, padded or not safetensors")


def _check_denoiser(d: Path, cfg: dict[str, Any]) -> str:
    name = cfg.get("_class_name")
    if name in DIT_CLASSES:
        if cfg.get("norm_type") != "ada_norm_zero" or not cfg.get("num_embeds_ada_norm"):
            raise DDBenchError(f"base folder: {d / 'config.json'} is a {name} without class conditioning "
                               f"(norm_type ada_norm_zero with num_embeds_ada_norm is needed)")
        return "dit"
    if name in UNET_CLASSES:
        if not cfg.get("num_class_embeds") or cfg["num_class_embeds"] < 2:
            raise DDBenchError(f"base folder: {d / 'config.json'} is an unconditional UNet2DModel "
                               f"(num_class_embeds with the classes and a null row is needed)")
        return "unet"
    raise DDBenchError(f"base folder: {d / 'config.json'} is a {name!r} config; expected one of "
                       f"{', '.join(DIT_CLASSES + UNET_CLASSES)}")


def _check_scheduler(cfg: dict[str, Any], where: Path) -> None:
    from .model import BETA_SCHEDULES

    beta = cfg.get("beta_schedule", "linear")
    if beta not in BETA_SCHEDULES:
        raise DDBenchError(f"base folder: {where} has beta_schedule={beta!r}; supported: {', '.join(BETA_SCHEDULES)}")
    steps = cfg.get("num_train_timesteps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise DDBenchError(f"base folder: {where} has num_train_timesteps={steps!r}; it must be an integer >= 1")
    pred = cfg.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise DDBenchError(f"base folder: {where} has prediction_type={pred!r}; only 'epsilon' is supported")
    if cfg.get("trained_betas"):
        raise DDBenchError(f"base folder: {where} gives trained_betas; only named beta schedules are supported")


def inspect_folder(value: str) -> BaseFolder:
    """Check a folder's layout and configs without reading weights; a one-line DDBenchError names what is wrong."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DDBenchError(f"base={value!r} is not allowed; give shipped, train or an existing local diffusers "
                           f"folder (no such folder)")
    path = path.resolve()
    if (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json", "the pipeline index")
        parts = [p for p in ("transformer", "unet") if p in index]
        if not parts:
            raise DDBenchError(f"base folder {path}: model_index.json names no transformer or unet "
                               f"(a {index.get('_class_name', '?')} pipeline)")
        den_dir = path / parts[0]
        sched_path = path / "scheduler" / "scheduler_config.json"
        vae_dir = path / "vae" if "vae" in index else None
    else:
        den_dir, vae_dir = path, None
        sched_path = path / "scheduler_config.json"
    den_cfg = _read_json(den_dir / "config.json", "the denoiser's config")
    arch = _check_denoiser(den_dir, den_cfg)
    weights = {str(den_dir.relative_to(path) / _weights(den_dir).name): _weights(den_dir)}
    if sched_path.is_file():
        sched_cfg = _read_json(sched_path, "the noise schedule")
    elif (den_dir / CONFIG_FILE).is_file():  # a folder ddbench saved: its DenoiserConfig holds the schedule
        g = DenoiserConfig.from_json((den_dir / CONFIG_FILE).read_text())
        sched_cfg = {"num_train_timesteps": g.num_train_timesteps, "beta_schedule": g.beta_schedule,
                     "beta_start": g.beta_start, "beta_end": g.beta_end, "prediction_type": g.prediction_type}
    else:
        raise DDBenchError(f"base folder {path}: {sched_path.relative_to(path)} is missing (the noise schedule "
                           f"the denoiser was trained with)")
    _check_scheduler(sched_cfg, sched_path)
    vae_cfg = None
    if vae_dir is not None:
        vae_cfg = _read_json(vae_dir / "config.json", "the VAE's config")
        if vae_cfg.get("_class_name") not in VAE_CLASSES:
            raise DDBenchError(f"base folder: {vae_dir / 'config.json'} is a {vae_cfg.get('_class_name')!r} "
                               f"config; expected {', '.join(VAE_CLASSES)}")
        w = _weights(vae_dir)
        weights[str(w.relative_to(path))] = w
        if vae_cfg.get("latent_channels") != den_cfg.get("in_channels"):
            raise DDBenchError(f"base folder {path}: the VAE makes {vae_cfg.get('latent_channels')}-channel latents "
                               f"but the denoiser takes {den_cfg.get('in_channels')} channels")
    return BaseFolder(path=path, arch=arch, denoiser_dir=den_dir, denoiser_config=den_cfg,
                      scheduler_config=sched_cfg, vae_dir=vae_dir, vae_config=vae_cfg, weight_files=weights)


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from ddbench.helpers import file_sha256

    return file_sha256(Path(path))


def folder_identity(folder: BaseFolder) -> dict[str, Any]:
    """The sha256 of every weight file and of the configs, and one digest of both: provenance and cache key."""
    files = {}
    for rel, p in sorted(folder.weight_files.items()):
        st = os.stat(p)
        files[rel] = _sha256(str(p), st.st_size, st.st_mtime_ns)
    configs = {"denoiser": folder.denoiser_config, "scheduler": folder.scheduler_config, "vae": folder.vae_config}
    return {"path": str(folder.path), "weights_sha256": files, "configs": configs,
            "sha256": hashlib.sha256(json.dumps({"weights": files, "configs": configs},
                                                sort_keys=True).encode()).hexdigest()}


def _denoiser_class(arch: str):
    from diffusers import DiTTransformer2DModel, UNet2DModel

    return {"dit": DiTTransformer2DModel, "unet": UNet2DModel}[arch]


def load_folder(folder: BaseFolder, untrained: bool = False):
    """(Denoiser, VAE or None). `untrained` builds the same shapes from the configs alone (throughput checks)."""
    cls = _denoiser_class(folder.arch)
    kw = dict(local_files_only=True, low_cpu_mem_usage=False)
    if untrained:
        net = cls.from_config({k: v for k, v in folder.denoiser_config.items() if k != "_class_name"})
    else:
        net = cls.from_pretrained(str(folder.denoiser_dir), **kw,
                                  use_safetensors=next(iter(folder.weight_files)).endswith(".safetensors"))
    vae = None
    if folder.latent:
        from diffusers import AutoencoderKL

        if untrained:
            vae = AutoencoderKL.from_config({k: v for k, v in folder.vae_config.items() if k != "_class_name"})
        else:
            vae = AutoencoderKL.from_pretrained(str(folder.vae_dir), **kw,
                                                use_safetensors=_weights(folder.vae_dir).suffix == ".safetensors")
        vae.eval().requires_grad_(False)
    return Denoiser(net, folder.as_denoiser_config()), vae
