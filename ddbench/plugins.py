"""Loading plugins and collecting what they register.

Plugins come from the `ddbench` entry-point group (the host's own built-ins too, listed in
pyproject.toml exactly as a third party lists its own) and from import paths named in plugins.toml.
`DDBENCH_LOAD_PLUGINS` (comma-separated plugin names) restricts loading to an allow-list, so a
published result can name exactly the plugins that were active; the host's own `ddbench.*` plugins
always load.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .api import DDBenchError

ENTRY_POINT_GROUP = "ddbench"
ALLOW_ENV = "DDBENCH_LOAD_PLUGINS"

# kind -> hook name. One kind of extension per hook.
KINDS = {
    "methods": "register_methods",
    "datasets": "register_datasets",
    "protocols": "register_protocols",
    "models": "register_models",
    "samplers": "register_samplers",
    "policies": "register_policies",
    "launchers": "register_launchers",
}


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str = ""
    source: str = ""  # distribution name, or "plugins.toml" / "registered in code"
    error: str | None = None  # import failure, kept so `ddbench plugins` can show it


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind, with the plugin that registered each name."""

    items: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owners: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)

    def add(self, kind: str, obj: Any, plugin: str) -> None:
        name = getattr(obj, "name", None)
        if not name or not isinstance(name, str):
            raise DDBenchError(f"plugin {plugin!r} registered a {kind[:-1]} without a string `name`: {obj!r}")
        if name in self.items[kind]:
            other = self.owners[kind][name]
            raise DDBenchError(
                f"{kind[:-1]} {name!r} is registered twice: by plugin {other!r} and by plugin {plugin!r}"
            )
        self.items[kind][name] = obj
        self.owners[kind][name] = plugin

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.items[kind][name]
        except KeyError:
            valid = ", ".join(sorted(self.items[kind])) or "(none loaded)"
            raise DDBenchError(f"unknown {kind[:-1]} {name!r}; valid: {valid}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.items[kind])

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


def _is_host(module: str) -> bool:
    return module == "ddbench" or module.startswith("ddbench.")


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    enabled: Iterable[str] | None = None,
    disabled: Iterable[str] = (),
    modules: Iterable[str] = (),
    extra: Iterable[tuple[str, object]] = (),
) -> Registry:
    """Import every plugin, then collect registrations.

    A plugin that fails to import is recorded with its error and skipped; the others keep working.
    `enabled` (plugins.toml) and the DDBENCH_LOAD_PLUGINS env var are allow-lists; `disabled` a deny-list.
    `extra` are (name, module-or-object) pairs registered directly (tests, embedding applications).
    """
    pm = make_manager()
    registry = Registry()
    allow_env = _allow_list()
    allow_cfg = set(enabled) if enabled else None
    deny = set(disabled)

    def wanted(name: str, module: str) -> bool:
        if _is_host(module):
            return True
        if name in deny:
            return False
        for allow in (allow_env, allow_cfg):
            if allow is not None and name not in allow:
                return False
        return True

    for dist in md.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            if not wanted(ep.name, ep.value) or pm.get_plugin(ep.name) is not None:
                continue
            info = PluginInfo(ep.name, ep.value, dist.version, dist.metadata["Name"] or "")
            registry.plugins.append(info)
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not fatal
                info.error = f"{type(exc).__name__}: {exc}"
                info.traceback = traceback.format_exc()  # type: ignore[attr-defined]

    for path in modules:
        name = path
        if not wanted(name, path) or pm.get_plugin(name) is not None:
            continue
        info = PluginInfo(name, path, "", "plugins.toml")
        registry.plugins.append(info)
        try:
            pm.register(importlib.import_module(path), name=name)
        except Exception as exc:  # noqa: BLE001
            info.error = f"{type(exc).__name__}: {exc}"

    for name, obj in extra:
        registry.plugins.append(PluginInfo(name, getattr(obj, "__name__", repr(obj)), "", "registered in code"))
        pm.register(obj, name=name)

    pm.check_pending()
    _collect(pm, registry)
    return registry


def _collect(pm: pluggy.PluginManager, registry: Registry) -> None:
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        # Call each implementation on its own so every registration is attributed to its plugin.
        for impl in reversed(hook.get_hookimpls()):
            plugin = impl.plugin_name

            def register(obj: Any, _kind: str = kind, _plugin: str = plugin) -> None:
                registry.add(_kind, obj, _plugin)

            impl.function(register=register)
