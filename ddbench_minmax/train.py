"""Training the generator: L = L_diff + L_r + L_d with DDPMScheduler, in two cached phases.

The anchor (Minimax Diffusion, `train_dit.py`) fine-tunes a *pretrained* class-conditional DiT with the
min-max losses. No pretrained model exists here, so training has two phases, each cached on its own:

1. base: plain diffusion (L_diff only) from scratch for `base_steps`; its key does not depend on the
   min-max settings, so every lambda / embedding variant reuses the same base;
2. fine-tune: `finetune_steps` more steps of L_diff + L_r + L_d from the base, as the anchor does.

Each phase checkpoints every `checkpoint_every` steps and resumes from the checkpoint after an
interruption. The weights kept are an EMA of the trained weights (anchor: `update_ema`, decay 0.9999,
EMA initialised to the model at the start of fine-tuning), with diffusers' EMAModel warm-up
`min(decay, (1 + k) / (10 + k))` so that a short CPU training still averages over a sensible window.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ddbench.api import DDBenchError, RunContext

from .cache import CorruptCache, GeneratorCache, config_key, dataset_fingerprint
from .losses import ClassMemory, minmax_losses
from .model import Denoiser, arch_config, build_denoiser


@dataclass
class PhaseSpec:
    steps: int
    batch_size: int
    lr: float
    ema_decay: float
    lambda_pos: float
    lambda_neg: float
    memory_size: int
    embedding: str
    checkpoint_every: int
    seed: int
    name: str = "train"


def make_train_scheduler(num_train_timesteps: int):
    from diffusers import DDPMScheduler

    # Linear betas 1e-4..0.02 over 1000 steps: DiT's create_diffusion default (the anchor) and DDPM's.
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                         beta_start=0.0001, beta_end=0.02)


def to_model_space(ctx_dataset, x_normalised: torch.Tensor) -> torch.Tensor:
    """Dataset-normalised images -> pixel space scaled to [-1, 1] (the generator's space)."""
    return (ctx_dataset.denormalise(x_normalised).clamp(0, 1) * 2 - 1).contiguous()


def from_model_space(ctx_dataset, x: torch.Tensor) -> torch.Tensor:
    return ctx_dataset.normalise(((x.clamp(-1, 1) + 1) / 2).float())


def make_embedder(kind: str, ctx: RunContext | None, dataset=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The embedding the min-max losses compare: the predicted clean image itself (anchor) or the
    features (`embed`) of a frozen, randomly initialised evaluation ConvNet (the DM embedder kind)."""
    if kind == "x0":
        return lambda x: x.flatten(start_dim=1)
    if kind == "convnet":
        assert ctx is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed * 1_000_003 + 424_242)
            net = ctx.build_model()
        net.to(ctx.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        ds = dataset or ctx.dataset
        return lambda x: net.embed(ds.normalise((x + 1) / 2)).flatten(start_dim=1)
    raise DDBenchError(f"embedding={kind!r} is not allowed; choose one of x0, convnet")


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def train_phase(
    model: Denoiser,
    data: torch.Tensor,
    labels: torch.Tensor,
    spec: PhaseSpec,
    num_train_timesteps: int,
    cache: GeneratorCache,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: torch.device | str = "cpu",
) -> tuple[Denoiser, dict[str, Any]]:
    """Train `model` (in place) for spec.steps; return (EMA model, stats). Resumes from cache's checkpoint."""
    from tqdm.auto import tqdm

    sched = make_train_scheduler(num_train_timesteps)
    alphas = sched.alphas_cumprod.to(torch.float32).to(device)
    model.to(device)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec.seed)
    real_mem, pseudo_mem = ClassMemory(spec.memory_size), ClassMemory(spec.memory_size)
    use_minmax = bool(spec.lambda_pos or spec.lambda_neg)
    embed = embed or (lambda x: x.flatten(start_dim=1))
    n = data.shape[0]
    step, ptr, elapsed = 0, n, 0.0
    perm = torch.arange(n)
    sums = {"diff": 0.0, "pos": 0.0, "neg": 0.0}

    state = cache.load_checkpoint()
    if state is not None and state.get("spec") == asdict(spec):
        model.load_state_dict(state["model"])
        model.to(device)
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["rng"])
        real_mem.load_state_dict(state["real_mem"])
        pseudo_mem.load_state_dict(state["pseudo_mem"])
        step, ptr, perm, elapsed, sums = state["step"], state["ptr"], state["perm"], state["elapsed"], state["sums"]
        log(f"minmax-diffusion: resuming {spec.name} from the checkpoint at step {step}/{spec.steps}")

    def checkpoint() -> None:
        cache.save_checkpoint({
            "spec": asdict(spec), "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "rng": gen.get_state(), "real_mem": real_mem.state_dict(), "pseudo_mem": pseudo_mem.state_dict(),
            "step": step, "ptr": ptr, "perm": perm, "elapsed": elapsed, "sums": sums,
        })

    model.train()
    bar = tqdm(total=spec.steps, initial=step, desc=f"minmax {spec.name}", disable=not progress, leave=False)
    t_start = time.perf_counter() - elapsed
    while step < spec.steps:
        if ptr + spec.batch_size > n:  # a fresh shuffle each epoch (the anchor's DataLoader shuffles)
            perm, ptr = torch.randperm(n, generator=gen), 0
        idx = perm[ptr:ptr + spec.batch_size]
        ptr += spec.batch_size
        x0, y = data[idx].to(device), labels[idx].to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
        xt = sched.add_noise(x0, noise, t)
        eps = model(xt, t, y)
        loss_diff = F.mse_loss(eps, noise)
        pos = neg = loss_diff.new_zeros(())
        if use_minmax:
            a = alphas[t].view(-1, 1, 1, 1)
            x0_hat = (xt - (1 - a).sqrt() * eps) / a.sqrt()  # the anchor's `output` (pred_xstart)
            with torch.no_grad():
                real_emb = embed(x0)
            pos, neg = minmax_losses(embed(x0_hat), real_emb, y, real_mem, pseudo_mem, spec.lambda_pos, spec.lambda_neg)
        loss = loss_diff + pos + neg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        _ema_update(ema, model, min(spec.ema_decay, (1 + step) / (10 + step)))
        sums["diff"] += loss_diff.item()
        sums["pos"] += float(pos.detach())
        sums["neg"] += float(neg.detach())
        bar.update(1)
        bar.set_postfix(diff=f"{loss_diff.item():.4f}", r=f"{float(pos.detach()):.5f}", d=f"{float(neg.detach()):.5f}")
        elapsed = time.perf_counter() - t_start
        if spec.checkpoint_every and step % spec.checkpoint_every == 0 and step < spec.steps:
            checkpoint()
    bar.close()
    ema.eval()
    ema.cpu()
    steps = max(1, spec.steps)
    stats = {
        "steps": spec.steps,
        "seconds": round(elapsed, 2),
        "seconds_per_step": round(elapsed / steps, 4),
        "mean_loss_diff": sums["diff"] / steps,
        "mean_loss_r": sums["pos"] / steps,
        "mean_loss_d": sums["neg"] / steps,
    }
    return ema, stats


