"""One benchmark run: resolve settings, distill, save the set, evaluate, record.

Everything that can be checked is checked before any work starts (`resolve`, then `method.validate`),
so bad input costs nothing and writes nothing. The sweep driver (`ddbench compare`) uses the same two
steps: `resolve` gives the config hash that identifies a cell, `execute` runs it. `resolve` and `RunRequest`
are resolve.py's (torch-free), importable from here as documented.
"""
from __future__ import annotations

import json
import platform
import random
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..api import DDBenchError, ImageDataset, RunContext, RunFailed, SyntheticSet
from ..core.atomic import atomic_write_json, writable_dir
from ..core.records import FAILED, OK, ROLES_META, RunRecord, roles_of
from ..core.roles import NETWORKS
from ..core.safeload import UnsafeFile
from ..host.guard import PluginExit, plugin_call
from ..host.output_checks import DatasetOutputError, check_dataset, check_evaluation, check_output
from ..host.plugins import CONTRACTS, Registry
from ..store.identity import config_hash, dataset_fingerprint
from ..store.provenance import HOST_META, host_info
from ..store.results import CellLock, open_store, record_or_keep
from ..store.synsets import load_synset, save_grid, save_synset
from .resolve import Resolved, RunRequest, registry_for, resolve  # RunRequest, registry_for: documented here


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DDBenchError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise DDBenchError(f"--device {name!r} is not one of: cpu, cuda, auto")
    return torch.device(name)


# Kinds a method names in its settings (`selector`, `sampler`, `policy`): their plugins take part in the run too.
NAMED_KINDS = ("selectors", "samplers", "policies")


def plugin_versions(registry: Registry, request: RunRequest, settings: dict[str, Any] | None = None) -> dict[str, str]:
    """`plugin:NAME` -> version (or source) of every plugin the run uses: method, dataset, protocol, model, and
    every selector, sampler or policy a setting of the method names (`settings`: its resolved settings)."""
    named = [(kind, value) for value in (settings or {}).values() if isinstance(value, str)
             for kind in NAMED_KINDS if value in registry.items[kind]]
    used = {registry.owners[kind].get(name) for kind, name in (
        ("methods", request.method), ("datasets", request.dataset), ("protocols", request.protocol),
        ("models", request.model), ("models", request.eval_architecture or request.model), *named)}
    return {f"plugin:{info.name}": info.version or info.source for info in registry.plugins if info.name in used}


def versions(registry: Registry, request: RunRequest, settings: dict[str, Any] | None = None) -> dict[str, str]:
    """Library versions, and the version (or source) of every plugin the run used."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__, "ddbench": __version__}
    for pkg in ("torchvision", "diffusers", "kornia", "pluggy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {**out, **plugin_versions(registry, request, settings)}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def load_dataset(registry: Registry, name: str, root: str | None, download: bool) -> ImageDataset:
    """The loaded dataset, checked (output_checks.check_dataset): a broken loader is its plugin's fault."""
    spec = registry.get("datasets", name)
    return check_dataset(spec.load(root=Path(root) if root else None, download=download), spec)


class NotStored(RunFailed):
    """A finished run the database refused; its record was kept in OUT/pending for the next run (exit 1)."""


class PluginFailed(RunFailed):
    """A plugin crashed before the run started (its dataset loader, its method's validate): exit 1, one line
    naming the plugin; nothing is recorded because nothing ran."""


def _guarded(registry: Registry, kind: str, name: str, what: str, call):
    """Run a plugin's code; a DDBenchError is the user's (exit 2), any other exception the plugin's."""
    label = plugin_label(registry, kind, name)
    try:
        return plugin_call(label, what, call)
    except DDBenchError:
        raise
    except DatasetOutputError as exc:
        raise PluginFailed(f"{label} is broken: {exc}") from None
    except PluginExit as exc:
        raise PluginFailed(str(exc)) from None
    except Exception as exc:  # noqa: BLE001
        text = " ".join(str(exc).split())
        raise PluginFailed(f"{label} crashed in {what}: {type(exc).__name__}: {text}") from exc


def plugin_label(registry: Registry, kind: str, name: str) -> str:
    """`method 'NAME' (plugin 'OWNER')`: how every message blaming a plugin names it."""
    return f"{CONTRACTS[kind].singular} {name!r} (plugin {registry.owners[kind].get(name, '?')!r})"


