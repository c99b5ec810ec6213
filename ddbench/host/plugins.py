"""Loading plugins and collecting what they register, one plugin at a time, so one bad plugin breaks nothing.

Plugins come from the `ddbench` entry-point group (the host's own built-ins too, listed in pyproject.toml
exactly as a third party lists its own) and from import paths named in plugins.toml (`[plugins] modules`).
Commands come from the `ddbench.commands` group, loaded the same way but alone (`load_commands`), so that
parsing a command line imports no heavy plugin (and no torch).

Each plugin is isolated at every stage: importing it, pluggy's validation of its `@hookimpl`s (a
misspelled hook name), each of its hooks (one that raises), and every object it registers (checked
against the contract of its kind, see `CONTRACTS`; a name another plugin already registered). A plugin
that fails any of these is refused whole, reported with a one-line reason and the fix (`ddbench plugins`,
and a warning on every command), and the others load as usual.

`DDBENCH_LOAD_PLUGINS` (comma-separated entry-point names) and `[plugins] enabled` are allow-lists,
`[plugins] disabled` a deny-list; empty means "no restriction" for both allow-lists. The host's own
`ddbench.*` plugins always load. Names that match no plugin are warned about.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from .. import hookspecs
from ..api import (Command, DatasetSpec, Launcher, Method, ModelSpec, Objective, Param, Policy, Protocol, Sampler,
                  Selector)
from ..core.errors import DDBenchError
from ..core.records import SettingRoles, roles_of
from ..core.roles import SINGLE_ROLES
from .guard import ended, no_hard_exit

ENTRY_POINT_GROUP = "ddbench"
COMMAND_GROUP = "ddbench.commands"  # modules implementing `register_commands` (light: parsed before any work)
ALLOW_ENV = "DDBENCH_LOAD_PLUGINS"
HOST_DISTRIBUTION = "ddbench"  # pyproject.toml [project] name: the host and its bundled plugins


@dataclass(frozen=True)
class Contract:
    """What a registered object of one kind must provide (the typed base in ddbench.api documents it)."""

    kind: str  # "methods"
    hook: str  # "register_methods"
    base: type  # the class in ddbench.api a plugin subclasses (or whose members it provides)
    members: tuple[str, ...]  # callables the host calls
    has_params: bool = False  # a `params` dict of ddbench.api.Param

    @property
    def singular(self) -> str:
        return {"policies": "policy"}.get(self.kind, self.kind[:-1])


CONTRACTS: dict[str, Contract] = {c.kind: c for c in (
    Contract("methods", "register_methods", Method, ("validate", "distill"), has_params=True),
    Contract("datasets", "register_datasets", DatasetSpec, ("load",)),
    Contract("protocols", "register_protocols", Protocol, ("evaluate",), has_params=True),
    Contract("models", "register_models", ModelSpec, ("build",)),
    Contract("samplers", "register_samplers", Sampler, ("measure", "generate")),
    Contract("policies", "register_policies", Policy, ("decide",)),
    Contract("launchers", "register_launchers", Launcher, ("check", "run"), has_params=True),
    Contract("selectors", "register_selectors", Selector, ("select",)),
    Contract("objectives", "register_objectives", Objective, ("bind",), has_params=True),
    Contract("commands", "register_commands", Command, ("add_arguments", "run")),
)}
# kind -> hook name. One kind of extension per hook.
KINDS = {kind: c.hook for kind, c in CONTRACTS.items()}


def contract_problem(kind: str, obj: Any) -> str | None:
    """Why `obj` cannot be registered as a `kind`, or None if it honours the contract."""
    c = CONTRACTS[kind]
    what = f"a {c.singular} must be a ddbench.api.{c.base.__name__}"
    if isinstance(obj, type):
        return f"registered the class {obj.__name__} instead of an instance ({obj.__name__}())"
    name = getattr(obj, "name", None)
    if not name or not isinstance(name, str):
        return f"registered a {c.singular} without a string `name`: {type(obj).__name__}"
    missing = [m for m in c.members if not callable(getattr(obj, m, None))]
    if missing:
        return (f"{c.singular} {name!r} ({type(obj).__name__}) lacks {', '.join(f'{m}()' for m in missing)}; "
                f"{what} (see docs/plugins.md)")
    if c.has_params:
        params = getattr(obj, "params", {})
        if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, Param)
                                                   for k, v in params.items()):
            return f"{c.singular} {name!r}: `params` must be a dict of str -> ddbench.api.Param"
        roles = list(roles_of(params).values())
        twice = sorted({r for r in roles if r in SINGLE_ROLES and roles.count(r) > 1})
        if twice:
            return (f"{c.singular} {name!r} gives the role {twice[0]!r} to more than one setting; at most one "
                    "setting plays each role but 'speed' (docs/plugins.md#setting-roles)")
    return None


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str = ""
    source: str = ""  # distribution name, or "plugins.toml" / "registered in code"
    error: str | None = None  # why the plugin was refused (one line); `ddbench plugins` shows it
    traceback: str | None = None

    @property
    def fix(self) -> str:
        """What the user can do about a refused plugin."""
        if self.source == "plugins.toml":
            return f"fix it, or remove {self.name!r} from [plugins] modules in plugins.toml"
        if self.source == "registered in code":
            return "fix it"
        return f"fix it, or stop loading it: disabled = [{self.name!r}] under [plugins] in plugins.toml"


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind, with the plugin that registered each name."""

    items: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owners: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # plugin name -> which list kept it out
    warnings: list[str] = field(default_factory=list)

    def check(self, kind: str, obj: Any, plugin: str) -> str:
        """The object's name if it can be added; DDBenchError (one line) naming the plugin otherwise."""
        problem = contract_problem(kind, obj)
        if problem:
            raise DDBenchError(f"plugin {plugin!r} {problem}")
        name = obj.name
        if name in self.items[kind]:
            other = self.owners[kind][name]
            raise DDBenchError(f"{CONTRACTS[kind].singular} {name!r} is registered twice: by plugin {other!r} and by "
                               f"plugin {plugin!r}")
        return name

    def add(self, kind: str, obj: Any, plugin: str) -> None:
        name = self.check(kind, obj, plugin)
        self.items[kind][name] = obj
        self.owners[kind][name] = plugin

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.items[kind][name]
        except KeyError:
            valid = ", ".join(sorted(self.items[kind])) or "(none loaded)"
            raise DDBenchError(f"unknown {CONTRACTS[kind].singular} {name!r}; valid: "
                               f"{valid}{self._not_loaded()}") from None

    def _not_loaded(self) -> str:
        if not self.excluded and not self.failed:
            return ""
        parts = [f"{n} ({why})" for n, why in sorted(self.excluded.items())]
        parts += [f"{p.name} (refused: see `ddbench plugins`)" for p in self.failed]
        return "; plugins not loaded: " + ", ".join(parts)

    def names(self, kind: str) -> list[str]:
        return sorted(self.items[kind])

    # Typed per-kind views (name -> object), so callers read attributes the contracts guarantee, not raw items.
    @property
    def methods(self) -> dict[str, Method]:
        return self.items["methods"]

    @property
    def protocols(self) -> dict[str, Protocol]:
        return self.items["protocols"]

    @property
    def datasets(self) -> dict[str, DatasetSpec]:
        return self.items["datasets"]

    @property
    def models(self) -> dict[str, ModelSpec]:
        return self.items["models"]

    def takes_budget(self, method: str) -> bool:
        """Whether a loaded method takes a generation budget (`Method.supports_budget`; a duck-typed method
        that does not say: no). The one place this is read."""
        return bool(getattr(self.methods[method], "supports_budget", False))

    def budget_methods(self) -> list[str]:
        """The methods that take a generation budget, sorted."""
        return sorted(n for n in self.methods if self.takes_budget(n))

    def setting_roles(self) -> SettingRoles:
        """The roles the loaded protocols declare for their settings (records.SettingRoles)."""
        return SettingRoles({name: roles_of(getattr(p, "params", {})) for name, p in self.protocols.items()})

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def problems(self) -> list[str]:
        """One line per refused plugin and per warning, for every command to print on stderr."""
        out = [f"warning: plugin {p.name!r} ({p.module}) was not loaded: {p.error}; {p.fix}" for p in self.failed]
        return out + [f"warning: {w}" for w in self.warnings]


