"""What minmax-diffusion checks of the plugins it calls (a policy's Decision, a sampler's SampleResult).

A policy or sampler is a plugin of its own: a broken one must be named, and its run recorded as failed
(exit 1), not blamed on the user after the fine-tuning, nor surface as an AttributeError.
"""
from __future__ import annotations

import torch

from ddbench.api import Decision, PlanRequest, RunFailed, SampleResult


class PluginOutputError(RunFailed):
    """A policy or sampler returned something minmax-diffusion cannot use (a failed run naming it)."""


class BudgetNotMet(RunFailed):
    """A budget that the device could meet when measured gave no balanced round when it ran (a busy machine)."""


def check_decision(decision: object, policy: str, req: PlanRequest) -> Decision:
    """The policy's Decision, if it names a step count in [1, max_steps] and an IPC >= 1."""
    def fail(what: str) -> PluginOutputError:
        return PluginOutputError(f"policy {policy!r} {what}")

    if not isinstance(decision, Decision):
        raise fail(f"returned {type(decision).__name__}, expected ddbench.api.Decision")
    s = decision.steps
    if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= req.max_steps:
        raise fail(f"chose steps={s!r}; allowed: an integer in [1, {req.max_steps}]")
    if isinstance(decision.ipc, bool) or not isinstance(decision.ipc, int) or decision.ipc < 1:
        raise fail(f"chose ipc={decision.ipc!r}; allowed: an integer >= 1")
    return decision


def check_samples(out: object, sampler: str, num_classes: int, image_shape: tuple[int, int, int]) -> int:
    """The images per class of the sampler's result (0 when it made none), if it is a SampleResult of
    float images of `image_shape` with integer labels, every class equally often."""
    def fail(what: str) -> PluginOutputError:
        return PluginOutputError(f"sampler {sampler!r} {what}")

    if not isinstance(out, SampleResult):
        raise fail(f"returned {type(out).__name__}, expected ddbench.api.SampleResult")
    x, y = out.images, out.labels
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise fail("returned images or labels that are not torch tensors")
    if x.ndim == 4 and x.shape[0] == 0 and y.numel() == 0:
        return 0  # nothing fitted (its shape may be the denoiser's own, e.g. latents)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape) or not x.is_floating_point():
        raise fail(f"returned images of shape {tuple(x.shape)} and dtype {x.dtype}; expected floating-point "
                   f"(N, {', '.join(map(str, image_shape))})")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
        raise fail(f"returned labels of shape {tuple(y.shape)} and dtype {y.dtype}; "
                   f"expected {x.shape[0]} class indices")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise fail(f"returned labels {int(y.min())}..{int(y.max())}; the classes are 0..{num_classes - 1}")
    counts = out.per_class(num_classes)
    if len(set(counts)) != 1:
        raise fail(f"returned an unbalanced set: images per class {counts[:20]}")
    return counts[0]


__all__ = ["PluginOutputError", "BudgetNotMet", "check_decision", "check_samples"]
