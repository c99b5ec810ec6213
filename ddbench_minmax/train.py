"""Training a denoiser: L = w(t)·L_diff + L_r + L_d, resumable, one phase at a time.

The anchors (vimar-gu/MinimaxDiffusion `train_dit.py`, FanJunqiao/DD_Track2) fine-tune a *pretrained,
converged* class-conditional DiT with the min-max losses. Here the pretrained denoiser is the base,
trained by `python -m ddbench_minmax.base train` (shipped for Fashion-MNIST, trained on demand for any other
dataset), and a run fine-tunes it into its generator (`ddbench_minmax/generator.py`). Both phases use
`train_phase`:

- DDPMScheduler for the forward process (schedule in the denoiser's DenoiserConfig), t uniform;
- label dropout `p_uncond` to the null class, so the denoiser can be sampled with classifier-free guidance
  (facebookresearch/DiT `models.py`: `class_dropout_prob=0.1`);
- Min-SNR-γ loss weighting (Hang et al., ICCV 2023; diffusers `train_text_to_image.py --snr_gamma 5.0`);
- AdamW with linear warm-up and cosine decay (diffusers `get_scheduler("cosine")`);
- diffusers `EMAModel` with warm-up (decay 1 − (1+k)^−3/4, capped at `ema_decay`); the EMA weights are kept;
- bf16 autocast on CPU (`precision`), fp32 master weights: 1.7x faster steps here, same loss curve
  (benchmarks/bench_generator.py);
- `trainable`: all parameters, or DiffFit's subset (bias, norm and class-embedding parameters; Xie et al.
  2023, as FanJunqiao/DD_Track2 `train_dit.py` fine-tunes).

A checkpoint (weights, EMA, optimizer, lr schedule, RNG, memories, data order) is written atomically every
`checkpoint_every` steps; a killed training resumes from it.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ddbench.api import DDBenchError
from ddbench.helpers import UnsafeFile, load_tensors

from .losses import ClassMemory, minmax_losses
from .model import Denoiser, schedule_kwargs

TRAINABLE = ("all", "difffit")


@dataclass
class TrainSpec:
    """One training phase. Every field is part of the phase's cache identity."""

    steps: int
    batch_size: int
    lr: float
    seed: int
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # or "constant"
    ema_decay: float = 0.9999
    p_uncond: float = 0.1
    snr_gamma: float = 5.0  # 0 = plain MSE
    lambda_pos: float = 0.0
    lambda_neg: float = 0.0
    memory_size: int = 64
    embedding: str = "x0"
    trainable: str = "all"
    precision: str = "bf16"
    checkpoint_every: int = 100
    snapshot_every: int = 0  # keep EMA snapshots for the quality curve (base training)
    name: str = "train"


def make_train_scheduler(denoiser: Denoiser):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**schedule_kwargs(denoiser.config))


def to_signed_pixels(ctx_dataset, x_normalised: torch.Tensor) -> torch.Tensor:
    """Dataset-normalised images -> pixels scaled to [-1, 1]: a pixel-space denoiser's space, a VAE's input."""
    return (ctx_dataset.denormalise(x_normalised).clamp(0, 1) * 2 - 1).contiguous()


def from_signed_pixels(ctx_dataset, x: torch.Tensor) -> torch.Tensor:
    return ctx_dataset.normalise(((x.clamp(-1, 1) + 1) / 2).float())




