"""The generator of a run: a pretrained base, then min-max fine-tuning, each cached (names: model.py).

As the anchors do (vimar-gu/MinimaxDiffusion `train_dit.py`, FanJunqiao/DD_Track2 `train_dit.py`): start from a
pretrained class-conditional generator and fine-tune it with L_diff + λ_r·L_r + λ_d·L_d. The base is the
shipped one when it was trained on exactly this data (`base=shipped`, default), otherwise it is trained here
with the same recipe (`base=train`, or automatically for any other dataset) and cached.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, replace
from typing import Any, Callable

import torch

from ddbench.api import DDBenchError, RunContext
from ddbench.helpers import dataset_fingerprint, derive_seed, seeded

from .base import BaseRecipe
from .cache import CorruptCache, DenoiserCache, cache_key
from .folder import BaseFolder, folder_identity, inspect_folder, is_folder_base, load_folder
from .latent import LatentSpace
from .model import Denoiser
from .shipped import load_verified, shipped_cache
from .train import TrainSpec, to_signed_pixels, train_phase

EMBEDDINGS = ("x0", "classifier", "random-convnet")


def base_recipe(ctx: RunContext) -> BaseRecipe:
    p = ctx.params
    return BaseRecipe(arch=p["arch"], steps=p["base_steps"], seed=0)


def make_embedder(kind: str, ctx: RunContext, classifier=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The space the min-max losses compare in: the predicted clean image (the anchor's x̂0), the features of
    the real-data classifier (ddbench/host/classifier.py), or those of a frozen random ConvNet (DM's embedder kind)."""
    ds = ctx.dataset
    if kind == "x0":
        return lambda x: x.flatten(start_dim=1)
    if kind == "classifier":
        assert classifier is not None
        return lambda x: classifier.embed(ds.normalise((x + 1) / 2))
    if kind == "random-convnet":
        with seeded(ctx.seed, "minmax", "random-convnet"):
            net = ctx.build_model("convnet")
        net.to(ctx.device).eval()
        for prm in net.parameters():
            prm.requires_grad_(False)
        return lambda x: net.embed(ds.normalise((x + 1) / 2)).flatten(start_dim=1)
    raise DDBenchError(f"embedding={kind!r} is not allowed; choose one of {', '.join(EMBEDDINGS)}")


def _cached(ctx: RunContext, cache: DenoiserCache, train: Callable[[DenoiserCache], tuple[Denoiser, dict]],
            identity: dict[str, Any], what: str) -> tuple[Denoiser, dict[str, Any]]:
    with cache.lock():
        if cache.exists():
            try:
                denoiser, meta = cache.load()
                ctx.log(f"minmax-diffusion: {what} loaded from {cache.root}")
                return denoiser, {**meta, "cache": "hit", "cache_path": str(cache.root)}
            except CorruptCache as exc:
                if ctx.params["on_corrupt_cache"] == "error":
                    raise DDBenchError(f"cached {what} is corrupt: {exc}; delete {cache.root} or set "
                                       f"on_corrupt_cache=rebuild") from None
                ctx.log(f"minmax-diffusion: cached {what} is corrupt ({exc}); rebuilding it")
                cache.clear()
        denoiser, stats = train(cache)
        # "config": the meta key of the first release (old cache entries keep reading the same)
        meta = cache.save(denoiser, {"key": cache.key, "config": identity, "train": stats,
                                     "parameters": denoiser.num_parameters()})
        return denoiser, {**meta, "cache": "miss", "cache_path": str(cache.root)}