def _names(raw: Iterable[str] | None) -> set[str] | None:
    """An allow-list, or None for "no restriction" (unset, or empty: the same for the env and the file)."""
    names = {x.strip() for x in (raw or ()) if x and x.strip()}
    return names or None


def _is_host(module: str) -> bool:
    return module == "ddbench" or module.startswith("ddbench.")


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


@dataclass
class _Candidate:
    info: PluginInfo
    load: Any  # () -> module or object
    aliases: tuple[str, ...] = ()  # names an allow/deny list may use for it (entry-point name, dist name)


def _entry_point_candidates(registry: Registry, group: str) -> list[_Candidate]:
    """One candidate per distinct entry point; a name two distributions use is loaded under both, qualified."""
    out: list[_Candidate] = []
    seen: dict[str, str] = {}  # plugin name -> entry-point value
    for dist in md.distributions():
        dist_name = dist.metadata["Name"] or ""
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            name = ep.name
            if name in seen:
                if seen[name] == ep.value:
                    continue  # the same plugin seen twice (e.g. an editable install's two metadata folders)
                qualified = f"{ep.name}[{dist_name}]"
                registry.warnings.append(f"entry point {ep.name!r} is defined by two distributions ({seen[name]} and "
                                         f"{ep.value}); both load, the second as plugin {qualified!r}")
                name = qualified
            seen[name] = ep.value
            out.append(_Candidate(PluginInfo(name, ep.value, dist.version, dist_name), ep.load, (ep.name, dist_name)))
    # The host's plugins first, then the rest of its distribution (the bundled methods), then third parties:
    # on a duplicate name the earlier plugin keeps it, so a third party cannot displace a built-in.
    return sorted(out, key=lambda c: 0 if _is_host(c.info.module) else 1 if c.info.source == HOST_DISTRIBUTION else 2)