def context(resolved: Resolved, registry: Registry, log=print, dataset: ImageDataset | None = None) -> RunContext:
    """The run's context once the device exists, the data loads and the method's `validate` accepts it."""
    r = resolved.request
    device = pick_device(r.device)
    if dataset is None:
        dataset = _guarded(registry, "datasets", r.dataset, "load()",
                           lambda: load_dataset(registry, r.dataset, r.data_root, r.download))
    ctx = RunContext(dataset=dataset, ipc=r.ipc, seed=r.seed, device=device, params=resolved.method_params,
                     model=r.model, registry=registry, work_dir=resolved.work_dir, cache_dir=resolved.cache_dir,
                     budget=r.budget, progress=r.progress, log=log, protocol=r.protocol,
                     results_db=resolved.db_path)
    _guarded(registry, "methods", r.method, "validate()", lambda: resolved.method.validate(ctx))
    if not r.skip_eval:
        eval_ctx = replace(ctx, model=r.eval_architecture) if r.eval_architecture else ctx
        _guarded(registry, "protocols", r.protocol, "validate()",
                 lambda: resolved.protocol.validate(eval_ctx, resolved.protocol_settings))
    return ctx


def check_cell(resolved: Resolved, registry: Registry, datasets: dict[tuple, ImageDataset]) -> None:
    """The checks `context` makes, for a sweep's cell, loading each dataset once (`datasets` caches them)."""
    r = resolved.request
    key = (r.dataset, r.data_root, r.download)
    if key not in datasets:
        datasets[key] = _guarded(registry, "datasets", r.dataset, "load()",
                                 lambda: load_dataset(registry, r.dataset, r.data_root, r.download))
    context(resolved, registry, log=lambda msg: None, dataset=datasets[key])


def prepare(resolved: Resolved, registry: Registry, log=print, open_db: bool = True) -> RunContext:
    """Everything before the work: device, data, the method's own checks, the store, the folders.

    Each step can refuse the run with a one-line DDBenchError; nothing is written before the store is
    known to take a row, and no folder exists before the method accepted its settings.
    """
    ctx = context(resolved, registry, log)
    created = [p for folder in (resolved.out_dir, resolved.db_path.parent) for p in _missing(folder)]
    try:
        writable_dir(resolved.out_dir, "--out")
        if open_db:
            open_store(resolved.db_path, resolved.pending_dir, log)
        for folder in (resolved.work_dir, resolved.cache_dir):
            writable_dir(folder, "--out")
    except DDBenchError:
        for folder in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only if still empty: an exit-2 error leaves no folder behind
            except OSError:
                pass
        raise
    return ctx


