"""Plugin loading: entry points, allow-lists, duplicate names, failing plugins, documented hooks."""
from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

from ddbench import hookimpl, hookspecs
from ddbench.api import DDBenchError, Method
from ddbench.host.plugins import KINDS, load_plugins

ROOT = Path(__file__).resolve().parent.parent


def _method_plugin(name: str) -> types.ModuleType:
    mod = types.ModuleType(f"plugin_{name}")

    class M(Method):
        def distill(self, ctx):  # pragma: no cover - never run here
            raise NotImplementedError

    M.name = name

    @hookimpl
    def register_methods(register):
        register(M())

    mod.register_methods = register_methods
    return mod


def test_builtins_come_from_entry_points(registry):
    # The host knows no method by name: every method, dataset and protocol arrives through a plugin.
    assert "random" in registry.names("methods")
    assert registry.owners["methods"]["random"] == "random"
    assert "fashion-mnist" in registry.names("datasets")
    assert registry.owners["datasets"]["fashion-mnist"] == "datasets"
    assert not registry.failed, [(p.name, p.error) for p in registry.failed]


def test_host_source_never_names_a_method():
    # No import of a method package and no method name as a string literal in the host's code.
    pattern = re.compile(r"""import\s+ddbench_(baselines|minmax)|from\s+ddbench_(baselines|minmax)|["'](random|dm|mtt|minmax-diffusion)["']""")
    same_name_other_kind = {"selectors.py": 'name = "random"'}  # the uniform selector, a selector not a method
    for path in (ROOT / "ddbench").rglob("*.py"):
        found = pattern.search(path.read_text().replace(same_name_other_kind.get(path.name, "\0"), ""))
        assert found is None, f"{path.name} names a method: {found.group(0)}"



def test_every_built_in_plugin_module_is_an_entry_point():
    import importlib.metadata as md
    modules = {ep.value for group in ("ddbench", "ddbench.commands") for ep in md.entry_points(group=group)
               if ep.value.startswith("ddbench.default_plugins.")}
    # a plugin module implements a hook; the others are its helpers (dataset_files.py, slurm_launcher.py...)
    on_disk = {f"ddbench.default_plugins.{p.stem}" for p in (ROOT / "ddbench" / "default_plugins").glob("*.py")
               if p.stem != "__init__" and "@hookimpl" in p.read_text()}
    assert modules == on_disk
    assert len(on_disk) >= 10  # the plugin modules default_plugins/__init__.py lists


def test_duplicate_name_names_both_plugins_and_refuses_the_second():
    reg = load_plugins(extra=[("first", _method_plugin("twin")), ("second", _method_plugin("twin"))])
    assert reg.owners["methods"]["twin"] == "first"
    assert [(p.name, p.error) for p in reg.failed] == [
        ("second", "method 'twin' is registered twice: by plugin 'first' and by plugin 'second'")]


def test_allow_list_env_restricts_third_party_plugins(monkeypatch):
    monkeypatch.setenv("DDBENCH_LOAD_PLUGINS", "random")
    reg = load_plugins()
    assert "random" in reg.names("methods") and not {"dm", "mtt", "minmax-diffusion"} & set(reg.names("methods"))
    assert "fashion-mnist" in reg.names("datasets")  # the host's own plugins always load (its methods too)


def test_disabled_plugin_is_not_loaded():
    reg = load_plugins(disabled=["random"])
    assert "random" not in reg.names("methods")


def test_failing_plugin_is_reported_and_others_work():
    reg = load_plugins(modules=["ddbench_no_such_plugin_module"])
    failed = {p.name: p.error for p in reg.failed}
    assert "ddbench_no_such_plugin_module" in failed
    assert "ModuleNotFoundError" in failed["ddbench_no_such_plugin_module"]
    assert "random" in reg.names("methods")


def test_unknown_name_lists_valid_ones(registry):
    with pytest.raises(DDBenchError, match="unknown method 'nope'; valid: .*random"):
        registry.get("methods", "nope")


def test_every_hook_is_documented_in_the_plugin_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
    assert set(hooks) == set(KINDS.values())
    for hook in hooks:
        assert re.search(rf"^#+ .*`{hook}\(register\)`", guide, re.M), f"{hook} has no heading in docs/plugins.md"


def test_the_base_training_command_registers_like_every_other(tmp_path):
    """`ddbench minmax-base` comes from a `register_commands` entry point; `python -m ddbench_minmax.base`, the
    name recorded in the shipped meta.json, runs the same parser and gives the same one-line error (exit 2)."""
    import subprocess
    import sys

    from ddbench.host.plugins import load_commands

    commands = load_commands()
    assert commands.owners["commands"]["minmax-base"] == "minmax-base"
    for argv in (["-m", "ddbench", "minmax-base"], ["-m", "ddbench_minmax.base"]):
        proc = subprocess.run([sys.executable, *argv, "train", "--threads", "many"], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().endswith("--threads 'many' is not allowed; give a number >= 1 or auto")
        assert len(proc.stderr.strip().splitlines()) == 1


def test_the_base_command_runs_the_recipe_defaults_and_records_its_command_line(monkeypatch, tmp_path):
    import torch

    from ddbench_minmax import cli

    seen = {}

    class Recipe:
        steps, seed = 7, 3

        def __init__(self, steps, seed):
            seen["recipe"] = (steps, seed)

    def train(ds, recipe, work, out, threads, stop_at, command):
        seen["command"], seen["threads"] = command, threads
        return {"sha256": "x", "train": {"seconds": 0.0}}

    monkeypatch.setattr(cli, "_load_dataset", lambda name, root: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    argv = ["train", "--out", str(tmp_path / "base"), "--threads", "1"]
    assert cli.main(Recipe, train, argv) == 0
    assert seen == {"recipe": (7, 3), "command": " ".join(["python -m ddbench_minmax.base", *argv]), "threads": 1}