def obtain_base(ctx: RunContext) -> tuple[Denoiser, dict[str, Any]]:
    """The pretrained base of `base=shipped|train`: the shipped one when it was trained on exactly this data
    with this arch, else one trained here with the recipe (cached by the recipe and the data)."""
    ds, p = ctx.dataset, ctx.params
    fp = dataset_fingerprint(ds)
    recipe = base_recipe(ctx)
    shipped = shipped_cache(ds.name)
    if p["base"] == "shipped" and shipped.meta_path.is_file():
        base, meta = load_verified(shipped)
        same_recipe = meta.get("recipe", {}).get("arch") == recipe.arch
        if meta.get("data") == fp and same_recipe:
            ctx.log(f"minmax-diffusion: shipped base {shipped.root} (sha256 {meta['sha256'][:12]}...)")
            return base, {**meta, "source": "shipped", "cache_path": str(shipped.root)}
        ctx.log(f"minmax-diffusion: the shipped base was trained on other data or another arch "
                f"(fingerprint {meta.get('data')} vs {fp}); training a base here instead")
    from .base import train_base

    identity = {"dataset": ds.name, "data": fp, "recipe": asdict(recipe)}
    cache = DenoiserCache.for_key(ctx.cache_dir, f"{ds.name}-{cache_key('base', identity)}")

    with cache.lock():
        if cache.exists():
            try:
                base, meta = cache.load()
                return base, {**meta, "source": "trained", "cache": "hit", "cache_path": str(cache.root)}
            except CorruptCache as exc:
                ctx.log(f"minmax-diffusion: cached base is corrupt ({exc}); retraining it")
                cache.clear()
        meta = train_base(ds, recipe, cache.root / "work", cache, progress=ctx.progress, log=ctx.log,
                          device=ctx.device)
        base, meta = cache.load()
        return base, {**meta, "source": "trained", "cache": "miss", "cache_path": str(cache.root)}


def sample_shape(denoiser: Denoiser) -> tuple[int, int, int]:
    """The shape of the denoiser's own samples (latents for a latent base): what a sampler draws noise in."""
    c = denoiser.config
    return (c.channels, c.image_size, c.image_size)




def to_denoiser_space(denoiser: Denoiser, images: torch.Tensor | None) -> torch.Tensor | None:
    """(classes, M, C, H, W) pixel tensors in [-1, 1] (e.g. k-means prototypes) in the denoiser's space: the
    VAE's posterior means for a latent base, unchanged in pixel space."""
    if images is None or getattr(denoiser, "decoder", None) is None:
        return images
    k, m = images.shape[:2]
    z = denoiser.decoder.encode(images.flatten(0, 1))
    return z.view(k, m, *z.shape[1:]).cpu()


def check_base_folder(value: str, ds) -> BaseFolder:
    """`base=PATH` against the dataset, before any work: the folder's layout and configs, the label rows,
    and (pixel space) the image shape. One-line DDBenchError naming what is missing or foreign."""
    folder = inspect_folder(value)
    if ds.num_classes > folder.num_classes:
        raise DDBenchError(f"base folder {folder.path}: its label table has {folder.num_classes} classes; the "
                           f"dataset {ds.name} has {ds.num_classes} (each class needs its own row)")
    if not folder.latent:
        c = folder.denoiser_config
        have, want = (c.get("in_channels"), c.get("sample_size")), (ds.channels, ds.image_size)
        if have != want:
            raise DDBenchError(f"base folder {folder.path}: a pixel-space model of {have[0]} channels at {have[1]} px; "
                               f"the dataset {ds.name} has {want[0]} channels at {want[1]} px (a latent "
                               "base needs vae/)")
    return folder


def untrained_folder_base(folder: BaseFolder, ctx: RunContext) -> Denoiser:
    """The folder base's shapes with random weights (and VAE): throughput does not depend on the weights."""
    ds = ctx.dataset
    base, vae = load_folder(folder, untrained=True)
    if vae is not None:
        base.decoder = LatentSpace(vae, folder.pixel_size, ds.image_size, ds.channels, ctx.device,
                                   ctx.params["vae_batch"])
    return base


def folder_base(ctx: RunContext) -> tuple[Denoiser, dict[str, Any], LatentSpace | None]:
    """A user's pretrained base from a local diffusers folder (`base=PATH`, checked in validate), its provenance
    (the folder, the sha256 of each weight file and the configs) and, with a VAE, the latent space."""
    ds, p = ctx.dataset, ctx.params
    folder = check_base_folder(p["base"], ds)
    ident = folder_identity(folder)
    base, vae = load_folder(folder)
    space = None
    if vae is not None:
        space = LatentSpace(vae, folder.pixel_size, ds.image_size, ds.channels, ctx.device, p["vae_batch"])
    ctx.log(f"minmax-diffusion: base from {folder.path} ({folder.arch}, "
            f"{'latent ' + str(folder.pixel_size) + ' px' if space else 'pixel space'}, "
            f"{folder.num_classes} label rows, dataset classes -> rows 0..{ds.num_classes - 1}, null row "
            f"{folder.num_classes}; sha256 {ident['sha256'][:12]}...)")
    meta = {"source": "folder", **ident, "arch": folder.arch, "parameters": base.num_parameters(),
            "label_rows": {"classes": f"0..{ds.num_classes - 1}", "null": folder.num_classes},
            "latent": space.describe() if space else None}
    return base, meta, space


