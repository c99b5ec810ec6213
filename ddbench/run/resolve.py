"""What a run is, before any work: a `RunRequest` (CLI flags, or one cell of a sweep) checked and resolved into
a `Resolved` (the plugins, every setting, the config hash that identifies the cell). Nothing is loaded or
written here and torch is not imported, so bad input costs nothing; runner.py runs what this resolves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..api import (DEFAULT_DATASET, DEFAULT_MODEL, DEFAULT_PROTOCOL, MAX_BUDGET, DDBenchError, check_budget,
                  resolve_params)
from ..core.records import roles_of
from ..core.roles import EVAL_FLAGS
from ..host.plugins import ALLOW_ENV, Registry, load_plugins
from ..store.config import Config, Layer, preset_note
from ..store.identity import config_hash
from ..store.results import DEFAULT_OUT, PENDING, db_path


PRESETS = ("default", "paper")

MAX_SEED = 2**63 - 1  # an SQLite INTEGER


@dataclass
class RunRequest:
    """What a user asks for (CLI flags, or one cell of a sweep)."""

    method: str
    dataset: str = DEFAULT_DATASET
    ipc: int = 10
    protocol: str = DEFAULT_PROTOCOL
    model: str = DEFAULT_MODEL
    # the architecture evaluated when it differs from `model` (compare --models); config["eval_model"] keeps the
    # name it was stored under, so the hashes of stored cells stay what they were
    eval_architecture: str | None = None
    seed: int = 0
    device: str = "auto"
    eval_networks: int | None = None  # --eval-models: how many networks the protocol trains (its NETWORKS setting)
    eval_epochs: int | None = None
    eval_impl: str | None = None
    budget: float | None = None
    preset: str = "default"
    sets: dict[str, Any] = field(default_factory=dict)  # method settings
    eval_sets: dict[str, Any] = field(default_factory=dict)  # protocol settings
    data_root: str | None = None
    download: bool = False
    out: str = str(DEFAULT_OUT)
    db: str | None = None
    progress: bool = True
    skip_eval: bool = False


@dataclass
class Resolved:
    request: RunRequest
    method: Any
    protocol: Any
    method_params: dict[str, Any]
    protocol_settings: dict[str, Any]
    config_hash: str
    notes: list[str] = field(default_factory=list)  # lines the run logs first (e.g. paper defaults apply)

    @property
    def out_dir(self) -> Path:
        return Path(self.request.out)

    @property
    def db_path(self) -> Path:
        return db_path(self.request.out, self.request.db)

    @property
    def pending_dir(self) -> Path:
        return self.out_dir / PENDING

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "work" / self.config_hash

    @property
    def cache_dir(self) -> Path:
        return self.out_dir / "cache"

    def config(self) -> dict[str, Any]:
        r = self.request
        # absent when unset: old hashes unchanged
        extra = {"eval_model": r.eval_architecture} if r.eval_architecture else {}
        return {**extra,
            "method": r.method,
            "dataset": r.dataset,
            "ipc": r.ipc,
            "budget": r.budget,
            "protocol": r.protocol,
            "model": r.model,
            "seed": r.seed,
            "preset": r.preset,
            "method_params": self.method_params,
            "protocol_settings": self.protocol_settings,
            # Only when given, so the hashes of runs on the default data stay what they were.
            **({"data_root": str(Path(r.data_root).absolute())} if r.data_root else {}),
        }


@lru_cache(maxsize=4)
def _cached_registry(paths: tuple, enabled: tuple, disabled: tuple, modules: tuple, allow_env: str | None,
                     module_dirs: tuple = ()) -> Registry:
    return load_plugins(enabled=enabled, disabled=disabled, modules=modules, module_dirs=module_dirs)


def registry_for(config: Config) -> Registry:
    """The plugins this configuration loads (cached per configuration and DDBENCH_LOAD_PLUGINS value)."""
    return _cached_registry(config.paths, tuple(config.enabled), tuple(config.disabled), tuple(config.modules),
                            os.environ.get(ALLOW_ENV), tuple(config.module_dirs))


def _check_budget(request: RunRequest, method: Any, registry: Registry) -> None:
    if not registry.takes_budget(request.method):
        able = registry.budget_methods()
        raise DDBenchError(
            f"method {request.method!r} does not take a generation budget; methods that do: "
            f"{', '.join(able) or '(none)'}"
        )
    try:
        check_budget(float(request.budget))
    except (TypeError, ValueError):
        raise DDBenchError(f"--budget {request.budget!r} is not allowed; "
                           f"give seconds in (0, {MAX_BUDGET:g}] (a day)") from None


def _settings(owner: str, spec: dict, layers: list[Layer], cli: dict[str, Any]) -> dict[str, Any]:
    """Resolve one method's or protocol's settings; a bad value in a file names the file and table."""
    for layer in layers:
        try:
            resolve_params(f"{owner} (from {layer.label})", spec, layer.values)
        except DDBenchError as exc:  # a bad value names the file and table, as `list --params` does
            text = str(exc)
            raise DDBenchError(text if layer.label in text else f"{text} (from {layer.label})") from None
    return resolve_params(owner, spec, *(layer.values for layer in layers), cli)


def resolve(request: RunRequest, config: Config, registry: Registry) -> Resolved:
    """Check names and settings and compute the config hash; no data is loaded and nothing is written."""
    if not isinstance(request.ipc, int) or request.ipc < 1:
        raise DDBenchError(f"--ipc {request.ipc!r} must be an integer >= 1")
    if isinstance(request.seed, bool) or not isinstance(request.seed, int) or not 0 <= request.seed <= MAX_SEED:
        raise DDBenchError(f"--seed {request.seed!r} is out of range; allowed: integers 0..{MAX_SEED}")
    if not str(request.out).strip():
        raise DDBenchError("--out '' is empty; give a results folder (default: ddbench-results)")
    if request.preset not in PRESETS:
        raise DDBenchError(f"--preset {request.preset!r} is not one of: {', '.join(PRESETS)}")
    method = registry.get("methods", request.method)
    registry.get("datasets", request.dataset)
    protocol = registry.get("protocols", request.protocol)
    registry.get("models", request.model)
    if request.eval_architecture is not None:
        registry.get("models", request.eval_architecture)
    if request.budget is not None:
        _check_budget(request, method, registry)
    use_config = request.preset != "paper"
    method_layers = config.sources("methods", request.method, request.dataset) if use_config else []
    protocol_layers = config.sources("protocols", request.protocol, request.dataset) if use_config else []
    method_params = _settings(f"method {request.method}", method.params, method_layers, request.sets)
    cli_eval: dict[str, Any] = dict(request.eval_sets)
    roles = {role: key for key, role in roles_of(protocol.params).items()}
    for role, flag, value in eval_flags(request):
        if value is not None:
            key = roles.get(role)
            if key is None:
                raise DDBenchError(f"{flag}: protocol {request.protocol!r} has no setting of role {role!r} "
                                   "(docs/plugins.md#setting-roles)")
            if key in cli_eval:  # a flag and a --set for one setting: refused, never one dropped
                raise DDBenchError(f"{flag} {value!r} and --set eval.{key}={cli_eval[key]!r} both set {key}; give one")
            cli_eval[key] = value
    protocol_settings = _settings(f"protocol {request.protocol}", protocol.params, protocol_layers, cli_eval)
    notes = [n for n in (preset_note(config, "methods", request.method, request.dataset),) if n and use_config]
    resolved = Resolved(request, method, protocol, method_params, protocol_settings, "", notes)
    resolved.config_hash = config_hash(resolved.config())
    return resolved


def eval_flags(request: RunRequest) -> tuple[tuple[str, str, Any], ...]:
    """(role, flag, value) of the `--eval-*` flags: each sets the protocol's setting of that role."""
    return tuple((role, flag, getattr(request, field)) for role, flag, field, _ in EVAL_FLAGS)
