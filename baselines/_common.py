"""Helpers shared by the DM and MTT baselines: input checks, real-image init, seeding, atomic files.

Nothing here is specific to one method; it only uses `ddbench.api`, so it is also a small example of
what a third-party method needs.
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from tqdm.auto import tqdm

from ddbench.api import DDBenchError, ImageDataset, RunContext
from ddbench.helpers import atomic_save, load_tensors

DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
NO_AUGMENT = ("none", "None", "")


def matching_seconds(meta: dict[str, Any]) -> float | None:
    """The run's `SyntheticSet.generation_seconds`: its matching loop, when the whole loop ran in this session
    (the report's accuracy-per-second curve puts it on its axis, docs/compare.md#accuracy-per-second); None
    after a resume, whose earlier sessions' seconds are not known."""
    if meta.get("resumed_from"):
        return None
    return round(float(meta["seconds_this_session"]), 3)


def check_ipc_fits(ctx: RunContext) -> None:
    """IPC must not exceed the real images of the smallest class (both methods start from real images)."""
    counts = ctx.dataset.class_counts()
    smallest = int(counts.min())
    if ctx.ipc > smallest:
        c = int(counts.argmin())
        raise DDBenchError(
            f"--ipc {ctx.ipc} is larger than the {smallest} real training images of class {c} "
            f"({ctx.dataset.class_names[c]!r}) among the {ctx.dataset.num_classes} classes; "
            f"use --ipc {smallest} or less"
        )


def class_indices(dataset: ImageDataset) -> list[torch.Tensor]:
    return [dataset.indices_of_class(c) for c in range(dataset.num_classes)]


def init_images(ctx: RunContext, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial synthetic set, class-major ([0]*ipc, [1]*ipc, ...), as in main_DM.py / distill.py.

    `real`: `ipc` distinct random real images per class drawn with `ctx.generator(0)`, the same draw as
    the `random` baseline with the same seed, so "beats its initialisation" means "beats random real".
    `noise`: standard normal pixels in the normalised space (`torch.randn`, as both reference scripts).
    """
    ds = ctx.dataset
    labels = torch.arange(ds.num_classes).repeat_interleave(ctx.ipc)
    if mode == "noise":
        g = ctx.generator(1)
        images = torch.randn((len(labels), ds.channels, ds.image_size, ds.image_size), generator=g)
        return images, labels
    gen = ctx.generator(0)
    images = []
    for idx in class_indices(ds):
        pick = idx[torch.randperm(len(idx), generator=gen)[: ctx.ipc]]
        images.append(ds.train_x[pick])
    return torch.cat(images).clone().float(), labels




# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of handing them back to the OS (docs/baselines.md#speed).

    By default blocks above a threshold (128 KB, adapting up to 32 MB) are mmapped and unmapped on free,
    and the heap top is trimmed past 128 KB, so the per-chunk activations of every iteration are page-faulted
    in and zeroed by the kernel again (what the issue's doubled system time was). Setting both thresholds
    keeps them in the heap; the process's peak memory is unchanged (it is what is reused). Process-wide,
    once; a no-op (False) where glibc is not the C library.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = ok
    return ok


def make_dsa(strategy: str):
    """The host's DSA (ddbench.host.augment), or None when the strategy is 'none'."""
    if strategy in NO_AUGMENT:
        return None
    from ddbench.helpers import DSA

    return DSA(strategy=strategy)




def try_load(path: Path, device: torch.device | str = "cpu", mmap: bool = False) -> tuple[Any, str | None]:
    """(object, None) or (None, why it could not be read). Never raises for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        return None, "missing"
    try:
        return load_tensors(path, map_location="cpu" if mmap else device, mmap=mmap), None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported as such
        return None, f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def progress(iterable: Iterable, ctx: RunContext, desc: str, total: int | None = None, initial: int = 0):
    return tqdm(iterable, desc=desc, total=total, initial=initial, disable=not ctx.progress, leave=False,
                dynamic_ncols=True)


def load_checkpoint(ctx: RunContext, path: Path, fp: str, who: str, iterations: int) -> dict | None:
    """A run's checkpoint if it exists, is readable, was written by the same settings and is not past
    `iterations` (a longer run's later state is not this run's state); else None, with a message."""
    state, why = try_load(path, ctx.device)
    if state is None:
        if why != "missing":
            ctx.log(f"{who}: checkpoint {path} is {why}; starting from scratch")
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fp:
        ctx.log(f"{who}: checkpoint {path} was written with other settings; starting from scratch")
        return None
    if int(state.get("iteration", -1)) > iterations:
        ctx.log(f"{who}: checkpoint {path} is at iteration {state.get('iteration')}, past iterations={iterations}; "
                "starting from scratch")
        return None
    return state


@dataclass
class Resumable:
    """The state a checkpoint of an iterative distillation (DM, MTT) restores, and its one save/resume code.

    `tensors` are restored in place (they are the leaves being optimised), `optimizers` by their state
    dicts, `fixed` is stored alongside for inspection. `losses` is the run's loss list, kept up to the
    resumed iteration.
    """

    ctx: RunContext
    path: Path
    fingerprint: str
    who: str
    iterations: int
    tensors: dict[str, torch.Tensor]
    optimizers: dict[str, torch.optim.Optimizer]
    fixed: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None

    def resume(self) -> int:
        """The iteration to start from: 0, or that of a valid checkpoint (whose state is then loaded)."""
        state = load_checkpoint(self.ctx, self.path, self.fingerprint, self.who, self.iterations)
        if state is None:
            return 0
        with torch.no_grad():
            for key, tensor in self.tensors.items():
                tensor.copy_(state[key].to(tensor.device))
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state[key])
        start = int(state["iteration"])
        self.losses[:] = list(state["losses"])[:start]
        self.resumed_from = start
        self.ctx.log(f"{self.who}: resuming from iteration {start} ({self.path})")
        return start

    def save(self, iteration: int) -> None:
        atomic_save({"fingerprint": self.fingerprint, "iteration": iteration,
                     **{k: t.detach().cpu() for k, t in self.tensors.items()},
                     **{k: o.state_dict() for k, o in self.optimizers.items()},
                     **self.fixed, "losses": self.losses}, self.path)