# --------------------------------------------------------------------------------------------------
# The cached two-phase generator of a run
# --------------------------------------------------------------------------------------------------


def generator_keys(ctx: RunContext) -> tuple[dict[str, Any], dict[str, Any]]:
    p, ds = ctx.params, ctx.dataset
    base = {
        "dataset": ds.name,
        "data": dataset_fingerprint(ds.train_x, ds.train_y),
        "shape": [ds.channels, ds.image_size, ds.image_size],
        "num_classes": ds.num_classes,
        "arch": p["arch"],
        "arch_config": arch_config(p["arch"], ds.image_size),
        "num_train_timesteps": p["num_train_timesteps"],
        "steps": p["base_steps"],
        "batch_size": p["batch_size"],
        "lr": p["lr"],
        "ema_decay": p["ema_decay"],
        "seed": ctx.seed,
    }
    fine = {
        "base": config_key("base", base),
        "steps": p["finetune_steps"],
        "batch_size": p["batch_size"],
        "lr": p["lr"],
        "ema_decay": p["ema_decay"],
        "lambda_pos": p["lambda_pos"],
        "lambda_neg": p["lambda_neg"],
        "memory_size": p["memory_size"],
        "embedding": p["embedding"],
        "seed": ctx.seed,
    }
    return base, fine


