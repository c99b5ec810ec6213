"""The DSR sampler (Diffusion Step Reduction, Fan et al.): few-step sampling of the trained denoiser.

A separate scheduler from training: DDIM (default, eta 0) or DPM-Solver++ (2nd order multistep), with
S steps over the T training timesteps. Generation is batched, class-balanced (every batch holds the same
number of images of each class) and seeded (batch b's noise depends only on the seed and b). The sampler
measures its own cost on the current device (`measure`), so a policy can turn a time budget into an IPC,
and under a deadline it stops before a batch that would not finish in time.

Contract for third-party samplers (registered under `samplers`, looked up by the method's `sampler` param):
    measure(model, num_classes, image_shape, batch_size) -> Throughput
    generate(model, num_classes, steps, *, ipc=None, deadline=None, scheduler=..., batch_size=...,
             seed=..., throughput=None, progress=...) -> (images in [-1, 1], labels, stats dict)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ddbench.api import DDBenchError, Sampler

SCHEDULERS = ("ddim", "dpm++")


def make_sampling_scheduler(kind: str, num_train_timesteps: int):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    if kind == "ddim":
        # "trailing" spacing starts at t = T-1 even for very few steps (Lin et al. 2024, "Common diffusion
        # noise schedules and sample steps are flawed", Table 2; diffusers DDIMScheduler option).
        return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=False, timestep_spacing="trailing")
    if kind == "dpm++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise DDBenchError(f"scheduler={kind!r} is not allowed; choose one of {', '.join(SCHEDULERS)}")


@dataclass
class Throughput:
    """Cost of one denoiser evaluation as a function of the batch size n: a + b*n seconds (measured)."""

    a: float
    b: float
    num_classes: int
    batch_size: int
    overhead: float = 0.0
    samples: list[tuple[int, float]] = field(default_factory=list)

    def seconds(self, n_images: int, steps: int) -> float:
        """Time to generate n_images at `steps` steps in batches of at most `batch_size`."""
        if n_images <= 0:
            return 0.0
        full, rest = divmod(n_images, self.batch_size)
        t = full * (steps * (self.a + self.b * self.batch_size) + self.overhead)
        if rest:
            t += steps * (self.a + self.b * rest) + self.overhead
        return t

    def images_per_second(self, steps: int) -> float:
        n = self.batch_size
        return n / (steps * (self.a + self.b * n) + self.overhead)

    def max_ipc(self, budget: float, steps: int, safety: float = 1.0) -> int:
        """Largest IPC whose balanced generation fits `budget` seconds (with a safety factor)."""
        k = self.num_classes
        lo, hi = 0, 1
        while self.seconds(hi * k, steps) * safety <= budget:
            lo, hi = hi, hi * 2
            if hi > 10**7:
                break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.seconds(mid * k, steps) * safety <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    def min_budget(self, steps: int, safety: float = 1.0) -> float:
        """The smallest budget that gives every class one image at `steps` steps."""
        return self.seconds(self.num_classes, steps) * safety

    def table(self, steps_list) -> dict[str, float]:
        return {str(s): round(self.images_per_second(s), 2) for s in steps_list}


def balanced_batch_size(num_classes: int, batch_size: int) -> int:
    """A batch size that is a multiple of the number of classes (at least one image per class)."""
    return max(1, batch_size // num_classes) * num_classes


class DSRSampler(Sampler):
    name = "dsr"
    description = "Diffusion Step Reduction: DDIM / DPM-Solver++ few-step sampling, class-balanced, budget-aware"

    @torch.no_grad()
    def measure(self, model, num_classes: int, image_shape: tuple[int, int, int], batch_size: int,
                repeats: int = 2) -> Throughput:
        """Time single denoiser evaluations at two batch sizes and fit a + b*n (after a warm-up call)."""
        model.eval()
        bs = balanced_batch_size(num_classes, batch_size)
        small = num_classes
        samples = []
        device = next(model.parameters(), torch.empty(0)).device
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for n in (small, bs, small, bs) if bs != small else (small, small):
            x = torch.randn(n, *image_shape, device=device)
            y = torch.arange(n, device=device) % num_classes
            t = torch.full((n,), 500, dtype=torch.long, device=device)
            model(x, t, y)  # warm-up
            sync()
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x, t, y)
            sync()
            samples.append((n, (time.perf_counter() - t0) / repeats))
        by_n: dict[int, list[float]] = {}
        for n, s in samples:
            by_n.setdefault(n, []).append(s)
        if len(by_n) == 1:
            n, ts = next(iter(by_n.items()))
            a, b = 0.0, min(ts) / n
        else:
            (n1, t1), (n2, t2) = sorted((n, min(ts)) for n, ts in by_n.items())
            b = max((t2 - t1) / (n2 - n1), 0.0)
            a = max(t1 - b * n1, 0.0)
            if a == 0.0 and b == 0.0:
                b = t2 / n2
        return Throughput(a=a, b=b, num_classes=num_classes, batch_size=bs, samples=samples)

    @torch.no_grad()
    def generate(
        self,
        model,
        num_classes: int,
        steps: int,
        *,
        image_shape: tuple[int, int, int],
        num_train_timesteps: int,
        ipc: int | None = None,
        deadline: float | None = None,
        scheduler: str = "ddim",
        batch_size: int = 100,
        seed: int = 0,
        throughput: Throughput | None = None,
        safety: float = 1.1,
        progress: bool = False,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Generate `ipc` images per class, or (deadline set, ipc None) as many balanced rounds as fit.

        deadline: an absolute time.perf_counter() value. Before each batch the expected time of the batch
        (from `throughput`, corrected by the slowest observed batch) is checked against it; the batch is
        shrunk to the rounds that fit, or generation stops. Every batch is balanced, so every class always
        has the same number of images.
        """
        from tqdm.auto import tqdm

        if steps < 1 or steps > num_train_timesteps:
            raise DDBenchError(f"steps={steps} is not allowed; it must lie in [1, {num_train_timesteps}] (the training timesteps)")
        if ipc is None and deadline is None:
            raise DDBenchError("generation needs an ipc or a deadline")
        model.eval()
        device = device or next(model.parameters(), torch.empty(0)).device
        k = num_classes
        rounds_per_batch = max(1, batch_size // k)
        target_rounds = ipc if ipc is not None else math.inf
        done_rounds = 0
        images, labels = [], []
        correction = 1.0
        t_begin = time.perf_counter()
        batch_times = []
        abandoned = 0
        bar = tqdm(total=None if ipc is None else ipc * k, desc=f"dsr S={steps}", disable=not progress, leave=False)
        b = 0
        while done_rounds < target_rounds:
            rounds = int(min(rounds_per_batch, target_rounds - done_rounds))
            if deadline is not None:
                assert throughput is not None, "a deadline needs a throughput measurement"
                left = deadline - time.perf_counter()
                while rounds > 0 and throughput.seconds(rounds * k, steps) * correction * safety > left:
                    rounds -= 1
                if rounds == 0:
                    break
            n = rounds * k
            y = torch.arange(k).repeat(rounds).to(device)
            g = torch.Generator().manual_seed(seed * 1_000_003 + 31 * b)
            x = torch.randn(n, *image_shape, generator=g).to(device)
            sched = make_sampling_scheduler(scheduler, num_train_timesteps)
            sched.set_timesteps(steps)
            t0 = time.perf_counter()
            aborted = False
            step_time = throughput.seconds(n, 1) * correction if throughput is not None else 0.0
            for t in sched.timesteps:
                ts = time.perf_counter()
                # The guard that makes the budget hold even when the device slows down mid-batch: a batch
                # whose next step would cross the deadline is abandoned (all or nothing, so classes stay equal).
                if deadline is not None and ts + step_time > deadline:
                    aborted = True
                    break
                eps = model(x, t.expand(n), y)
                x = sched.step(eps, t, x).prev_sample
                step_time = max(step_time, time.perf_counter() - ts)
            dt = time.perf_counter() - t0
            if aborted:
                abandoned += 1
                break
            batch_times.append((n, dt))
            if throughput is not None:
                est = throughput.seconds(n, steps)
                if est > 0:
                    correction = max(correction, dt / est)
            images.append(x.clamp(-1, 1).cpu())
            labels.append(y.cpu())
            done_rounds += rounds
            b += 1
            bar.update(n)
        bar.close()
        total = time.perf_counter() - t_begin
        if images:
            out_x, out_y = torch.cat(images), torch.cat(labels)
        else:
            out_x = torch.empty(0, *image_shape)
            out_y = torch.empty(0, dtype=torch.long)
        stats = {
            "steps": steps,
            "scheduler": scheduler,
            "ipc": done_rounds,
            "images": int(out_x.shape[0]),
            "seconds": round(total, 3),
            "images_per_second": round(out_x.shape[0] / total, 3) if total > 0 else None,
            "batches": len(batch_times),
            "slowdown_vs_measured": round(correction, 3),
            "batches_abandoned_at_deadline": abandoned,
        }
        if deadline is not None:
            stats["seconds_left_at_end"] = round(deadline - time.perf_counter(), 3)
        return out_x, out_y, stats