def _select(candidates: list[_Candidate], registry: Registry, enabled, disabled, warn_unknown: bool = True,
            elsewhere=lambda: ()) -> list[_Candidate]:
    """The candidates the lists allow; `elsewhere()` names the command group's plugins, which the lists may name
    too (not "no plugin"; read only when a list names something this group lacks)."""
    allow_env = _names(os.environ.get(ALLOW_ENV, "").split(","))
    allow_cfg = _names(enabled)
    deny = _names(disabled) or set()
    known = {c.info.name for c in candidates}
    dists = {}
    for c in candidates:
        dists.setdefault(c.aliases[1] if len(c.aliases) > 1 else "", []).append(c.info.name)
    for label, names in ((ALLOW_ENV, allow_env), ("[plugins] enabled", allow_cfg), ("[plugins] disabled", deny)):
        unknown = (names or set()) - known if warn_unknown else set()
        if unknown:
            unknown -= set(elsewhere())
        for name in sorted(unknown):
            hint = (f"; {name!r} is a distribution, its plugins are: {', '.join(dists[name])}" if name in dists
                    else f"; plugins: {', '.join(sorted(known))}")
            registry.warnings.append(f"{label} names {name!r}, which is no plugin{hint}")
    chosen = []
    for c in candidates:
        name = c.info.name
        if _is_host(c.info.module):
            chosen.append(c)
        elif name in deny:
            registry.excluded[name] = "[plugins] disabled"
        elif allow_env is not None and name not in allow_env:
            registry.excluded[name] = f"not in {ALLOW_ENV}"
        elif allow_cfg is not None and name not in allow_cfg:
            registry.excluded[name] = "not in [plugins] enabled"
        else:
            chosen.append(c)
    return chosen


