"""plugins.toml: which plugins load, and default settings per method / protocol and per dataset.

    [plugins]
    enabled = []                    # allow-list of plugin names; empty means every installed plugin
    disabled = ["some-plugin"]      # plugins not to load
    modules = ["my_local_plugin"]   # import paths of plugins that are not installed packages

    [methods.dm]                    # overrides of the method's paper defaults, for every dataset
    [methods.dm.fashion-mnist]      # overrides for one dataset (CPU presets live here)
    [protocols.dsa]                 # same for evaluation protocols

Files are layered, lowest first (a later file overrides an earlier one key by key; nothing replaces a
whole file):

1. the packaged presets: the repository's top-level plugins.toml in a checkout (editable installs), else the
   copy a wheel or `pip install .` carries as ddbench/plugins.toml (setup.py copies it at build time);
2. ./plugins.toml in the working folder;
3. `--config FILE` (or the environment variable DDBENCH_CONFIG).

Within the files a setting resolves as: the plugin's cited default < [methods.M] < [methods.M.<dataset>],
file by file, then `--set key=value`. `--preset paper` skips every file's method and protocol tables.
`[plugins]` lists are merged across files (enabled/disabled/modules: the union); a module listed in a file
is imported from that file's folder first (then from sys.path). Tables or keys that name
no loaded method, protocol, dataset or setting are warned about with the nearest valid name.
"""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..core.errors import DDBenchError

DEFAULT_CONFIG_NAME = "plugins.toml"
CONFIG_ENV = "DDBENCH_CONFIG"
CHECKOUT_PRESETS = Path(__file__).resolve().parents[2] / DEFAULT_CONFIG_NAME  # beside ddbench/
WHEEL_PRESETS = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG_NAME  # inside ddbench/ (setup.py)


def packaged_presets() -> Path | None:
    """The presets file: the checkout's (a plugins.toml beside pyproject.toml above the package), else the
    copy inside the installed package; None when neither exists (then the papers' defaults apply)."""
    if CHECKOUT_PRESETS.is_file() and (CHECKOUT_PRESETS.parent / "pyproject.toml").is_file():
        return CHECKOUT_PRESETS
    return WHEEL_PRESETS if WHEEL_PRESETS.is_file() else None


PACKAGED = packaged_presets()
SECTIONS = ("methods", "protocols")
PLUGIN_KEYS = ("enabled", "disabled", "modules")


@dataclass
class ConfigFile:
    """One parsed plugins.toml and which layer it is."""

    path: Path
    layer: str  # "packaged", "working folder", "--config"
    plugins: dict[str, list[str]] = field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Layer:
    """One set of overrides for one method/protocol on one dataset, and where it comes from."""

    label: str  # e.g. "plugins.toml (working folder) [methods.dm.fashion-mnist]"
    values: dict[str, Any]


