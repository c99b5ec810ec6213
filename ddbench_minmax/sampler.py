"""The DSR sampler (Diffusion Step Reduction, Fan et al.): few-step, guided sampling of a denoiser \
(the run's generator).

A separate scheduler from training (diffusers' pattern): DDIM (default, eta 0) or DPM-Solver++ (2nd order
multistep), with S steps over the T training timesteps of the denoiser's own noise schedule. Classifier-free
guidance (scale `guidance`, DiT's form) runs both branches in one batched call, and `measure` times that
doubled call, so a time budget and the calibrated policy see the real cost of guidance. Generation is
batched, class-balanced (every batch holds the same number of images of each class) and seeded (batch b's
noise depends only on the seed and b). Under a deadline it stops before a batch that would not finish.
A latent base's batch ends with its VAE decode (`Denoiser.decode`), timed by `measure` as the per-batch
overhead of the throughput, so budgets and images/s include it.

The contract (`ddbench.api.Sampler`): measure(...) -> Throughput, generate(model, SampleRequest) -> SampleResult;
the contract's `model` (passed by position) is the method's trained object, here a `Denoiser` (model.py).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

from ddbench.api import DDBenchError, Param, SampleRequest, SampleResult, Sampler, Throughput
from ddbench.helpers import generator as rng

from .model import guided_eps, schedule_kwargs

SCHEDULERS = ("ddim", "dpm++")

# The sampling levers beyond the seed paper (docs/minmax.md#levers-beyond-the-seed), each off by default: the DSR
# sampler's own settings (`Sampler.params`), which minmax-diffusion offers as its settings of the same names.
LEVER_PARAMS: Mapping[str, Param] = MappingProxyType({
    "strength": Param(1.0, "suduo94/D4M: img2img from the noised centroids at strength 0.7-0.75; 1 = from pure "
                      "noise (the seed)", "fraction of the S steps run from the noised prototype", min=0.0, max=1.0),
    "mode_guidance": Param(0.0, "MGD3 (jachansantiago/mode_guidance): lambda = 0.1; 0 = off (the seed)",
                           "pull of the predicted clean image toward its prototype", min=0.0),
    "mode_guidance_stop": Param(0.5, "MGD3 (jachansantiago/mode_guidance): guidance stopped at step 25 of 50",
                                "fraction of the steps after which mode guidance stops", min=0.0, max=1.0),
    "guidance_interval": Param((0.0, 1.0), "Kynkäänniemi et al., NeurIPS 2024 (arXiv 2404.07724): guidance only in "
                               "the middle of the noise range; (0, 1) = everywhere (the seed)",
                               "lo,hi: classifier-free guidance only while t/T lies in [lo, hi]"),
})
# The value at which each lever asks nothing of a sampler (mode_guidance_stop only tunes mode_guidance).
LEVERS_OFF: Mapping[str, Any] = MappingProxyType({"strength": 1.0, "mode_guidance": 0.0, "guidance_interval": (0.0, 1.0)})


def needs_prototypes(settings: Mapping[str, Any]) -> bool:
    """strength < 1 starts from the noised prototypes, mode_guidance pulls toward them: both need them."""
    return settings["strength"] < 1.0 or settings["mode_guidance"] > 0.0


def check_lever_values(settings: Mapping[str, Any]) -> None:
    """The lever rules a single Param cannot state (one place: the method's validate and the sampler's request)."""
    gi = tuple(settings["guidance_interval"])
    if len(gi) != 2 or not all(isinstance(v, (int, float)) for v in gi) or not 0 <= gi[0] <= gi[1] <= 1:
        raise DDBenchError(f"guidance_interval={','.join(map(str, gi))} is not allowed; "
                           "give lo,hi with 0 <= lo <= hi <= 1")
    if not 0.0 < settings["strength"] <= 1.0:
        raise DDBenchError(f"strength={settings['strength']!r} is not allowed; it must lie in (0, 1]")


@dataclass(frozen=True)
class Levers:
    """A request's levers: its settings over the defaults, and the prototypes from its inputs."""

    prototypes: torch.Tensor | None
    strength: float
    mode_guidance: float
    mode_guidance_stop: float
    guidance_interval: tuple[float, float]

    @classmethod
    def of(cls, r: SampleRequest) -> "Levers":
        s = {**{k: p.default for k, p in LEVER_PARAMS.items()}, **dict(r.settings)}
        return cls(r.inputs.get("prototypes"), float(s["strength"]), float(s["mode_guidance"]),
                   float(s["mode_guidance_stop"]), tuple(s["guidance_interval"]))

    def settings(self) -> dict[str, Any]:
        return {"strength": self.strength, "mode_guidance": self.mode_guidance,
                "mode_guidance_stop": self.mode_guidance_stop, "guidance_interval": self.guidance_interval}


