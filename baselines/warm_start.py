"""Warm starts for the matching baselines: `init=PATH` (a stored synthetic set) or `init=run:RUN_ID` (the set of a
run in this --out/--db's results database), besides `real` and `noise` (docs/baselines.md#warm-starts).

One resolver for every matching method (DM, MTT, the gradient-matching ones): a method declares its setting with
`init_param(...)`, calls `check_init(ctx, key)` in `validate` (every check before any work: a one-line
DDBenchError naming the value and what is allowed) and `initial_set(ctx, key)` in `distill`, and records the
returned provenance (path or run id, the file's sha256) in its meta. A stored set is read with ddbench's one `.pt`
reader (`ddbench.core.safeload.load_tensors`): tensors and plain containers only, never arbitrary objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddbench.api import DDBenchError, Param, RunContext
from ddbench.helpers import UnsafeFile, file_sha256, load_tensors

from ._common import init_images

BUILT_IN = ("real", "noise")
RUN_PREFIX = "run:"
ALLOWED = "real, noise, a stored synthetic set (PATH to a synset.pt) or run:RUN_ID (a run of this --out/--db)"


def _check_syntax(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise DDBenchError(f"{key}={value!r} is not allowed; give {ALLOWED}")
    if value.startswith(RUN_PREFIX):
        if not value[len(RUN_PREFIX):].strip():
            raise DDBenchError(f"{key}={value!r} names no run; give run:RUN_ID (`ddbench report` lists run ids)")
    elif value not in BUILT_IN and not Path(value).expanduser().is_file():
        raise DDBenchError(f"{key}={value!r}: no such file; give {ALLOWED}")


def init_param(source: str, default: str = "real") -> Param:
    """The initial-set setting every matching baseline declares (its default and source are the method's own)."""
    return Param(default, source, f"initial synthetic images: {ALLOWED}", check=_check_syntax)


@dataclass
class WarmStart:
    """A checked stored set: class-major images (ipc of each class, classes in order) in the dataset's normalised
    space, their labels, and where they came from (recorded in the run's meta)."""

    images: torch.Tensor
    labels: torch.Tensor
    provenance: dict[str, Any]


def is_warm(value: str) -> bool:
    """True when `value` names a stored set (a path or run:ID) rather than `real` / `noise`."""
    return value not in BUILT_IN


def check_init(ctx: RunContext, key: str = "init") -> WarmStart | None:
    """The stored set `ctx.params[key]` names, checked against the run (dataset, image shape, classes, ctx.ipc per
    class, finite), or None for `real` / `noise`. Call it in `validate`: it refuses a bad value in one line."""
    value = ctx.params[key]
    if not is_warm(value):
        return None
    path, provenance = _locate(ctx, key, value)
    saved = _read(key, value, path)
    images, labels = _checked(ctx, key, value, saved)
    provenance.update(path=str(path.absolute()), sha256=file_sha256(path))
    made_by = (saved.get("config") or {}).get("method") if isinstance(saved.get("config"), dict) else None
    if made_by and "method" not in provenance:
        provenance["method"] = made_by
    return WarmStart(images, labels, provenance)


def initial_set(ctx: RunContext, key: str = "init",
                draw: RunContext | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any] | None]:
    """(images, labels, provenance) a matching method starts from: the stored set of `ctx.params[key]` (checked,
    class-major, in the dataset's normalised space), or `real` / `noise` as `_common.init_images` draws them from
    `draw` (default `ctx`; MTT passes its ZCA-whitened data) with provenance None."""
    warm = check_init(ctx, key)
    if warm is None:
        images, labels = init_images(draw or ctx, ctx.params[key])
        return images, labels, None
    return warm.images.clone(), warm.labels.clone(), warm.provenance