def load_plugins(
    enabled: Iterable[str] | None = None,
    disabled: Iterable[str] = (),
    modules: Iterable[str] = (),
    extra: Iterable[tuple[str, object]] = (),
    module_dirs: Iterable[str] = (),
    group: str = ENTRY_POINT_GROUP,
) -> Registry:
    """Import every wanted plugin, then collect its registrations; never raises for a broken plugin.

    `extra` are (name, module-or-object) pairs registered directly (tests, embedding applications);
    `module_dirs` are folders put on sys.path for `modules` (the folders of the plugins.toml files naming them);
    `group` the entry-point group to read (`COMMAND_GROUP` for the commands: see `load_commands`).
    """
    for folder in reversed(list(module_dirs)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    registry = Registry()
    candidates = _entry_point_candidates(registry, group)
    candidates += [_Candidate(PluginInfo(path, path, "", "plugins.toml"), lambda p=path: importlib.import_module(p),
                              (path,)) for path in modules]
    # the lists name plugins of both groups: a name is unknown only to the main group's load
    chosen = _select(candidates, registry, enabled, disabled, warn_unknown=group == ENTRY_POINT_GROUP,
                     elsewhere=lambda: [n for c in _entry_point_candidates(Registry(), COMMAND_GROUP)
                                        for n in (c.info.name, *c.aliases[:1])])
    chosen += [_Candidate(PluginInfo(name, getattr(obj, "__name__", repr(obj)), "", "registered in code"),
                          lambda o=obj: o) for name, obj in extra]
    pm = make_manager()
    with no_hard_exit():  # a plugin's os._exit() at import or in a hook raises instead of ending every command
        for c in chosen:
            if pm.has_plugin(c.info.name):
                continue  # a module named both as an entry point and in plugins.toml loads once
            registry.plugins.append(c.info)
            try:
                pm.register(c.load(), name=c.info.name)
            except BaseException as exc:  # noqa: BLE001 - import, sys.exit or @hookimpl validation: reported, not fatal
                _refuse(c.info, _own(exc, "at import"))
        _drop_unknown_hooks(pm, registry)
        for info in registry.plugins:
            if not info.error:
                _collect(pm, registry, info)
    if group == ENTRY_POINT_GROUP:
        for name, plugin in sorted(registry.owners["commands"].items()):
            registry.warnings.append(f"plugin {plugin!r} registers the command {name!r} but is not in the "
                                     f"{COMMAND_GROUP!r} entry-point group, where commands are read; "
                                     "list its module there")
    return registry


def registry_or_default(registry: Registry | None) -> Registry:
    """The registry a command loaded (plugins.toml applied); a library caller that passes none gets the plugins
    installed, as `load_plugins()` finds them."""
    return load_plugins() if registry is None else registry


def load_commands(enabled: Iterable[str] | None = None, disabled: Iterable[str] = ()) -> Registry:
    """The plugins of the `ddbench.commands` group and the commands they register (the same isolation and
    allow/deny lists as every plugin); light enough to run before a command line is parsed."""
    return load_plugins(enabled=enabled, disabled=disabled, group=COMMAND_GROUP)


def _own(exc: BaseException, where: str) -> BaseException:
    """A plugin's attempt to end the process (sys.exit, os._exit) as the DDBenchError that refuses it; a
    KeyboardInterrupt goes on up (Ctrl-C while loading); any other exception is returned as is."""
    if isinstance(exc, SystemExit):
        return DDBenchError(f"{ended(exc)} {where}; a plugin must raise an exception, not end the process")
    if isinstance(exc, KeyboardInterrupt):
        raise exc  # before the command's signal handlers exist, a Ctrl-C cannot be told from a plugin's own
    return exc


def _refuse(info: PluginInfo, exc: BaseException | str) -> None:
    """Mark a plugin refused, with a one-line reason (the traceback is kept for `ddbench plugins -v`)."""
    if isinstance(exc, BaseException):
        text = " ".join(str(exc).split()) or type(exc).__name__
        text = text.removeprefix(f"plugin {info.name!r} ")
        info.error = text if isinstance(exc, DDBenchError) else f"{type(exc).__name__}: {text}"
        info.traceback = "".join(traceback.format_exception(exc))
    else:
        info.error = exc


def _drop_unknown_hooks(pm: pluggy.PluginManager, registry: Registry) -> None:
    """pluggy refuses a `@hookimpl` whose name is no hook (a typo); refuse that plugin, keep the others."""
    by_name = {info.name: info for info in registry.plugins}
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            pm.unregister(exc.plugin)
            hooks = ", ".join(sorted(KINDS.values()))
            _refuse(by_name[name], f"implements a hook that does not exist ({' '.join(str(exc).split())}); the hooks "
                                   f"are: {hooks}")


def _collect(pm: pluggy.PluginManager, registry: Registry, info: PluginInfo) -> None:
    """Call each of one plugin's hooks; add what it registered only if every object and every hook is fine."""
    staged: list[tuple[str, Any]] = []
    names: dict[str, set[str]] = {k: set() for k in KINDS}
    try:
        for kind, hook_name in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != info.name:
                    continue

                def register(obj: Any, _kind: str = kind) -> None:
                    name = registry.check(_kind, obj, info.name)
                    if name in names[_kind]:
                        raise DDBenchError(f"plugin {info.name!r} registers {CONTRACTS[_kind].singular} {name!r} twice")
                    names[_kind].add(name)
                    staged.append((_kind, obj))

                try:
                    impl.function(register=register)
                except DDBenchError:
                    raise
                except BaseException as exc:  # noqa: BLE001 - sys.exit/os._exit in a hook refuse the plugin too
                    own = _own(exc, f"in {hook_name}")
                    if isinstance(own, DDBenchError):
                        raise own from None
                    raise DDBenchError(f"{hook_name} raised {type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())}") from exc
    except DDBenchError as exc:
        _refuse(info, exc)
        pm.unregister(name=info.name)
        return
    for kind, obj in staged:
        registry.add(kind, obj, info.name)


__all__ = ["CONTRACTS", "KINDS", "Contract", "PluginInfo", "Registry", "contract_problem", "load_plugins",
           "load_commands", "make_manager", "ENTRY_POINT_GROUP", "COMMAND_GROUP", "ALLOW_ENV"]
