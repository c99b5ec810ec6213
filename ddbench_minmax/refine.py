"""`refine`: after sampling, N iterations of a registered matching objective on the generated set
(docs/minmax.md#refine).

The objective is another plugin's loss code (`ddbench.api.Objective`, e.g. `dm` from the DM baseline), looked up
by name in the registry: this module holds no copy of any loss, only the optimiser loop (SGD on the pixels with
the objective's own lr and momentum, as its method runs them). Under `--budget` refine is one more stage inside the
budget: its time is measured before the clock and kept back from the sampling (`reserve`), and the loop never
starts an iteration predicted to end past the deadline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ddbench.api import DDBenchError, MatchStep, Param, RunContext, resolve_params
from ddbench.helpers import Deadline

from .checks import PluginOutputError

NONE = "none"
SOURCE = ("docs/minmax.md#refine: matching from a generated start (GLaD, Cazenavette et al., CVPR 2023, optimises a "
          "generator's inputs with a matching loss; DM, IDC and DATM start matching from real images); "
          "none = the seed, FanJunqiao/DD_Track2 sample.py samples only")


def _check_settings(key: str, value: Any) -> None:
    for item in value:
        if not isinstance(item, str) or "=" not in item or not item.partition("=")[0].strip():
            raise DDBenchError(f"{key} item {item!r} is not allowed; give KEY=VALUE pairs separated by commas, e.g. "
                               "batch_real=32")


PARAMS: dict[str, Param] = {
    "refine": Param(NONE, SOURCE, "none, or a registered matching objective (`ddbench list`: objectives), e.g. dm"),
    "refine_iterations": Param(150, "docs/baselines.md#dm-preset-re-sized-to-the-faster-layout: DM's CPU preset runs "
                               "150 iterations (VICO-UoE/DatasetCondensation main_DM.py: --Iteration 20000)",
                               "objective iterations on the generated set (0 = no refine)", min=0),
    "refine_lr": Param(None, "None = the objective's own lr (dm: VICO-UoE/DatasetCondensation main_DM.py --lr_img 1.0)",
                       "SGD learning rate on the generated images (None = the objective's)", min=0),
    "refine_settings": Param((), "docs/minmax.md#refine: the objective's other settings keep their cited defaults "
                             "(dm: VICO-UoE/DatasetCondensation main_DM.py --batch_real 256, --dsa_strategy ...)",
                             "KEY=VALUE,...: settings of the objective (`ddbench list --params`, objectives)",
                             check=_check_settings),
}


def active(ctx: RunContext) -> bool:
    """Whether this run refines at all (`refine_iterations=0` is exactly no refine)."""
    return ctx.params["refine"] != NONE and ctx.params["refine_iterations"] > 0


def objective(ctx: RunContext) -> tuple[Any, dict[str, Any]]:
    """The registered objective `refine` names and its resolved settings; DDBenchError naming what is allowed."""
    p = ctx.params
    name = p["refine"]
    try:
        obj = ctx.registry.get("objectives", name)
    except DDBenchError:
        allowed = ", ".join([NONE, *ctx.registry.names("objectives")])
        raise DDBenchError(f"refine={name!r} is not allowed; choose one of {allowed}") from None
    overrides: dict[str, Any] = {}
    for item in p["refine_settings"]:
        key, _, value = str(item).partition("=")
        overrides[key.strip()] = value.strip()
    if p["refine_lr"] is not None:
        if "lr" in overrides:
            raise DDBenchError("refine_lr and refine_settings=lr=... both set the lr; give one")
        overrides["lr"] = p["refine_lr"]
    settings = resolve_params(f"objective {name} (refine_settings)", obj.params, overrides)
    missing = [k for k in ("lr", "momentum") if k not in settings]
    if missing:
        raise DDBenchError(f"objective {name!r} declares no {' or '.join(missing)} setting; refine needs both "
                           "(docs/plugins.md#register_objectivesregister)")
    return obj, settings


def validate(ctx: RunContext) -> None:
    """Every refine setting, before any work."""
    if ctx.params["refine"] == NONE:
        return  # refine_lr / refine_settings may sit in a preset while refine is off
    obj, settings = objective(ctx)
    obj.validate(ctx, settings)


def seconds_per_iteration(ctx: RunContext, ipc: int, image_shape: tuple[int, int, int]) -> float:
    """One objective iteration on a probe set of `ipc` images per class, timed on this device: the slower of the
    first two calls of a fresh step. The first pays every allocation; the second pays what a stateful objective
    does between iterations (gradient matching trains its network between image updates), which the first skips.
    So the estimate errs long."""
    obj, settings = objective(ctx)
    k = ctx.dataset.num_classes
    labels = torch.arange(k).repeat(ipc)  # class-interleaved, as the sampler's rounds
    probe = torch.zeros(len(labels), *image_shape, device=ctx.device)
    step = obj.bind(ctx, labels, settings)
    slowest = 0.0
    for it in range(2):
        t0 = time.perf_counter()
        step(it, probe)
        slowest = max(slowest, time.perf_counter() - t0)
    return slowest


PROBE_IPC = 16  # the larger probe of the cost line (images per class); larger sets are extrapolated


@dataclass(frozen=True)
class Cost:
    """Seconds of one refine iteration on a set of `ipc` images per class: a + b * ipc (two probes, 1 and
    PROBE_IPC per class; the real images an objective draws per iteration are in `a`)."""

    a: float
    b: float

    def seconds(self, ipc: int) -> float:
        return self.a + self.b * ipc


def measure(ctx: RunContext, image_shape: tuple[int, int, int], largest: int) -> Cost:
    """The cost line of an iteration on this device, probed at 1 and min(largest, PROBE_IPC) images per class."""
    t1 = seconds_per_iteration(ctx, 1, image_shape)
    n = max(1, min(largest, PROBE_IPC))
    if n == 1:
        return Cost(t1, 0.0)
    tn = seconds_per_iteration(ctx, n, image_shape)
    b = max(0.0, (tn - t1) / (n - 1))
    return Cost(max(tn - b * n, 0.0), b)


def split(ctx: RunContext, cost: Cost, sampling_seconds, available: float, largest: int) -> tuple[int, float]:
    """(images per class, seconds kept back for refine) under a budget: the largest IPC whose sampling
    (`sampling_seconds(ipc)`, its safety included) and refine_iterations at `cost` (times budget_safety) fit in
    `available` seconds, searched in [1, largest]; (0, refine's time at 1 per class) when not even one image per
    class fits with its refine."""
    iters, safety = ctx.params["refine_iterations"], ctx.params["budget_safety"]

    def total(ipc: int) -> float:
        return sampling_seconds(ipc) + iters * cost.seconds(ipc) * safety

    if total(1) > available:
        return 0, iters * cost.seconds(1) * safety
    lo, hi = 1, max(1, largest)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if total(mid) <= available:
            lo = mid
        else:
            hi = mid - 1
    return lo, iters * cost.seconds(lo) * safety


def too_long(ctx: RunContext, kept: float) -> str:
    """Why a budget cannot hold the refine it is asked for."""
    p = ctx.params
    return (f"refine={p['refine']} with refine_iterations={p['refine_iterations']} needs about {kept:.2f}s of "
            f"budget={ctx.budget:g}s on this device before one image per class is sampled; lower refine_iterations "
            "or raise --budget")


def run(ctx: RunContext, images: torch.Tensor, labels: torch.Tensor, deadline: float | None = None,
        expected: float = 0.0) -> tuple[torch.Tensor, dict[str, Any]]:
    """The refined set (images in the dataset's normalised space, on the CPU) and what refine did, for the run's
    meta; with refine off, `images` itself and {}. Under a `deadline` (an absolute time.perf_counter() value) no
    iteration starts that the slowest one so far (at first `expected` seconds) times budget_safety would end past."""
    if not active(ctx):
        return images, {}
    p = ctx.params
    obj, settings = objective(ctx)
    step = obj.bind(ctx, labels, settings)
    t0 = time.perf_counter()
    out, losses, stopped = optimise(step, images.to(ctx.device), p["refine_iterations"], settings["lr"],
                                    settings["momentum"], obj.name, deadline=deadline, expected=expected,
                                    safety=p["budget_safety"], progress=ctx.progress)
    seconds = time.perf_counter() - t0
    ctx.log(f"minmax-diffusion: refine={obj.name}: {len(losses)} of {p['refine_iterations']} iterations in "
            f"{seconds:.1f}s (lr {settings['lr']:g})" + (", stopped at the budget's deadline" if stopped else ""))
    meta = {"objective": obj.name, "source": getattr(obj, "source", ""), "iterations": p["refine_iterations"],
            "iterations_done": len(losses), "stopped_at_deadline": stopped, "settings": settings,
            "seconds": round(seconds, 3), "losses": losses, "final_loss": losses[-1] if losses else None}
    return out.cpu(), meta


def optimise(step: MatchStep, images: torch.Tensor, iterations: int, lr: float, momentum: float, who: str,
             deadline: float | None = None, expected: float = 0.0, safety: float = 1.0,
             progress: bool = False) -> tuple[torch.Tensor, list[float], bool]:
    """SGD(lr, momentum) on the images with the step's gradient, as DM's own loop: (images, losses, whether the
    deadline stopped it). A step that returns a gradient of another shape, or a non-finite one, fails the run
    naming the objective."""
    from tqdm.auto import tqdm

    x = images.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
    losses: list[float] = []
    clock = Deadline(deadline, safety, expected)
    bar = tqdm(total=iterations, desc=f"minmax refine ({who})", disable=not progress, leave=False)
    try:
        for it in range(iterations):
            if not clock.allows():
                break
            with clock.timing():
                loss, grad = step(it, x)
                if not isinstance(grad, torch.Tensor) or grad.shape != x.shape or not torch.isfinite(grad).all():
                    got = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
                    raise PluginOutputError(f"objective {who!r} returned a gradient of shape {got} (or non-finite) "
                                            f"for images of shape {tuple(x.shape)}")
                opt.zero_grad()
                x.grad = grad.to(x.device)
                opt.step()
                losses.append(float(loss))
            bar.update(1)
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        bar.close()
    return x.detach(), losses, clock.stopped


__all__ = ["PARAMS", "NONE", "Cost", "active", "objective", "validate", "measure", "split", "too_long", "run",
           "optimise", "seconds_per_iteration"]