def make_sampling_scheduler(kind: str, denoiser):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = schedule_kwargs(denoiser.config)
    if kind == "ddim":
        # "trailing" spacing starts at t = T-1 even for very few steps (Lin et al. 2024, "Common diffusion
        # noise schedules and sample steps are flawed", Table 2; diffusers DDIMScheduler option).
        return DDIMScheduler(**common, clip_sample=denoiser.config.clip_sample, set_alpha_to_one=False,
                             timestep_spacing="trailing")
    if kind == "dpm++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    raise DDBenchError(f"scheduler={kind!r} is not allowed; choose one of {', '.join(SCHEDULERS)}")


def balanced_batch_size(num_classes: int, batch_size: int) -> int:
    """A batch size that is a multiple of the number of classes (at least one image per class)."""
    return max(1, batch_size // num_classes) * num_classes


def finish_batch(denoiser, x: torch.Tensor) -> torch.Tensor:
    """A batch's samples as images: a latent base decodes them (`Denoiser.decode`); a pixel-space one's are done."""
    return x if getattr(denoiser, "decoder", None) is None else denoiser.decode(x)


def _decode_seconds(denoiser, n: int, image_shape: tuple[int, int, int], device: torch.device, sync) -> float:
    """Time of the denoiser's decode of one full batch (a latent base's VAE; none in pixel space): the per-batch
    overhead of the throughput, so budgets pay for it."""
    if getattr(denoiser, "decoder", None) is None:
        return 0.0
    z = torch.randn(n, *image_shape, device=device)
    denoiser.decode(z[: min(n, 2)])  # warm-up
    sync()
    t0 = time.perf_counter()
    denoiser.decode(z)
    sync()
    return time.perf_counter() - t0


def _autocast(device: torch.device):
    """bf16 autocast on CPU (denoisers train under it; 1.6-1.8x faster calls here), none elsewhere."""
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class DSRSampler(Sampler):
    name = "dsr"
    description = "Diffusion Step Reduction: DDIM / DPM-Solver++ few-step sampling with classifier-free guidance"
    # every lever (tests/test_minmax_levers.py checks each changes the samples as specified)
    params = LEVER_PARAMS

    @torch.no_grad()
    def measure(self, denoiser, num_classes: int, image_shape: tuple[int, int, int], batch_size: int,
                guidance: float = 1.0, repeats: int = 3) -> Throughput:
        """Time single guided denoiser steps at two batch sizes and fit a + b*n (after a warm-up call).

        Robust to other work on the machine: each size is timed `repeats` times, interleaved, and the fastest
        kept (interference only slows a call down); on a CPU each thread count of {all, 1} is measured and the
        faster one kept in `Throughput.threads`, as training's ThreadGovernor does (with 2 threads on 2 shared
        cores every OpenMP barrier waits for the busy core; docs/minmax.md#budgets-on-a-busy-machine).
        """
        denoiser.eval()
        for kind in SCHEDULERS:  # import diffusers' schedulers now, not inside a timed generation
            make_sampling_scheduler(kind, denoiser)
        bs = balanced_batch_size(num_classes, batch_size)
        device = next(denoiser.parameters(), torch.empty(0)).device
        best: Throughput | None = None
        for threads in thread_options(device):
            with use_threads(threads):
                samples = _time_calls(denoiser, num_classes, image_shape, bs, guidance, repeats, device)
            thr = _fit(samples, num_classes, bs)
            thr.threads = threads
            if best is None or thr.seconds(bs, 1) < best.seconds(bs, 1):
                best = thr
        assert best is not None
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        with use_threads(best.threads):
            best.overhead = _decode_seconds(denoiser, bs, image_shape, device, sync)  # a latent base's VAE decode
        return best

    def generate(self, denoiser, request: SampleRequest) -> SampleResult:
        """Generate `ipc` images per class, or (deadline set) as many balanced rounds as fit, at most `ipc`.

        Runs at the thread count the throughput measurement chose (`Throughput.threads`)."""
        with use_threads(request.throughput.threads if request.throughput is not None else None):
            return self._generate(denoiser, request)

    @torch.no_grad()
    def _generate(self, denoiser, request: SampleRequest) -> SampleResult:
        """Generate `ipc` images per class, or (deadline set) as many balanced rounds as fit, at most `ipc`.

        Before each batch its expected time (from `throughput`, corrected by the slowest observed batch) is
        checked against the deadline; the batch shrinks to the rounds that fit, or generation stops. Under a
        deadline the first batch is one round, so a machine slower than measured still gives one balanced
        round when one fits, and later batches are sized by the observed speed. During a batch, a step that
        would cross the deadline abandons the batch (all or nothing, classes stay equal).
        """
        from tqdm.auto import tqdm

        r = request
        check_request(r, denoiser.config.num_train_timesteps)
        denoiser.eval()
        device = next(denoiser.parameters(), torch.empty(0)).device
        target_rounds = r.ipc if r.ipc is not None else math.inf
        sched = make_sampling_scheduler(r.scheduler, denoiser)
        steps_run = len(_timesteps(sched, r.steps, Levers.of(r).strength))  # img2img runs only the last part of the schedule
        done = _Progress()
        t_begin = time.perf_counter()
        bar = tqdm(total=None if r.ipc is None or r.deadline is not None else r.ipc * r.num_classes,
                   desc=f"dsr S={r.steps}", disable=not r.progress, leave=False)
        while done.rounds < target_rounds:
            rounds = _rounds_that_fit(r, done, target_rounds, steps_run)
            if rounds == 0 or not _sample_batch(denoiser, sched, r, rounds, done, steps_run, device):
                break
            bar.update(rounds * r.num_classes)
        bar.close()
        return _result(r, done, steps_run, time.perf_counter() - t_begin)


@dataclass
class _Progress:
    """What a generation has made so far, and how much slower than measured its batches ran."""

    rounds: int = 0  # balanced rounds kept (= images per class)
    batches: int = 0  # batches kept; batch b's noise depends only on the seed and b
    abandoned: int = 0
    correction: float = 1.0  # the slowest observed batch time over its prediction (>= 1)
    images: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)