@dataclass
class Config:
    files: list[ConfigFile] = field(default_factory=list)

    @property
    def path(self) -> Path | None:
        """The top file (what `--config` named, else the nearest one); None without any file."""
        return self.files[-1].path if self.files else None

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file, lowest first: a worker loads exactly these (`load_config(paths)`)."""
        return tuple(str(f.path.absolute()) for f in self.files)

    def _merged(self, key: str) -> list[str]:
        out: list[str] = []
        for f in self.files:
            out += [v for v in f.plugins.get(key, []) if v not in out]
        return out

    @property
    def enabled(self) -> list[str]:
        return self._merged("enabled")

    @property
    def disabled(self) -> list[str]:
        return self._merged("disabled")

    @property
    def modules(self) -> list[str]:
        return self._merged("modules")

    @property
    def module_dirs(self) -> list[str]:
        """The folders of the files that list `modules`: a local plugin next to its plugins.toml imports."""
        return list(dict.fromkeys(str(f.path.absolute().parent) for f in self.files if f.plugins.get("modules")))

    def sources(self, section: str, name: str, dataset: str) -> list[Layer]:
        """The override layers for one method/protocol on one dataset, lowest first, with their labels."""
        out = []
        for f in self.files:
            table = getattr(f, section).get(name, {})
            where = f"{f.path} ({f.layer})"
            general = {k: v for k, v in table.items() if not isinstance(v, dict)}
            per_dataset = table.get(dataset, {})
            out.append(Layer(f"{where} [{section}.{name}]", general))
            out.append(Layer(f"{where} [{section}.{name}.{dataset}]",
                             per_dataset if isinstance(per_dataset, dict) else {}))
        return out


def config_files(explicit: str | Iterable[str] | None = None) -> list[tuple[Path, str]]:
    """The files to layer, lowest first. A tuple of paths is taken as is (a sweep worker's exact layers)."""
    if explicit is not None and not isinstance(explicit, str):
        return [(Path(p), "as the driver") for p in explicit]
    explicit = explicit or os.environ.get(CONFIG_ENV) or None
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def add(path: Path, layer: str) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            out.append((path, layer))

    packaged = packaged_presets()
    if packaged is not None:
        add(packaged, "packaged presets")
    here = Path.cwd() / DEFAULT_CONFIG_NAME
    if here.is_file():
        add(here, "working folder")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DDBenchError(f"config file {explicit!r} not found")
        add(path, "--config")
    return out


def load_config(explicit: str | Iterable[str] | None = None) -> Config:
    return Config([read_file(path, layer) for path, layer in config_files(explicit)])


def read_file(path: Path, layer: str) -> ConfigFile:
    """Parse one plugins.toml; any problem is one line naming the file."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DDBenchError(f"{path}: not a text file (plugins.toml must be UTF-8 TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise DDBenchError(f"{path}: malformed TOML: {exc}") from None
    except OSError as exc:
        raise DDBenchError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    allowed_top = {"plugins", *SECTIONS}
    for key in data:
        if key not in allowed_top:
            raise DDBenchError(f"{path}: unknown section [{key}]; allowed: {', '.join(sorted(allowed_top))}")
    plugins = data.get("plugins", {})
    if not isinstance(plugins, dict):
        raise DDBenchError(f"{path}: [plugins] must be a table")
    for key in plugins:
        if key not in PLUGIN_KEYS:
            raise DDBenchError(f"{path}: unknown key plugins.{key}; allowed: {', '.join(PLUGIN_KEYS)}")
    out = ConfigFile(path=path, layer=layer)
    for key in PLUGIN_KEYS:
        value = plugins.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DDBenchError(f"{path}: plugins.{key} must be a list of strings, got {value!r}")
        out.plugins[key] = value
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise DDBenchError(f"{path}: [{section}] must hold one table per name, e.g. [{section}.NAME]")
        setattr(out, section, table)
    return out


def _nearest(name: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    lowered = {v.lower().replace("_", "-"): v for v in valid}
    key = name.lower().replace("_", "-")
    match = [lowered[key]] if key in lowered else difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(sorted(valid)) or '(none)'}"


def _close(name: str, valid: Iterable[str]) -> bool:
    return bool(_nearest(name, valid).startswith("; did you mean"))


def config_warnings(config: Config, registry: Any) -> list[str]:
    """Tables and keys that name no loaded method, protocol, dataset or setting (typos are otherwise silent).

    A table named after a plugin that was not loaded (allow/deny lists) or was refused is not reported; nor, while
    any plugin is left out, is a name close to no loaded one: it may belong to the left-out plugin (one plugin may
    register several methods under other names, as `gm` does `dc` and `dsa-gm`), whereas a near miss is a typo."""
    out = []
    datasets = registry.names("datasets")
    # A table for a plugin deliberately not loaded (or refused) is unused, not a typo.
    not_loaded = set(registry.excluded) | {p.name for p in registry.failed}
    for f in config.files:
        for section in SECTIONS:
            loaded: Mapping[str, Any] = registry.items[section]
            for name, table in getattr(f, section).items():
                if name not in loaded:
                    if name in not_loaded or (not_loaded and not _close(name, loaded)):
                        continue
                    out.append(f"{f.path}: [{section}.{name}] names no loaded {section[:-1]}{_nearest(name, loaded)}")
                    continue
                params = getattr(loaded[name], "params", {}) or {}
                for key, value in table.items():
                    if isinstance(value, dict):
                        if key not in datasets:
                            out.append(f"{f.path}: [{section}.{name}.{key}] names no dataset{_nearest(key, datasets)}")
                            continue
                        keys = list(value)
                    else:
                        keys = [key]
                    for k in keys:
                        if k not in params:
                            out.append(f"{f.path}: [{section}.{name}] {k!r} is no setting of {section[:-1]} {name}"
                                       f"{_nearest(k, params)}")
    return out


def preset_note(config: Config, section: str, name: str, dataset: str) -> str | None:
    """A line for the run log when presets exist for `name` on other datasets but not on `dataset`.

    Presets are keyed by dataset name: a dataset plugin that re-exposes Fashion-MNIST under another name gets
    the papers' settings (hours on a CPU), so the run says so instead of starting them without a word."""
    keyed = sorted({key for f in config.files for key, value in getattr(f, section).get(name, {}).items()
                    if isinstance(value, dict)})
    if not keyed or dataset in keyed:
        return None
    return (f"note: plugins.toml has presets for {section[:-1]} {name!r} on {', '.join(keyed)}, none for {dataset!r}: "
            f"its paper defaults apply (presets are keyed by dataset name; add [{section}.{name}.{dataset}] or --set)")


def effective(spec: Mapping[str, Any], layers: list[Layer], sets: Mapping[str, Any] | None = None,
              preset: str = "default") -> dict[str, tuple[Any, str]]:
    """Each setting's effective value and the layer that set it ("default" when none did)."""
    out = {k: (p.default, "default") for k, p in spec.items()}
    stack = ([] if preset == "paper" else layers) + ([Layer("--set", dict(sets))] if sets else [])
    for layer in stack:
        for key, value in layer.values.items():
            if key in spec:
                try:
                    out[key] = (spec[key].coerce(key, value), layer.label)
                except DDBenchError as exc:  # name the file and table, as `run` does
                    raise DDBenchError(f"{exc} (from {layer.label})") from None
    return out


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