def _missing(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet (what creating it would make)."""
    out = []
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def execute(resolved: Resolved, registry: Registry, log=print, record_to_db: bool = True) -> RunRecord:
    """Run one resolved request and record it. Bad input raises DDBenchError before anything is written.

    `record_to_db=False` returns the record without writing it: sweep workers hand records to the driver,
    which alone writes the database. A record the database refuses at the end is kept (NotStored).
    """
    ctx = prepare(resolved, registry, log, open_db=record_to_db)
    lock = CellLock(resolved.work_dir)
    if record_to_db and not lock.acquire(wait=False):  # a sweep's worker runs under its driver's lock instead
        log(f"another process (pid {lock.holder()}) is running this config in {resolved.out_dir}; waiting for it")
        lock.acquire()
    try:
        return _execute(resolved, registry, ctx, log, record_to_db)
    finally:
        lock.release()


def _execute(resolved: Resolved, registry: Registry, ctx: RunContext, log, record_to_db: bool) -> RunRecord:
    for note in resolved.notes:
        log(note)
    rec = RunRecord.start(resolved.config(), resolved.config_hash)
    if resolved.request.eval_architecture:
        rec.model = resolved.request.eval_architecture  # the architecture the accuracy is of; the config keeps both
    rec.device = str(ctx.device)
    rec.versions = versions(registry, resolved.request, resolved.method_params)
    host = host_info(torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else None)
    t0 = time.perf_counter()
    try:
        syn = _distill_and_save(resolved, ctx, rec)
        _evaluate(resolved, ctx, syn, rec)
        rec.status = OK
    except KeyboardInterrupt:
        raise  # no row: an interrupted run leaves nothing half-written; its checkpoints stay in work_dir
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not lost
        rec.status = FAILED
        # A broken contract is said in one line; anything else keeps its traceback.
        rec.error = (f"{type(exc).__name__}: {exc}" if isinstance(exc, RunFailed)
                     else "".join(traceback.format_exception(exc)))
        if rec.distill_seconds is None:
            rec.distill_seconds = time.perf_counter() - t0
    rec.meta.setdefault(HOST_META, host)  # CPU/GPU model and git commit: the report's provenance per row
    if roles_of(resolved.protocol.params):  # read back when this protocol's plugin is not loaded (records.SettingRoles)
        rec.meta[ROLES_META] = roles_of(resolved.protocol.params)
    if record_to_db and not record_or_keep(resolved.db_path, rec, resolved.pending_dir, log):
        raise NotStored(f"run {rec.run_id} finished ({rec.status}) but is not in {resolved.db_path} yet")
    if rec.ok:
        (resolved.work_dir / DISTILLED).unlink(missing_ok=True)
        _remember_set(resolved, rec)
    return rec


def _distill_and_save(resolved: Resolved, ctx: RunContext, rec: RunRecord) -> SyntheticSet:
    """Distill (or resume), then save the set and its image grid under OUT/runs/RUN_ID."""
    syn, rec.distill_seconds = _distill_or_resume(resolved, ctx)
    ds = ctx.dataset
    rec.images = int(syn.images.shape[0])
    rec.meta = {**syn.meta, "per_class": syn.per_class(ds.num_classes), "lr": syn.lr,
                "dataset_fingerprint": dataset_fingerprint(ds)}
    if syn.ipc is not None:
        rec.meta["ipc_declared"] = syn.ipc
    if resolved.request.budget is not None:
        rec.ipc = syn.ipc  # what it produced (checked against the set): references pair at equal count
    if syn.generation_seconds is not None:
        rec.meta["generation_seconds"] = syn.generation_seconds
    run_dir = resolved.out_dir / "runs" / rec.run_id
    save_synset(syn, run_dir / "synset.pt", config=rec.config,
                dataset={"name": ds.name, "mean": ds.mean, "std": ds.std, "class_names": ds.class_names})
    save_grid(ds.denormalise(syn.images.detach().cpu().float()), syn.labels.cpu(), ds.num_classes,
              run_dir / "grid.png")
    rec.artifact = str((run_dir / "synset.pt").absolute())  # `show` and `report` work from any folder
    return syn


def _evaluate(resolved: Resolved, ctx: RunContext, syn: SyntheticSet, rec: RunRecord) -> None:
    if resolved.request.skip_eval:
        rec.eval_seconds, rec.accuracies, rec.n_eval_models = 0.0, [], 0
        return
    seed_everything(resolved.request.seed)
    if resolved.request.eval_architecture:
        ctx = replace(ctx, model=resolved.request.eval_architecture)
    r = resolved.request
    result = plugin_call(plugin_label(ctx.registry, "protocols", r.protocol), "evaluate()",
                         lambda: resolved.protocol.evaluate(syn, ctx, resolved.protocol_settings),
                         refuse_is_failure=True)
    networks = next((k for k, role in roles_of(resolved.protocol.params).items() if role == NETWORKS), None)
    check_evaluation(result, protocol=r.protocol,
                     networks=None if networks is None else (networks, resolved.protocol_settings.get(networks)))
    rec.eval_seconds = result.seconds
    rec.accuracies = [float(a) for a in result.accuracies]
    rec.accuracy_mean, rec.accuracy_std = result.mean, result.std
    rec.n_eval_models = len(result.accuracies)
    rec.meta["eval"] = result.details


DISTILLED = "distilled.pt"


def _distill_or_resume(resolved: Resolved, ctx: RunContext) -> tuple[SyntheticSet, float]:
    """Distill, keeping the set in the work folder until the run is recorded.

    A run interrupted during evaluation (the longest part on a CPU) then resumes at evaluation instead of
    distilling again; the stored distill time is the original one.
    """
    path = resolved.work_dir / DISTILLED
    if path.exists():
        try:
            syn, saved = load_synset(path)
            _check(syn, resolved, ctx)
            ctx.log(f"resuming: reusing the synthetic set distilled by an interrupted run of this config ({path})")
            return syn, float(saved["distill_seconds"])
        except UnsafeFile as exc:  # a leftover that would run code: deleted unread, the set is distilled again
            path.unlink(missing_ok=True)
            ctx.log(f"{exc}; deleted it, distilling again")
        except Exception as exc:  # noqa: BLE001 - an unreadable or invalid leftover is replaced, not trusted
            ctx.log(f"ignoring an unreadable or invalid {path} ({type(exc).__name__}); distilling again")
    shared = _set_of_other_architecture(resolved, ctx)
    if shared is not None:
        return shared
    seed_everything(resolved.request.seed)
    t0 = time.perf_counter()
    syn = plugin_call(plugin_label(ctx.registry, "methods", resolved.request.method), "distill()",
                      lambda: resolved.method.distill(ctx), refuse_is_failure=True)
    seconds = time.perf_counter() - t0
    _check(syn, resolved, ctx)
    save_synset(syn, path, distill_seconds=seconds)
    return syn, seconds


def distill_key(config: dict[str, Any]) -> str:
    """The hash of what determines the set: the run's config without the evaluation architecture."""
    return config_hash({k: v for k, v in config.items() if k != "eval_model"})


SETS = "sets"  # OUT/cache/sets/<distill key>.json: the recorded set a distill key last produced


def _set_entry(resolved: Resolved) -> Path:
    return resolved.cache_dir / SETS / f"{distill_key(resolved.config())}.json"


def _remember_set(resolved: Resolved, rec: RunRecord) -> None:
    """A run that ended ok points its distill key at its saved set (the cache `_set_of_other_architecture` reads)."""
    if rec.artifact:
        atomic_write_json({"run_id": rec.run_id, "artifact": rec.artifact, "distill_seconds": rec.distill_seconds,
                           "config_hash": rec.config_hash, "model": rec.model}, _set_entry(resolved))


def _set_of_other_architecture(resolved: Resolved, ctx: RunContext) -> tuple[SyntheticSet, float] | None:
    """The set a run that ended ok distilled with this very config but evaluated on another architecture.

    `compare --models a,b,...` makes one cell per evaluation architecture; the set does not depend on it, so
    DM or MTT distil once, not once per architecture. Sequential cells share; parallel ones distil each. The
    sets are found through a cache keyed by their distill key (OUT/cache/sets), not the results database: a
    run recorded before that cache existed is not reused (its set is distilled once more, with the same result).
    """
    pointer = _set_entry(resolved)
    try:
        entry = json.loads(pointer.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("config_hash") == resolved.config_hash \
            or not isinstance(entry.get("artifact"), str) or not Path(entry["artifact"]).is_file():
        return None
    artifact = Path(entry["artifact"]).resolve()  # symlinks followed: the file itself must lie in OUT
    if not artifact.is_relative_to(resolved.out_dir.resolve()):
        pointer.unlink(missing_ok=True)
        ctx.log(f"{pointer} points at {entry['artifact']}, outside the results folder {resolved.out_dir}; "
                "deleted it, distilling")
        return None
    try:
        syn, _ = load_synset(artifact)
        _check(syn, resolved, ctx)
    except UnsafeFile as exc:  # never read: the pointer is deleted, the set distilled again
        pointer.unlink(missing_ok=True)
        ctx.log(f"{exc}; deleted the cache entry {pointer}, distilling")
        return None
    except Exception as exc:  # noqa: BLE001 - a set that no longer loads or fits is distilled again
        ctx.log(f"not reusing the set of run {entry.get('run_id')} ({type(exc).__name__}); distilling")
        return None
    ctx.log(f"reusing the set of run {entry.get('run_id')} (same config, evaluated on {entry.get('model')}); "
            "no distillation")
    return syn, float(entry.get("distill_seconds") or 0.0)


def _check(syn: Any, resolved: Resolved, ctx: RunContext) -> None:
    """The host enforces the output contract (ddbench/host/output_checks.py) before saving or evaluating."""
    r = resolved.request
    check_output(syn, method=r.method, dataset=ctx.dataset, ipc=r.ipc, budget=r.budget)


__all__ = ["RunRequest", "Resolved", "NotStored", "PluginFailed", "resolve", "prepare", "execute", "registry_for"]