def _rounds_that_fit(r: SampleRequest, done: _Progress, target_rounds: float, steps_run: int) -> int:
    """Rounds of the next batch: a full batch or the rounds left; under a deadline one round first (the observed
    speed sizes the rest), shrunk to what the corrected prediction lets finish in time (0: stop)."""
    k = r.num_classes
    first = r.deadline is not None and done.batches == 0
    rounds = int(min(1 if first else max(1, r.batch_size // k), target_rounds - done.rounds))
    if r.deadline is not None:
        left = r.deadline - time.perf_counter()
        while rounds > 0 and r.throughput.seconds(rounds * k, steps_run) * done.correction * r.safety > left:
            rounds -= 1
    return rounds


def _sample_batch(denoiser, sched, r: SampleRequest, rounds: int, done: _Progress, steps_run: int, device) -> bool:
    """One batch of `rounds` balanced rounds, kept in `done`; False when a step would have crossed the deadline
    (the batch is abandoned and its observed slowdown recorded)."""
    k, thr = r.num_classes, r.throughput
    n = rounds * k
    y = torch.arange(k).repeat(rounds).to(device)
    proto = _round_prototypes(Levers.of(r).prototypes, done.rounds, rounds, device)
    t0 = time.perf_counter()
    step_time = thr.seconds(n, 1) * done.correction if thr is not None else 0.0
    finish = thr.overhead * done.correction if thr is not None else 0.0  # the VAE decode
    steps_done = [0]
    x = _denoise(denoiser, sched, r, y, proto, rng(r.seed, "dsr", done.batches), device, step_time, reserve=finish,
                 steps_done=steps_done)
    if x is not None:
        x = finish_batch(denoiser, x)  # latents -> pixels (a latent base), inside the batch's time and budget
    dt = time.perf_counter() - t0
    if x is None:
        done.abandoned += 1
        done.correction = _observed_slowdown(thr, n, steps_done[0], dt, done.correction)
        return False
    if thr is not None:
        est = thr.seconds(n, steps_run)
        if est > 0:
            done.correction = max(done.correction, dt / est)
    done.images.append(x.clamp(-1, 1).cpu())
    done.labels.append(y.cpu())
    done.rounds += rounds
    done.batches += 1
    return True


def _result(r: SampleRequest, done: _Progress, steps_run: int, total: float) -> SampleResult:
    """The kept images and labels, with the generation's stats for the run's meta."""
    out_x = torch.cat(done.images) if done.images else torch.empty(0, *r.image_shape)
    out_y = torch.cat(done.labels) if done.labels else torch.empty(0, dtype=torch.long)
    stats = {
        "steps": r.steps,
        "steps_run": steps_run,
        "scheduler": r.scheduler,
        "guidance": r.guidance,
        "ipc": done.rounds,
        "images": int(out_x.shape[0]),
        "seconds": round(total, 3),
        "images_per_second": round(out_x.shape[0] / total, 3) if total > 0 else None,
        "batches": done.batches,
        "slowdown_vs_measured": round(done.correction, 3),
        "batches_abandoned_at_deadline": done.abandoned,
        **lever_stats(r),
    }
    if r.deadline is not None:
        stats["seconds_left_at_end"] = round(r.deadline - time.perf_counter(), 3)
    return SampleResult(out_x, out_y, stats)


def check_request(r: SampleRequest, T: int) -> None:
    """One-line refusals of a request this sampler cannot honour."""
    if r.steps < 1 or r.steps > T:
        raise DDBenchError(f"steps={r.steps} is not allowed; it must lie in [1, {T}] (the training timesteps)")
    if r.ipc is None and r.deadline is None:
        raise DDBenchError("generation needs an ipc or a deadline")
    if r.deadline is not None and r.throughput is None:
        raise DDBenchError("generation under a deadline needs the sampler's throughput measurement")
    lv = Levers.of(r)
    check_lever_values(lv.settings())
    if needs_prototypes(lv.settings()) and lv.prototypes is None:
        raise DDBenchError("strength < 1 and mode_guidance > 0 need prototypes (one or more per class)")
    if lv.prototypes is not None and tuple(lv.prototypes.shape[2:]) != tuple(r.image_shape):
        raise DDBenchError(f"prototypes of shape {tuple(lv.prototypes.shape)} do not match images {r.image_shape}")


def lever_stats(r: SampleRequest) -> dict:
    """The levers a set was sampled with (only those switched on), for the run's meta."""
    lv, out = Levers.of(r), {}
    if lv.prototypes is not None:
        out["prototypes_per_class"] = int(lv.prototypes.shape[1])
    if lv.strength < 1.0:
        out["strength"] = lv.strength
    if lv.mode_guidance > 0.0:
        out["mode_guidance"] = lv.mode_guidance
        out["mode_guidance_stop"] = lv.mode_guidance_stop
    if tuple(lv.guidance_interval) != (0.0, 1.0):
        out["guidance_interval"] = list(lv.guidance_interval)
    return out


def _timesteps(sched, steps: int, strength: float) -> torch.Tensor:
    """The scheduler's S timesteps, or their last round(S * strength) for img2img (diffusers'
    StableDiffusionImg2ImgPipeline.get_timesteps: init_timestep = min(int(S * strength), S))."""
    sched.set_timesteps(steps)  # also resets the multistep solver's history
    keep = max(1, min(int(round(steps * strength)), steps))
    start = steps - keep
    if start and hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start * sched.order)
    return sched.timesteps[start * sched.order:]


def _round_prototypes(prototypes: torch.Tensor | None, first_round: int, rounds: int, device) -> torch.Tensor | None:
    """Batch order is round-major (class c of round r at r*k + c); round r uses prototype r mod M."""
    if prototypes is None:
        return None
    k, M = prototypes.shape[:2]
    idx = torch.arange(first_round, first_round + rounds) % M
    return prototypes[:, idx].transpose(0, 1).reshape(rounds * k, *prototypes.shape[2:]).to(device)


def _denoise(denoiser, sched, r: SampleRequest, y: torch.Tensor, proto: torch.Tensor | None, gen: torch.Generator,
             device, step_time: float, reserve: float = 0.0,
             steps_done: list[int] | None = None) -> torch.Tensor | None:
    """One batch from noise (or from noised prototypes) to the denoiser's samples; None when a step (plus `reserve`,
    the batch's decode) would cross the deadline. `steps_done[0]` counts the steps run (an abandoned batch's
    observed slowdown)."""
    lv = Levers.of(r)
    timesteps = _timesteps(sched, r.steps, lv.strength)
    noise = torch.randn(y.shape[0], *r.image_shape, generator=gen).to(device)
    x = noise if lv.strength >= 1.0 else sched.add_noise(proto, noise, timesteps[:1].repeat(y.shape[0]))
    T = denoiser.config.num_train_timesteps
    acp = sched.alphas_cumprod.to(device)
    lo, hi = lv.guidance_interval
    stop = int(round(len(timesteps) * lv.mode_guidance_stop))
    for i, t in enumerate(timesteps):
        ts = time.perf_counter()
        if r.deadline is not None and ts + step_time + reserve > r.deadline:
            return None
        scale = r.guidance if lo <= int(t) / T <= hi else 1.0  # limited-interval guidance
        with _autocast(device):
            eps = guided_eps(denoiser, x, t.to(device), y, scale).float()
        if lv.mode_guidance > 0.0 and i < stop:
            # MGD3 (Chan-Santiago et al., ICML 2025; jachansantiago/mode_guidance): eps <- eps - sqrt(1 - a_t) *
            # lambda * (m - x0_t), which moves the predicted clean image x0_t by lambda (1 - a_t) / sqrt(a_t) of
            # its distance to the mode m. Stable Diffusion's schedule keeps that pull near 1.5 lambda at t = T;
            # a cosine pixel schedule (a_T -> 0) makes it diverge, so the pull is capped at 1: x0 lands on m at most.
            a = acp[int(t)]
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            lam = min(lv.mode_guidance, float(a.sqrt() / (1 - a)))
            eps = eps - (1 - a).sqrt() * lam * (proto - x0)
        x = sched.step(eps, t, x).prev_sample
        step_time = max(step_time, time.perf_counter() - ts)
        if steps_done is not None:
            steps_done[0] = i + 1
    return x


def thread_options(device: torch.device) -> list[int | None]:
    """The CPU thread counts to measure: all of torch's and 1 (None: leave the setting, off the CPU)."""
    if device.type != "cpu":
        return [None]
    return sorted({max(1, torch.get_num_threads()), 1}, reverse=True)


@contextlib.contextmanager
def use_threads(threads: int | None):
    """Run the block at `threads` intra-op threads (None: unchanged), then restore the previous count."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _time_calls(denoiser, num_classes: int, image_shape, bs: int, guidance: float, repeats: int,
                device: torch.device) -> list[tuple[int, float]]:
    """(n, seconds) of single guided calls at n = one round and n = a full batch, interleaved, `repeats` each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = (num_classes, bs) if bs != num_classes else (num_classes,)
    inputs = {}
    for n in sizes:
        x = torch.randn(n, *image_shape, device=device)
        y = torch.arange(n, device=device) % num_classes
        t = torch.full((n,), 500, dtype=torch.long, device=device)
        inputs[n] = (x, t, y)
        with _autocast(device):
            guided_eps(denoiser, x, t, y, guidance)  # warm-up
    samples = []
    for _ in range(max(1, repeats)):
        for n in sizes:
            x, t, y = inputs[n]
            with _autocast(device):
                sync()
                t0 = time.perf_counter()
                guided_eps(denoiser, x, t, y, guidance)
                sync()
            samples.append((n, time.perf_counter() - t0))
    return samples


def _fit(samples: list[tuple[int, float]], num_classes: int, bs: int) -> Throughput:
    """a + b*n through the fastest call of each size (interference only adds time)."""
    fastest: dict[int, float] = {}
    for n, sec in samples:
        fastest[n] = min(sec, fastest.get(n, math.inf))
    if len(fastest) == 1:
        n, t1 = next(iter(fastest.items()))
        a, b = 0.0, t1 / n
    else:
        (n1, t1), (n2, t2) = sorted(fastest.items())
        b = max((t2 - t1) / (n2 - n1), 0.0)
        a = max(t1 - b * n1, 0.0)
        if a == 0.0 and b == 0.0:
            b = t2 / n2
    return Throughput(a=a, b=b, num_classes=num_classes, batch_size=bs, samples=samples)


def _observed_slowdown(thr: Throughput | None, n: int, steps_done: int, seconds: float, correction: float) -> float:
    """How much slower than measured an abandoned batch ran (its steps so far against the prediction)."""
    if thr is None or steps_done < 1:
        return correction
    predicted = thr.seconds(n, steps_done)
    return max(correction, seconds / predicted) if predicted > 0 else correction