def finetune_spec(ctx: RunContext) -> TrainSpec:
    p = ctx.params
    return TrainSpec(
        steps=p["finetune_steps"], batch_size=p["batch_size"], lr=p["lr"], seed=derive_seed(ctx.seed, "finetune"),
        warmup_steps=0, lr_schedule="constant", ema_decay=p["ema_decay"], p_uncond=p["p_uncond"],
        snr_gamma=p["snr_gamma"], lambda_pos=p["lambda_pos"], lambda_neg=p["lambda_neg"],
        memory_size=p["memory_size"], embedding=p["embedding"], trainable=p["trainable"],
        precision=p["precision"], checkpoint_every=p["checkpoint_every"], name="fine-tune",
    )


def obtain_generator(ctx: RunContext, classifier=None) -> tuple[Denoiser, dict[str, Any]]:
    """The run's generator: the base, fine-tuned with the min-max losses when finetune_steps > 0.

    A latent base (a folder with a VAE) comes back with its `decoder` set, so that sampling ends in pixels."""
    space = None
    if is_folder_base(ctx.params["base"]):
        base, base_meta, space = folder_base(ctx)
        keys = ("source", "sha256", "path", "weights_sha256", "configs", "arch", "parameters", "label_rows", "latent")
    else:
        base, base_meta = obtain_base(ctx)
        keys = ("source", "sha256", "data", "cache_path", "recipe", "train", "parameters")
    info: dict[str, Any] = {"base": {k: base_meta.get(k) for k in keys}}
    spec = finetune_spec(ctx)
    if spec.steps <= 0:
        base.decoder = space
        return base, info
    identity = {"base": base_meta["sha256"], "spec": asdict(replace(spec, checkpoint_every=0))}
    if space is not None or base_meta.get("source") == "folder":
        # a folder's base was not trained on this data (a shipped or trained base's sha256 implies its data)
        identity.update(data=dataset_fingerprint(ctx.dataset), latent=base_meta.get("latent"))
    cache = DenoiserCache.for_key(ctx.cache_dir, f"{ctx.dataset.name}-{cache_key('finetune', identity)}")
    generator, info["finetune"] = _cached(ctx, cache, lambda c: _finetune(ctx, base, spec, space, classifier, c),
                                          identity, "fine-tuned generator")
    generator.decoder = space
    return generator, info


def _finetune(ctx: RunContext, base: Denoiser, spec: TrainSpec, space: LatentSpace | None, classifier,
              cache: DenoiserCache) -> tuple[Denoiser, dict[str, Any]]:
    """Fine-tune a copy of the base with the min-max losses (resumable through the cache's checkpoint)."""
    ds = ctx.dataset
    generator = copy.deepcopy(base)  # the anchors fine-tune from the pretrained (EMA) weights
    ctx.log(f"minmax-diffusion: fine-tuning ({spec.trainable} parameters) for {spec.steps} steps of batch "
            f"{spec.batch_size}: lambda_r={spec.lambda_pos}, lambda_d={spec.lambda_neg}, embedding={spec.embedding}")
    embed = make_embedder(spec.embedding, ctx, classifier)
    if space is not None and spec.embedding != "x0":  # x0 compares latents, as the seed; the others see pixels
        embed = space.through_decoder(embed)
    if ctx.params["gradient_checkpointing"]:
        generator.net.enable_gradient_checkpointing()
    return train_phase(generator, to_signed_pixels(ds, ds.train_x.float()), ds.train_y.long(), spec,
                       checkpoint_path=cache.checkpoint_path, embed=embed, progress=ctx.progress, log=ctx.log,
                       device=ctx.device, encode=space.encode if space is not None else None)