def _locate(ctx: RunContext, key: str, value: str) -> tuple[Path, dict[str, Any]]:
    """The file a value names and the first part of its provenance."""
    if value.startswith(RUN_PREFIX):
        run_id = value[len(RUN_PREFIX):].strip()
        if ctx.results_db is None:
            raise DDBenchError(f"{key}={value!r} needs a results database (ddbench run --out/--db); "
                               "give a PATH instead")
        from ddbench.helpers import get_run

        try:
            rec = get_run(ctx.results_db, run_id)
        except DDBenchError as exc:
            raise DDBenchError(f"{key}={value!r}: {exc}") from None
        if rec is None:
            raise DDBenchError(f"{key}={value!r}: no run {run_id!r} in {ctx.results_db}; give a run id of that "
                               "database (`ddbench report` lists them) or a PATH")
        if not rec.ok or not rec.artifact:
            raise DDBenchError(f"{key}={value!r}: run {rec.run_id} ended {rec.status!r} and left no synthetic set; "
                               "give a run that ended ok")
        path = Path(rec.artifact)
        if not path.is_file():
            raise DDBenchError(f"{key}={value!r}: the set of run {rec.run_id} ({path}) is missing; give a PATH or "
                               "another run")
        return path, {"init": value, "run_id": rec.run_id, "method": rec.method}
    path = Path(value).expanduser()
    if not path.is_file():
        raise DDBenchError(f"{key}={value!r}: no such file; give {ALLOWED}")
    return path, {"init": value}


def _read(key: str, value: str, path: Path) -> dict[str, Any]:
    try:
        saved = load_tensors(path)  # tensors and plain containers only
    except UnsafeFile as exc:  # never unpickled: the file and what it holds, in one line
        raise DDBenchError(f"{key}={value!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input, said in one line
        why = " ".join(str(exc).split())[:200]
        raise DDBenchError(f"{key}={value!r}: {path} is not a readable synthetic set ({type(exc).__name__}: "
                           f"{why}); give a synset.pt that ddbench wrote") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("images"), torch.Tensor) \
            or not isinstance(saved.get("labels"), torch.Tensor):
        raise DDBenchError(f"{key}={value!r}: {path} holds no synthetic set (a dict with `images` and `labels` "
                           "tensors, as OUT/runs/RUN_ID/synset.pt); give a synset.pt that ddbench wrote")
    return saved


def _checked(ctx: RunContext, key: str, value: str, saved: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The set's images and labels, class-major, after every check against the run."""
    ds = ctx.dataset
    images, labels = saved["images"], saved["labels"]
    want = (ds.channels, ds.image_size, ds.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise DDBenchError(f"{key}={value!r}: images of shape {tuple(images.shape)[1:]}; the dataset {ds.name} has "
                           f"{want} (channels, height, width); give a set made on {ds.name}")
    made_on = saved.get("dataset") if isinstance(saved.get("dataset"), dict) else {}
    if made_on.get("name") not in (None, ds.name):
        raise DDBenchError(f"{key}={value!r}: a set made on dataset {made_on.get('name')!r}; this run is on "
                           f"{ds.name!r}; give a set made on {ds.name}")
    for stat in ("mean", "std"):
        if made_on.get(stat) is not None and tuple(map(float, made_on[stat])) != tuple(map(float, getattr(ds, stat))):
            raise DDBenchError(f"{key}={value!r}: a set normalised with {stat} {tuple(made_on[stat])}; the dataset "
                               f"{ds.name} uses {tuple(getattr(ds, stat))}; give a set made on this data")
    if labels.ndim != 1 or labels.is_floating_point() or len(labels) != len(images):
        raise DDBenchError(f"{key}={value!r}: labels of shape {tuple(labels.shape)} ({labels.dtype}); a warm start "
                           f"needs one integer class per image (soft labels are not matched)")
    k = ds.num_classes
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise DDBenchError(f"{key}={value!r}: labels {int(labels.min())}..{int(labels.max())}; the dataset "
                           f"{ds.name} has classes 0..{k - 1}; give a set of its {k} classes")
    counts = torch.bincount(labels.long(), minlength=k).tolist()
    if any(c != ctx.ipc for c in counts):
        shown = counts if len(counts) <= 12 else f"{counts[:12]}..."
        raise DDBenchError(f"{key}={value!r}: images per class {shown}; this run's --ipc is {ctx.ipc}; give a set "
                           f"with exactly {ctx.ipc} image(s) of each of the {k} classes")
    if not torch.isfinite(images).all():
        raise DDBenchError(f"{key}={value!r}: the set holds NaN or infinite pixels; give a finite set")
    order = torch.argsort(labels, stable=True)  # class-major, as init_images and main_DM.py / distill.py lay it out
    return images[order].float().contiguous(), labels[order].long()


__all__ = ["ALLOWED", "WarmStart", "init_param", "check_init", "initial_set", "is_warm"]
