"""The generator of a run: a pretrained base, then min-max fine-tuning, each cached.

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
from ddbench.identity import dataset_fingerprint
from ddbench.seeds import derive_seed, seeded

from .base import BaseRecipe, load_verified, shipped_cache
from .cache import CorruptCache, GeneratorCache, config_key
from .model import Denoiser
from .train import TrainSpec, to_model_space, train_phase

EMBEDDINGS = ("x0", "classifier", "random-convnet")


def base_recipe(ctx: RunContext) -> BaseRecipe:
    p = ctx.params
    return BaseRecipe(arch=p["arch"], steps=p["base_steps"], seed=0)


def make_embedder(kind: str, ctx: RunContext, classifier=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The space the min-max losses compare in: the predicted clean image (the anchor's x̂0), the features of
    the real-data classifier (quality.py), or those of a frozen random ConvNet (DM's embedder kind)."""
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


def _cached(ctx: RunContext, cache: GeneratorCache, train: Callable[[GeneratorCache], tuple[Denoiser, dict]],
            key_cfg: dict[str, Any], what: str) -> tuple[Denoiser, dict[str, Any]]:
    with cache.lock():
        if cache.exists():
            try:
                model, meta = cache.load()
                ctx.log(f"minmax-diffusion: {what} loaded from {cache.root}")
                return model, {**meta, "cache": "hit", "cache_path": str(cache.root)}
            except CorruptCache as exc:
                if ctx.params["on_corrupt_cache"] == "error":
                    raise DDBenchError(f"cached {what} is corrupt: {exc}; delete {cache.root} or set "
                                       f"on_corrupt_cache=rebuild") from None
                ctx.log(f"minmax-diffusion: cached {what} is corrupt ({exc}); rebuilding it")
                cache.clear()
        model, stats = train(cache)
        meta = cache.save(model, {"key": cache.key, "config": key_cfg, "train": stats,
                                  "parameters": model.num_parameters()})
        return model, {**meta, "cache": "miss", "cache_path": str(cache.root)}


def obtain_base(ctx: RunContext) -> tuple[Denoiser, dict[str, Any]]:
    ds, p = ctx.dataset, ctx.params
    fp = dataset_fingerprint(ds)
    recipe = base_recipe(ctx)
    shipped = shipped_cache(ds.name)
    if p["base"] == "shipped" and shipped.meta_path.is_file():
        model, meta = load_verified(shipped)
        same_recipe = meta.get("recipe", {}).get("arch") == recipe.arch
        if meta.get("data") == fp and same_recipe:
            ctx.log(f"minmax-diffusion: shipped base generator {shipped.root} (sha256 {meta['sha256'][:12]}...)")
            return model, {**meta, "source": "shipped", "cache_path": str(shipped.root)}
        ctx.log(f"minmax-diffusion: the shipped base was trained on other data or another arch "
                f"(fingerprint {meta.get('data')} vs {fp}); training a base here instead")
    from .base import train_base

    key_cfg = {"dataset": ds.name, "data": fp, "recipe": asdict(recipe)}
    cache = GeneratorCache.for_key(ctx.cache_dir, f"{ds.name}-{config_key('base', key_cfg)}")

    with cache.lock():
        if cache.exists():
            try:
                model, meta = cache.load()
                return model, {**meta, "source": "trained", "cache": "hit", "cache_path": str(cache.root)}
            except CorruptCache as exc:
                ctx.log(f"minmax-diffusion: cached base is corrupt ({exc}); retraining it")
                cache.clear()
        meta = train_base(ds, recipe, cache.root / "work", cache, progress=ctx.progress, log=ctx.log,
                          device=ctx.device)
        model, meta = cache.load()
        return model, {**meta, "source": "trained", "cache": "miss", "cache_path": str(cache.root)}


def finetune_spec(ctx: RunContext) -> TrainSpec:
    p = ctx.params
    return TrainSpec(
        steps=p["finetune_steps"], batch_size=p["batch_size"], lr=p["lr"], seed=derive_seed(ctx.seed, "finetune"),
        warmup_steps=0, lr_schedule="constant", ema_decay=p["ema_decay"], p_uncond=p["p_uncond"],
        snr_gamma=p["snr_gamma"], lambda_pos=p["lambda_pos"], lambda_neg=p["lambda_neg"],
        memory_size=p["memory_size"], embedding=p["embedding"], trainable=p["trainable"],
        checkpoint_every=p["checkpoint_every"], name="fine-tune",
    )


def obtain_generator(ctx: RunContext, classifier=None) -> tuple[Denoiser, dict[str, Any]]:
    """The run's generator: the base, fine-tuned with the min-max losses when finetune_steps > 0."""
    base, base_meta = obtain_base(ctx)
    info: dict[str, Any] = {"base": {k: base_meta.get(k) for k in ("source", "sha256", "data", "cache_path",
                                                                   "recipe", "train", "parameters")}}
    spec = finetune_spec(ctx)
    if spec.steps <= 0:
        return base, info
    key_cfg = {"base": base_meta["sha256"], "spec": asdict(replace(spec, checkpoint_every=0))}
    cache = GeneratorCache.for_key(ctx.cache_dir, f"{ctx.dataset.name}-{config_key('finetune', key_cfg)}")
    ds = ctx.dataset

    def train(c: GeneratorCache):
        model = copy.deepcopy(base)  # the anchors fine-tune from the pretrained (EMA) weights
        ctx.log(f"minmax-diffusion: fine-tuning ({spec.trainable} parameters) for {spec.steps} steps of batch "
                f"{spec.batch_size}: lambda_r={spec.lambda_pos}, lambda_d={spec.lambda_neg}, embedding={spec.embedding}")
        embed = make_embedder(spec.embedding, ctx, classifier)
        return train_phase(model, to_model_space(ds, ds.train_x.float()), ds.train_y.long(), spec,
                           checkpoint_path=c.checkpoint_path, embed=embed, progress=ctx.progress, log=ctx.log,
                           device=ctx.device)

    model, meta = _cached(ctx, cache, train, key_cfg, "fine-tuned generator")
    info["finetune"] = meta
    return model, info
