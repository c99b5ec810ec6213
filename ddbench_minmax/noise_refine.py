"""Generator-side refine (issue 31, item 2): optimise the DSR sampler's starting point, not the pixels.

Pixel-side `refine` (refine.py) moves the generated images freely. Here the matching loss of a registered
objective is backpropagated through the S-step DDIM chain into the chain's start x_start (the noised k-means
prototype at the first kept timestep), and SGD moves x_start: every iterate is still a sample of the generator, as
GLaD (Cazenavette et al., CVPR 2023) and LD3M optimise a generator's inputs. The price is the chain: each iteration
runs the kept steps forward and backward (two denoiser calls per step with guidance), so it costs many pixel-side
iterations (measured: benchmarks/bench_noise_refine.py, results in benchmarks/results/noise-refine/).

The start is drawn exactly as `sampler._denoise` draws it for the request's seed (batch b's noise from
`seeds.generator(seed, "dsr", b)`, the same batches of whole rounds), and the chain runs the sampler's own
scheduler and guidance, so 0 iterations gives exactly the images `DSRSampler.generate` gives. The objective is looked
up by name (`refine.objective`): no copy of any loss lives here. The optimiser: SGD(lr, momentum) as the caller
gives them (GLaD's generator-input optimiser is SGD with momentum 0.5, GeorgeCazenavette/glad glad_utils.py
get_optimizer_img); DM's own lr 1.0 overshoots through the chain where a tenth of it descends (the benchmark's
probe). `target="prototypes"` moves the prototypes instead, with the noise held: x_start = sqrt(a_t0) * proto +
sqrt(1 - a_t0) * noise, so with one prototype per image (the plugin's k = IPC) that is the start's optimisation at
lr * a_t0, not a new direction.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from ddbench.api import DDBenchError, MatchStep, SampleRequest
from ddbench.helpers import Deadline
from ddbench.helpers import generator as rng

from .checks import PluginOutputError
from .model import guided_eps
from .sampler import (Levers, _autocast, _round_prototypes, _timesteps, check_request, finish_batch,
                      make_sampling_scheduler, use_threads)

TARGETS = ("start", "prototypes")


@dataclass
class Start:
    """The chain's start for a fixed-IPC request, in the sampler's batches (whole rounds of the classes)."""

    noise: torch.Tensor  # (N, C, H, W) the Gaussian draws, batch b's from seeds.generator(seed, "dsr", b)
    prototypes: torch.Tensor | None  # (N, C, H, W) each image's prototype (None from pure noise)
    labels: torch.Tensor  # (N,) class-interleaved, as the sampler's rounds
    batches: list[slice]  # the sampler's batches: the chain runs per batch so 0 iterations is bit-exact
    t0: torch.Tensor  # the first kept timestep (strength < 1 starts there)
    add_noise: object  # the scheduler's add_noise (x_start from prototypes and noise)
    strength: float

    def x(self, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """x_start from (possibly moved) prototypes and the fixed noise, as `_denoise` computes it."""
        proto = self.prototypes if prototypes is None else prototypes
        if self.strength >= 1.0:
            return self.noise
        return torch.cat([self.add_noise(proto[s], self.noise[s], self.t0.repeat(s.stop - s.start))
                          for s in self.batches])


def check(r: SampleRequest, T: int) -> None:
    """What this variant can run: the DSR request of a fixed IPC, DDIM, no mode guidance (one line each)."""
    check_request(r, T)
    if r.ipc is None or r.deadline is not None:
        raise DDBenchError("noise refine needs a request of a fixed ipc without a sampling deadline (its own deadline "
                           "is the refine's)")
    if r.scheduler != "ddim":
        raise DDBenchError(f"scheduler={r.scheduler!r} is not allowed for noise refine; it runs the DDIM chain "
                           "(scheduler=ddim)")
    if Levers.of(r).mode_guidance > 0.0:
        raise DDBenchError(f"mode_guidance={Levers.of(r).mode_guidance!r} is not allowed for noise refine; give mode_guidance=0")


def draw_start(denoiser, r: SampleRequest, device) -> tuple[object, Start]:
    """(the sampling scheduler, the start) of `DSRSampler.generate(denoiser, r)` for a fixed-IPC request: the same
    batches (sample_batch // classes rounds each), prototypes and seeded noise."""
    check(r, denoiser.config.num_train_timesteps)
    sched = make_sampling_scheduler(r.scheduler, denoiser)
    timesteps = _timesteps(sched, r.steps, Levers.of(r).strength)
    k = r.num_classes
    per_batch = max(1, r.batch_size // k)
    noise, protos, labels, batches = [], [], [], []
    done = b = 0
    while done < r.ipc:
        rounds = min(per_batch, r.ipc - done)
        n = rounds * k
        labels.append(torch.arange(k).repeat(rounds))
        proto = _round_prototypes(Levers.of(r).prototypes, done, rounds, device)
        if proto is not None:
            protos.append(proto)
        noise.append(torch.randn(n, *r.image_shape, generator=rng(r.seed, "dsr", b)).to(device))
        batches.append(slice(done * k, done * k + n))
        done += rounds
        b += 1
    start = Start(torch.cat(noise), torch.cat(protos) if protos else None, torch.cat(labels).to(device), batches,
                  timesteps[:1], sched.add_noise, Levers.of(r).strength)
    return sched, start


def chain(denoiser, sched, r: SampleRequest, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The sampler's DDIM loop from `x` (one batch) to its samples in [-1, 1], differentiable when grad is on:
    `_denoise`'s steps (guided eps under the same autocast, limited-interval guidance) and `finish_batch`."""
    timesteps = _timesteps(sched, r.steps, Levers.of(r).strength)  # a fresh scheduler state, as every sampled batch
    T = denoiser.config.num_train_timesteps
    lo, hi = Levers.of(r).guidance_interval
    device = x.device
    for t in timesteps:
        scale = r.guidance if lo <= int(t) / T <= hi else 1.0
        with _autocast(device):
            eps = guided_eps(denoiser, x, t.to(device), y, scale).float()
        x = sched.step(eps, t, x).prev_sample
    return finish_batch(denoiser, x).clamp(-1, 1)


def sample(denoiser, sched, r: SampleRequest, start: Start, x_start: torch.Tensor) -> torch.Tensor:
    """The whole set from `x_start`, batch by batch (graph kept when grad is on)."""
    return torch.cat([chain(denoiser, sched, r, x_start[s], start.labels[s]) for s in start.batches])


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No parameter gradients while the chain is backpropagated into its input (restored after)."""
    before = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), before):
            p.requires_grad_(flag)


@dataclass
class Result:
    images: torch.Tensor  # (N, C, H, W) in the dataset's normalised space: the chain of the final start
    labels: torch.Tensor
    losses: list[float]
    seconds: float  # every iteration and the final chain
    stopped_at_deadline: bool
    x_start: torch.Tensor  # the final start (from the final prototypes under target=prototypes)
    iteration_seconds: list[float]  # each iteration's wall time (the first pays the backward's first allocations)
    final_seconds: float  # the final chain, forward only


class Loop:
    """The optimisation's state, one iteration at a time (benchmarks time single iterations): SGD(lr, momentum) on
    the start (or its prototypes), the objective's gradient pulled back through the chain. `step` is a bound
    MatchStep for the start's labels (class-interleaved); `to_images` maps the chain's [-1, 1] samples to the
    dataset's normalised space (train.from_signed_pixels)."""

    def __init__(self, denoiser, r: SampleRequest, step: MatchStep, to_images, lr: float, momentum: float, who: str,
                 target: str = "start"):
        if target not in TARGETS:
            raise DDBenchError(f"target={target!r} is not allowed; choose one of {', '.join(TARGETS)}")
        self.denoiser, self.r, self.step, self.to_images, self.who, self.target = (denoiser, r, step, to_images, who,
                                                                                    target)
        device = next(denoiser.parameters()).device
        denoiser.eval()
        self.sched, self.start = draw_start(denoiser, r, device)
        if target == "prototypes" and self.start.prototypes is None:
            raise DDBenchError("target=prototypes needs prototypes (strength < 1 with prototypes=kmeans)")
        leaf = self.start.x() if target == "start" else self.start.prototypes
        self.leaf = leaf.detach().clone().requires_grad_(True)
        self.opt = torch.optim.SGD([self.leaf], lr=lr, momentum=momentum)
        self.forward_seconds = 0.0  # the slowest forward chain so far: what the final set costs

    def x_start(self) -> torch.Tensor:
        return self.leaf if self.target == "start" else self.start.x(self.leaf)

    def iterate(self, it: int) -> float:
        """One iteration: the chain forward with its graph, the objective's (loss, gradient) at iteration `it`, the
        gradient backpropagated to the start, one SGD step. A gradient of another shape, or a non-finite one, fails
        the run naming the objective."""
        with frozen(self.denoiser):
            t0 = time.perf_counter()
            images = self.to_images(sample(self.denoiser, self.sched, self.r, self.start, self.x_start()))
            self.forward_seconds = max(self.forward_seconds, time.perf_counter() - t0)
            loss, grad = self.step(it, images.detach())
            if not isinstance(grad, torch.Tensor) or grad.shape != images.shape or not torch.isfinite(grad).all():
                got = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
                raise PluginOutputError(f"objective {self.who!r} returned a gradient of shape {got} (or non-finite) "
                                        f"for images of shape {tuple(images.shape)}")
            self.opt.zero_grad()
            images.backward(grad.to(images.device))
            self.opt.step()
        return float(loss)

    @torch.no_grad()
    def images(self) -> torch.Tensor:
        """The set the current start gives (the chain without a graph), in the dataset's normalised space."""
        return self.to_images(sample(self.denoiser, self.sched, self.r, self.start, self.x_start()))


def optimise(denoiser, r: SampleRequest, step: MatchStep, to_images, iterations: int, lr: float, momentum: float,
             who: str, target: str = "start", deadline: float | None = None, expected: float = 0.0,
             safety: float = 1.0, progress: bool = False, threads: int | None = None) -> Result:
    """`iterations` of `Loop` (fewer under a deadline), then the set of the final start. The stopping rule is
    refine.optimise's, with the final chain counted: no iteration starts that the slowest one so far (at first
    `expected`) plus the final chain (the slowest forward so far; at first a third of `expected`, backward being
    about twice the forward), times `safety`, would end past `deadline` (an absolute time.perf_counter() value).
    `threads`: the intra-op threads of the whole loop (None: unchanged), as the sampler runs at `Throughput.threads`:
    on 2 shared cores the chain's many small ops at 2 threads wait at every OpenMP barrier for the busy core
    (docs/minmax.md#budgets-on-a-busy-machine)."""
    with use_threads(threads):
        return _optimise(denoiser, r, step, to_images, iterations, lr, momentum, who, target, deadline, expected,
                         safety, progress)


def _optimise(denoiser, r, step, to_images, iterations, lr, momentum, who, target, deadline, expected, safety,
              progress) -> Result:
    from tqdm.auto import tqdm

    if iterations < 0:
        raise DDBenchError(f"iterations={iterations!r} is not allowed; give an integer >= 0")
    t_begin = time.perf_counter()
    loop = Loop(denoiser, r, step, to_images, lr, momentum, who, target)
    losses: list[float] = []
    times: list[float] = []
    clock, final_chain = Deadline(deadline, safety, expected), expected / 3
    bar = tqdm(total=iterations, desc=f"minmax noise refine ({who})", disable=not progress, leave=False)
    try:
        for it in range(iterations):
            if not clock.allows(reserve=final_chain):
                break
            with clock.timing():
                losses.append(loop.iterate(it))
            times.append(clock.last)
            final_chain = max(final_chain, loop.forward_seconds)
            bar.update(1)
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        bar.close()
    t = time.perf_counter()
    images = loop.images()
    final = time.perf_counter() - t
    return Result(images.detach(), loop.start.labels.clone(), losses, time.perf_counter() - t_begin, clock.stopped,
                  loop.x_start().detach(), times, final)


__all__ = ["TARGETS", "Start", "Result", "Loop", "check", "draw_start", "chain", "sample", "frozen", "optimise"]