def trainable_parameters(denoiser: Denoiser, which: str) -> list[torch.nn.Parameter]:
    """All parameters, or DiffFit's: biases, the scales of normalisation layers and the class-label table.

    FanJunqiao/DD_Track2 `train_dit.py mark_difffit_trainable` matches the names "bias", "norm", "gamma",
    "y_embed" in its DiT, where "norm" names only LayerNorms. diffusers names the adaLN modulation and the timestep
    MLP of a DiT block `norm1.linear` / `norm1.emb...`, so the selection here goes by module type, not by name:
    the same set for the UNet, and the seed's set for a diffusers DiT (not its 4-million-per-block adaLN weights)."""
    if which not in TRAINABLE:
        raise DDBenchError(f"trainable={which!r} is not allowed; choose one of {', '.join(TRAINABLE)}")
    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    label_tables = {f"{n}.weight" for n, m in denoiser.named_modules()
                    if isinstance(m, torch.nn.Embedding) and ("class_embedding" in n or "class_embedder" in n)}
    norm_params = {f"{n}.{pn}" for n, m in denoiser.named_modules() if isinstance(m, norm_types)
                   for pn, _ in m.named_parameters(recurse=False)}
    out = []
    for name, p in denoiser.named_parameters():
        keep = which == "all" or name.endswith(".bias") or name in norm_params or name in label_tables
        p.requires_grad_(keep)
        if keep:
            out.append(p)
    return out


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ weights for epsilon prediction: min(SNR, γ) / SNR (Hang et al. 2023, eq. 6)."""
    if not gamma:
        return torch.ones_like(t, dtype=torch.float32)
    a = alphas_cumprod[t]
    snr = a / (1 - a)
    return torch.clamp(snr, max=gamma) / snr.clamp_min(1e-12)


class ThreadGovernor:
    """Picks the intra-op thread count step by step, so training does not collapse when the cores are shared.

    With 2 threads on 2 cores, a second process that takes one core stalls every OpenMP barrier (measured here:
    0.57 s per base step alone, 2.5 s beside a niced test run). 1 thread is ~1.7x slower alone but keeps its pace under contention. The governor runs the
    faster of {max_threads, 1} by the median of recent step times and re-tries the other every `probe_every`
    steps for `probe_len` steps (benchmarks/bench_generator.py measures all three policies).
    """

    def __init__(self, max_threads: int, probe_every: int = 50, probe_len: int = 4, window: int = 8):
        from collections import deque

        self.options = sorted({max(1, max_threads), 1}, reverse=True)
        self.times = {n: deque(maxlen=window) for n in self.options}
        self.probe_every, self.probe_len = probe_every, probe_len
        self.current = self.options[0]
        self.switches = 0

    def _best(self) -> int:
        med = {n: sorted(t)[len(t) // 2] for n, t in self.times.items() if t}
        return min(med, key=med.get) if med else self.options[0]

    def choose(self, step: int) -> int:
        if len(self.options) > 1:
            best = self._best()
            other = [n for n in self.options if n != best][0]
            n = other if step % self.probe_every < self.probe_len or not self.times[other] else best
            if n != self.current:
                torch.set_num_threads(n)
                self.current = n
                self.switches += 1
        return self.current

    def record(self, seconds: float) -> None:
        self.times[self.current].append(seconds)

    def summary(self) -> dict[str, Any]:
        return {"policy": "auto", "options": self.options, "switches": self.switches,
                "median_step_seconds": {str(n): round(sorted(t)[len(t) // 2], 4) for n, t in self.times.items() if t}}


@dataclass
class TrainState:
    """Everything a resumed phase needs besides the weights; one object instead of a dozen loose values."""

    step: int = 0
    ptr: int = 0
    perm: torch.Tensor | None = None
    elapsed: float = 0.0
    sums: dict[str, float] = field(default_factory=lambda: {"diff": 0.0, "pos": 0.0, "neg": 0.0})
    snapshots: list[int] = field(default_factory=list)


class Phase:
    """The objects of one training phase and their (re)storage."""

    def __init__(self, denoiser: Denoiser, spec: TrainSpec, device, embed=None, encode=None):
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.denoiser, self.spec, self.device = denoiser.to(device), spec, device
        self.params = trainable_parameters(denoiser, spec.trainable)
        self.ema = EMAModel(self.params, decay=spec.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
        self.opt = torch.optim.AdamW(self.params, lr=spec.lr, weight_decay=0.0)
        self.lr_sched = get_scheduler(spec.lr_schedule, self.opt, num_warmup_steps=spec.warmup_steps,
                                      num_training_steps=max(1, spec.steps))
        self.gen = torch.Generator().manual_seed(spec.seed)
        self.real_mem, self.pseudo_mem = ClassMemory(spec.memory_size), ClassMemory(spec.memory_size)
        self.sched = make_train_scheduler(denoiser)
        self.alphas = self.sched.alphas_cumprod.to(torch.float32).to(device)
        self.embed = embed or (lambda x: x.flatten(start_dim=1))
        # pixels -> the denoiser's space per batch (latent.LatentSpace.encode), drawn with self.gen
        self.encode = encode
        self.state = TrainState()

    def state_dict(self) -> dict[str, Any]:
        # "model": the checkpoint's key for the weights since the first release (a checkpoint on disk resumes)
        return {"spec": asdict(self.spec), "model": self.denoiser.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "lr_sched": self.lr_sched.state_dict(), "rng": self.gen.get_state(),
                "real_mem": self.real_mem.state_dict(), "pseudo_mem": self.pseudo_mem.state_dict(),
                "state": asdict(self.state)}

    def load_state_dict(self, d: dict[str, Any]) -> bool:
        if d.get("spec") != asdict(self.spec):
            return False
        self.denoiser.load_state_dict(d["model"])
        self.ema.load_state_dict(d["ema"])
        self.opt.load_state_dict(d["opt"])
        self.lr_sched.load_state_dict(d["lr_sched"])
        self.gen.set_state(d["rng"])
        self.real_mem.load_state_dict(d["real_mem"])
        self.pseudo_mem.load_state_dict(d["pseudo_mem"])
        self.state = TrainState(**d["state"])
        return True

    def resume(self, checkpoint_path: Path | None, log: Callable[[str], None] = print) -> bool:
        """Load the phase's checkpoint if it exists and belongs to this spec (a truncated one is ignored; one
        holding more than tensors and plain containers is deleted unread, and the log says so)."""
        if checkpoint_path is None or not checkpoint_path.is_file():
            return False
        try:
            state = load_tensors(checkpoint_path)
        except UnsafeFile as exc:
            checkpoint_path.unlink(missing_ok=True)
            log(f"minmax-diffusion: {exc}; deleted it, training from the start")
            return False
        except Exception:  # noqa: BLE001 - a truncated checkpoint is discarded, training restarts
            return False
        return self.load_state_dict(state)

    def stats(self) -> dict[str, Any]:
        st, steps = self.state, max(1, self.state.step)
        return {
            "steps": st.step,
            "schedule_steps": self.spec.steps,
            "seconds": round(st.elapsed, 2),
            "seconds_per_step": round(st.elapsed / steps, 4),
            "mean_loss_diff": st.sums["diff"] / steps,
            "mean_loss_r": st.sums["pos"] / steps,
            "mean_loss_d": st.sums["neg"] / steps,
            "trainable_parameters": sum(p.numel() for p in self.params),
        }

    def ema_denoiser(self) -> Denoiser:
        """A copy of the denoiser holding the EMA weights (the weights sampled, as the anchors do)."""
        import copy

        out = copy.deepcopy(self.denoiser).cpu()
        self.ema.copy_to([p for n, p in out.named_parameters() if p.requires_grad])
        for p in out.parameters():
            p.requires_grad_(False)
        return out.eval()

    def batch(self, data: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = self.state, data.shape[0]
        if s.perm is None or s.ptr + self.spec.batch_size > n:  # a fresh shuffle each epoch
            s.perm, s.ptr = torch.randperm(n, generator=self.gen), 0
        idx = s.perm[s.ptr:s.ptr + self.spec.batch_size]
        s.ptr += self.spec.batch_size
        x = data[idx].to(self.device)
        if self.encode is not None:
            x = self.encode(x, self.gen)
        return x, labels[idx].to(self.device)

    def step(self, x0: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        spec, denoiser = self.spec, self.denoiser
        k = denoiser.config.num_classes
        noise = torch.randn(x0.shape, generator=self.gen).to(self.device)
        t = torch.randint(0, denoiser.config.num_train_timesteps, (x0.shape[0],), generator=self.gen).to(self.device)
        drop = torch.rand(x0.shape[0], generator=self.gen).to(self.device) < spec.p_uncond
        y_in = torch.where(drop, torch.full_like(y, k), y)
        xt = self.sched.add_noise(x0, noise, t)
        amp = torch.autocast(self.device.type if hasattr(self.device, "type") else str(self.device),
                             dtype=torch.bfloat16) if spec.precision == "bf16" else contextlib.nullcontext()
        with amp:
            eps = denoiser(xt, t, y_in)
        eps = eps.float()
        w = min_snr_weights(self.alphas, t, spec.snr_gamma)
        loss_diff = ((eps - noise) ** 2).mean(dim=(1, 2, 3)).mul(w).mean()
        pos = neg = loss_diff.new_zeros(())
        if spec.lambda_pos or spec.lambda_neg:
            a = self.alphas[t].view(-1, 1, 1, 1).clamp_min(1e-5)
            x0_hat = (xt - (1 - a).sqrt() * eps) / a.sqrt()  # the anchor's `output` (pred_xstart)
            keep = ~drop  # the null-class samples belong to no class memory
            with torch.no_grad():
                real_emb = self.embed(x0[keep])
            pos, neg = minmax_losses(self.embed(x0_hat[keep]), real_emb, y[keep], self.real_mem, self.pseudo_mem,
                                     spec.lambda_pos, spec.lambda_neg)
        loss = loss_diff + pos + neg
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.lr_sched.step()
        self.ema.step(self.params)
        return {"diff": loss_diff.item(), "pos": float(pos.detach()), "neg": float(neg.detach())}


def train_phase(
    denoiser: Denoiser,
    data: torch.Tensor,
    labels: torch.Tensor,
    spec: TrainSpec,
    checkpoint_path: Path | None = None,
    snapshot_dir: Path | None = None,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: torch.device | str = "cpu",
    threads: int | str = "auto",
    stop_at: int | None = None,
    encode: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> tuple[Denoiser, dict[str, Any]]:
    """Train `denoiser` (in place) for spec.steps; return (its EMA copy, stats). Resumes from checkpoint_path.

    stop_at: end early at this step (the schedule stays that of spec.steps) and return the EMA there.
    threads: a fixed intra-op thread count, or "auto" (ThreadGovernor over {torch's current count, 1}).
    encode: maps each batch of `data` into the denoiser's space (a latent base's VAE encoder), as the seed encodes
    every batch; its posterior draw uses the phase's generator, so a resumed phase draws the same latents.
    """
    device = torch.device(device)
    if spec.p_uncond and not 0 <= spec.p_uncond < 1:
        raise DDBenchError(f"p_uncond={spec.p_uncond} is not allowed; it must lie in [0, 1)")
    ph = Phase(denoiser, spec, device, embed, encode)
    if ph.resume(checkpoint_path, log):
        log(f"minmax-diffusion: resuming {spec.name} from the checkpoint at step {ph.state.step}/{spec.steps}")
    denoiser.train()
    before = torch.get_num_threads()
    governor = ThreadGovernor(before) if threads == "auto" and device.type == "cpu" else None
    if isinstance(threads, int):
        torch.set_num_threads(threads)
    end = spec.steps if stop_at is None else min(stop_at, spec.steps)
    _run_steps(ph, data, labels, end, governor, checkpoint_path, snapshot_dir, progress)
    torch.set_num_threads(before)
    return ph.ema_denoiser(), {**ph.stats(), "threads": governor.summary() if governor is not None else threads}


def _run_steps(ph: Phase, data: torch.Tensor, labels: torch.Tensor, end: int, governor: ThreadGovernor | None,
               checkpoint_path: Path | None, snapshot_dir: Path | None, progress: bool) -> None:
    """The phase's steps up to `end`, with its EMA snapshots and checkpoints on their schedules."""
    from tqdm.auto import tqdm

    from ddbench.helpers import atomic_save

    st, spec = ph.state, ph.spec
    bar = tqdm(total=spec.steps, initial=st.step, desc=f"minmax {spec.name}", disable=not progress, leave=False)
    t_start = time.perf_counter() - st.elapsed
    while st.step < end:
        if governor is not None:
            governor.choose(st.step)
        t_step = time.perf_counter()
        losses = ph.step(*ph.batch(data, labels))
        if governor is not None:
            governor.record(time.perf_counter() - t_step)
        st.step += 1
        for key, v in losses.items():
            st.sums[key] += v
        bar.update(1)
        bar.set_postfix(diff=f"{losses['diff']:.4f}", r=f"{losses['pos']:.5f}", d=f"{losses['neg']:.5f}")
        st.elapsed = time.perf_counter() - t_start
        if snapshot_dir is not None and spec.snapshot_every and st.step % spec.snapshot_every == 0:
            ph.ema_denoiser().save(snapshot_dir / f"step-{st.step:06d}")
            st.snapshots.append(st.step)
        if checkpoint_path is not None and spec.checkpoint_every and st.step % spec.checkpoint_every == 0 \
                and st.step < spec.steps:
            atomic_save(ph.state_dict(), checkpoint_path)
    bar.close()
