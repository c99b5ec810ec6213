"""plugins.toml: which plugins load, and default settings per method / protocol and per dataset.

    [plugins]
    enabled = []          # allow-list of plugin names; empty means every installed plugin
    disabled = ["some-plugin"]    # plugins not to load
    modules = ["my_local_plugin"]   # import paths of plugins that are not installed packages

    [methods.dm]                    # overrides of the method's paper defaults, for every dataset
    [methods.dm.fashion-mnist]      # overrides for one dataset (CPU presets live here)
    [protocols.dsa]                 # same for evaluation protocols

Settings resolve as: the plugin's cited defaults < [methods.M] < [methods.M.<dataset>] < --set key=value.
`--preset paper` skips the plugins.toml layers, leaving the paper/reference-code defaults.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import DDBenchError

DEFAULT_CONFIG_NAME = "plugins.toml"


@dataclass
class Config:
    path: Path | None = None
    enabled: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)

    def layers(self, section: str, name: str, dataset: str) -> list[dict[str, Any]]:
        """The override layers for one method/protocol on one dataset: general first, per-dataset last."""
        table = getattr(self, section).get(name, {})
        general = {k: v for k, v in table.items() if not isinstance(v, dict)}
        per_dataset = table.get(dataset, {})
        if not isinstance(per_dataset, dict):
            per_dataset = {}
        return [general, per_dataset]


def find_config(explicit: str | None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DDBenchError(f"config file {explicit!r} not found")
        return path
    here = Path.cwd() / DEFAULT_CONFIG_NAME
    if here.is_file():
        return here
    # The repository's own plugins.toml, next to the installed (editable) package.
    repo = Path(__file__).resolve().parent.parent / DEFAULT_CONFIG_NAME
    return repo if repo.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DDBenchError(f"{path}: malformed TOML: {exc}") from None
    allowed_top = {"plugins", "methods", "protocols"}
    for key in data:
        if key not in allowed_top:
            raise DDBenchError(f"{path}: unknown section [{key}]; allowed: {', '.join(sorted(allowed_top))}")
    plugins = data.get("plugins", {})
    for key in plugins:
        if key not in ("enabled", "disabled", "modules"):
            raise DDBenchError(f"{path}: unknown key plugins.{key}; allowed: enabled, disabled, modules")
    cfg = Config(path=path)
    for key in ("enabled", "disabled", "modules"):
        value = plugins.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DDBenchError(f"{path}: plugins.{key} must be a list of strings, got {value!r}")
        setattr(cfg, key, value)
    for section in ("methods", "protocols"):
        table = data.get(section, {})
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise DDBenchError(f"{path}: [{section}] must hold one table per name, e.g. [{section}.NAME]")
        setattr(cfg, section, table)
    return cfg


def parse_sets(items: list[str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """`--set key=value` pairs: plain keys are method settings, `eval.key` protocol settings."""
    method: dict[str, str] = {}
    protocol: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise DDBenchError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise DDBenchError(f"--set {item!r}: empty key")
        if key.startswith("eval."):
            protocol[key[5:]] = value
        else:
            method[key] = value
    return method, protocol