def _phase_spec(ctx: RunContext, name: str, steps: int, minmax: bool, seed_offset: int) -> PhaseSpec:
    p = ctx.params
    return PhaseSpec(
        steps=steps, batch_size=p["batch_size"], lr=p["lr"], ema_decay=p["ema_decay"],
        lambda_pos=p["lambda_pos"] if minmax else 0.0, lambda_neg=p["lambda_neg"] if minmax else 0.0,
        memory_size=p["memory_size"], embedding=p["embedding"], checkpoint_every=p["checkpoint_every"],
        seed=ctx.seed * 1_000_003 + seed_offset, name=name,
    )


def _obtain(ctx: RunContext, key_cfg: dict[str, Any], prefix: str, train_fn) -> tuple[Denoiser, dict[str, Any]]:
    key = f"{ctx.dataset.name}-{ctx.params['arch']}-" + config_key(prefix, key_cfg)
    cache = GeneratorCache(ctx.cache_dir, key)
    with cache.lock():
        if cache.exists():
            try:
                model, meta = cache.load(ctx.params["arch"])
                ctx.log(f"minmax-diffusion: {prefix} generator loaded from cache {cache.root}")
                return model, {**meta, "cache": "hit", "cache_path": str(cache.root)}
            except CorruptCache as exc:
                if ctx.params["on_corrupt_cache"] == "error":
                    raise DDBenchError(
                        f"cached generator is corrupt: {exc}; delete {cache.root} or set on_corrupt_cache=rebuild"
                    ) from None
                ctx.log(f"minmax-diffusion: cached generator is corrupt ({exc}); rebuilding it")
                cache.clear()
        model, stats = train_fn(cache)
        meta = {"key": key, "config": key_cfg, "train": stats, "parameters": model.num_parameters()}
        cache.save(model, meta)
        return model, {**meta, "cache": "miss", "cache_path": str(cache.root)}


def obtain_generator(ctx: RunContext) -> tuple[Denoiser, dict[str, Any]]:
    """The run's generator: from the cache when present, otherwise trained (and cached) phase by phase."""
    p, ds = ctx.params, ctx.dataset
    base_cfg, fine_cfg = generator_keys(ctx)
    data = to_model_space(ds, ds.train_x.float())
    labels = ds.train_y.long()
    info: dict[str, Any] = {}
    torch.manual_seed(ctx.seed)  # DiT's label dropout draws from the global generator

    def train_base(cache: GeneratorCache):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed * 1_000_003 + 11)
            model = build_denoiser(p["arch"], ds.channels, ds.num_classes, ds.image_size)
        ctx.log(f"minmax-diffusion: training the base generator ({p['arch']}, {model.num_parameters():,} "
                f"parameters) for {p['base_steps']} steps of batch {p['batch_size']}")
        return train_phase(model, data, labels, _phase_spec(ctx, "base", p["base_steps"], False, 1),
                           p["num_train_timesteps"], cache, progress=ctx.progress, log=ctx.log, device=ctx.device)

    if p["base_steps"] > 0:
        base, info["base"] = _obtain(ctx, base_cfg, "base", train_base)
    else:
        base = None
    if p["finetune_steps"] <= 0:
        assert base is not None  # validate() refuses base_steps = finetune_steps = 0
        return base, info

    def train_fine(cache: GeneratorCache):
        if base is not None:
            model = copy.deepcopy(base)  # the anchor fine-tunes from the pretrained (EMA) weights
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed * 1_000_003 + 11)
                model = build_denoiser(p["arch"], ds.channels, ds.num_classes, ds.image_size)
        for prm in model.parameters():
            prm.requires_grad_(True)
        ctx.log(f"minmax-diffusion: fine-tuning with the min-max losses for {p['finetune_steps']} steps "
                f"(lambda_r={p['lambda_pos']}, lambda_d={p['lambda_neg']}, embedding={p['embedding']})")
        embed = make_embedder(p["embedding"], ctx)
        return train_phase(model, data, labels, _phase_spec(ctx, "fine-tune", p["finetune_steps"], True, 2),
                           p["num_train_timesteps"], cache, embed=embed, progress=ctx.progress, log=ctx.log,
                           device=ctx.device)

    model, info["finetune"] = _obtain(ctx, fine_cfg, "finetune", train_fine)
    return model, info
