"""The floor plan, read from the code's own imports (every `import`, lazy ones inside functions and those under
`if TYPE_CHECKING:` included): no circles anywhere, no import from a lower layer of the kernel to a higher one,
and bundled plugins import nothing of the host beyond its public names: `hookimpl`, `ddbench.api.__all__` and
`ddbench.helpers.__all__` (ddbench.api.PUBLIC_SURFACE)."""
from __future__ import annotations

import ast
import importlib
import re
import resource
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import ddbench
import ddbench.api
import ddbench.helpers
from ddbench.api import PUBLIC_SURFACE

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"ddbench": ROOT / "ddbench", "ddbench_baselines": ROOT / "baselines", "ddbench_minmax": ROOT / "ddbench_minmax"}
PLUGIN_PACKAGES = ("ddbench.default_plugins", "ddbench_baselines", "ddbench_minmax")

# The kernel's layers, lowest first: a package of ddbench (all of it) or a module at its top. A module may import
# from its own layer and those below, never above; ddbench/ holds these and nothing else.
LAYERS: list[tuple[str, set[str]]] = [
    ("the foundation: errors, records, seeds, stats, the contracts' value types", {"ddbench", "ddbench.core"}),
    ("the contracts", {"ddbench.api", "ddbench.hookspecs"}),
    ("the store: plugins.toml, the database, sets, identities", {"ddbench.store"}),
    ("the host: loading, guarding and checking plugins; shared machinery", {"ddbench.host"}),
    ("runs", {"ddbench.run"}),
    ("analysis and the report", {"ddbench.analysis"}),
    ("commands", {"ddbench.commands"}),
    ("the helpers plugins may use, by name", {"ddbench.helpers"}),
    ("the command line", {"ddbench.cli", "ddbench.__main__"}),
]


def _module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if folder in path.parents:
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


MODULES = {_module_name(p): p for folder in PACKAGES.values() for p in folder.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> set[str]:
    """Every module of this repository `name` imports, wherever in the file the import stands."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` names a, a.b and a.b.c; keep the deepest known
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def _layer(name: str) -> int | None:
    for i, (_, members) in enumerate(LAYERS):
        if any(name == m or (m != "ddbench" and name.startswith(m + ".")) for m in members):
            return i
    return None


def test_every_kernel_module_has_a_layer():
    kernel = {n for n in MODULES if n.split(".")[0] == "ddbench" and not n.startswith("ddbench.default_plugins")}
    unplaced = sorted(n for n in kernel if _layer(n) is None)
    assert not unplaced, f"place these in a layer's package (or in LAYERS): {unplaced}"
    named = set().union(*(members for _, members in LAYERS))
    assert named <= kernel, f"gone: {sorted(named - kernel)}"


def test_every_package_ships_in_the_wheel():
    # setuptools lists packages by name (pyproject.toml): a layer package missing there is missing from a wheel
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {n for n in MODULES if _is_package(n)} == listed


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    upward = []
    for name, targets in graph.items():
        here = _layer(name)
        if here is None:
            continue
        for target in targets:
            there = _layer(target)
            if there is None:
                upward.append(f"{name} imports {target}, which is no kernel module (a built-in plugin?)")
            elif there > here:
                upward.append(f"{name} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    return upward


def test_no_import_runs_up_the_layers():
    upward = upward_imports(GRAPH)
    assert not upward, "\n".join(upward)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_circles_anywhere():
    assert _circles(GRAPH) == []


def test_a_planted_upward_import_or_circle_is_caught():
    # the checks would pass anything if they read nothing: plant a bad arrow and they must name it
    planted = {name: set(targets) for name, targets in GRAPH.items()}
    planted["ddbench.core.errors"].add("ddbench.analysis.report")
    assert upward_imports(planted) == ["ddbench.core.errors (the foundation: errors, records, seeds, stats, the "
                                       "contracts' value types) imports ddbench.analysis.report (analysis and the "
                                       "report)"]
    assert any({"ddbench.core.errors", "ddbench.analysis.report"} <= set(c) for c in _circles(planted))
    sideways = {name: set(targets) for name, targets in GRAPH.items()}
    sideways["ddbench.run.resolve"].add("ddbench.run.sweeps")  # sweeps imports runner, which imports resolve
    assert upward_imports(sideways) == [] and _circles(sideways) != []


def test_the_layer_test_sees_lazy_and_type_checking_imports():
    # it would be blind without them: the kernel's circles of old were all lazy or TYPE_CHECKING imports
    assert "ddbench.run.runner" in GRAPH["ddbench.run.sweeps"]  # imported inside run_job
    assert "ddbench.analysis.report" in GRAPH["ddbench.commands.report_command"]  # imported inside cmd_report


def _plugin_module(name: str) -> bool:
    return name.startswith(PLUGIN_PACKAGES)


# The names a plugin may import from the host, per module.
PUBLIC_NAMES = {"ddbench": {"hookimpl"}, "ddbench.api": set(ddbench.api.__all__),
                "ddbench.helpers": set(ddbench.helpers.__all__)}
# Bundled modules whose imports the lead moves to ddbench.helpers in a change of their own (issue 29): strict, so
# the test fails once they comply, until they leave this set.
MOVING: dict[str, str] = {}  # bundled plugins still on an old import path (none left)


def host_names(name: str) -> set[tuple[str, str]]:
    """(module, name) of every import in module `name` of the host (ddbench but the plugin's own package);
    `import ddbench.x` reads as (ddbench.x, "*")."""
    own = next(p for p in PLUGIN_PACKAGES if name.startswith(p))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            stem = node.module or ""
            if node.level:
                base = package.split(".")
                stem = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            found |= {(stem, a.name) for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {(a.name, "*") for a in node.names}
    return {(m, n) for m, n in found if m.split(".")[0] == "ddbench" and not m.startswith(own)}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=MOVING[n]))
                                  if n in MOVING else n for n in sorted(n for n in MODULES if _plugin_module(n))])
def test_bundled_plugins_import_only_the_public_names(name):
    outside = sorted(f"{m}.{n}" for m, n in host_names(name) if n not in PUBLIC_NAMES.get(m, set()))
    assert not outside, (f"{name} imports {outside}: a plugin imports `hookimpl`, ddbench.api's names and "
                         "ddbench.helpers' names only (ddbench.api.PUBLIC_SURFACE)")


def test_the_surface_test_sees_relative_imports_and_whole_modules():
    # it would pass everything if it missed the bundled plugins' own spellings of a host import
    assert ("ddbench", "hookimpl") in host_names("ddbench.default_plugins.challenge_command")  # `from .. import`
    assert ("ddbench.api", "Command") in host_names("ddbench.default_plugins.challenge_command")  # `from ..api`
    assert ("ddbench.api", "Selector") in host_names("ddbench.default_plugins.selectors")  # `from ddbench.api`
    assert not any(m.startswith("ddbench.default_plugins") for m, _ in host_names("ddbench.default_plugins.datasets"))


def test_the_helpers_import_graph_names_each_home():
    # the TYPE_CHECKING imports are what readers of the import graph (and this file) see: the same homes
    tree = ast.parse(MODULES["ddbench.helpers"].read_text())
    seen = {a.name: n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 for a in n.names}
    assert seen == ddbench.helpers._HOMES


def test_the_helpers_are_lazy_and_every_name_resolves():
    cpu, out, rc = _cpu_of("import sys, ddbench.helpers as h\nprint('torch' in sys.modules)\n"
                           "missing = [n for n in h.__all__ if getattr(h, n, None) is None]\nprint(missing)")
    assert rc == 0 and out.split() == ["False", "[]"], out


def test_the_public_surface_is_documented():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert all(f"`{module}`" in guide for module in PUBLIC_SURFACE)


def test_the_old_flat_paths_still_import_as_the_moved_modules():
    # docs/plugins.md promises that a plugin written against the modules of the flat ddbench/ keeps working, and a
    # pickle naming one of their classes still loads: each old path gives the moved module's own objects
    assert all(f"ddbench.{package}.{old}" in MODULES for old, package in ddbench._MOVED.items())
    guide = (ROOT / "docs" / "plugins.md").read_text()
    promised = re.findall(r"`(ddbench\.\w+)`", guide[guide.index("The modules these names come from"):][:600])
    promised = [m for m in promised if m not in ("ddbench.api", "ddbench.core", "ddbench.run")]
    assert len(promised) == 15, promised
    code = ("import importlib, pickle, sys, ddbench\n"
            f"for old in {promised!r}:\n"
            "    name = old.rpartition('.')[2]\n"
            "    home = importlib.import_module(f'ddbench.{ddbench._MOVED[name]}.{name}')\n"
            "    assert importlib.import_module(old) is home and sys.modules[old] is home, old\n"
            "from ddbench.runner import execute\nfrom ddbench.run.runner import execute as moved\nassert execute is moved\n"
            "assert pickle.loads(b'cddbench.jobs\\nJob\\n.') is importlib.import_module('ddbench.core.jobs').Job\n"
            "try:\n    import ddbench.no_such_module\nexcept ImportError:\n    print('ok')\n")
    _, out, rc = _cpu_of(code)
    assert rc == 0 and out.split() == ["ok"], out


def test_an_entry_point_on_an_old_path_still_registers_its_hooks():
    # a stale install's entry point names `ddbench.core_commands`; pluggy finds hooks by static lookup, so the old
    # path must be the module itself, not a stand-in that forwards attributes (which registered no command)
    from ddbench.host.plugins import load_plugins

    registry = load_plugins(enabled=[], group="ddbench.commands",
                            extra=[("old-core", importlib.import_module("ddbench.core_commands"))])
    assert {"run", "list", "plugins", "show"} <= set(registry.names("commands")), registry.names("commands")


def _cpu_of(code: str) -> tuple[float, str, int]:
    """CPU seconds (user + system) a fresh interpreter spends on `code`, its stdout and exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.stdout + proc.stderr, proc.returncode


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["run", "--method", "random", "--ipc", "ten"],
                                  ["compare", "--no-such-flag"]])
def test_help_and_argument_errors_need_no_torch_and_under_half_a_second_of_cpu(argv):
    code = ("import sys\nfrom ddbench.cli import main\ntry:\n    main(%r)\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('torch imported:', 'torch' in sys.modules)\nsys.exit(code)" % (argv,))
    cpu, out, rc = _cpu_of(code)
    assert rc == (0 if "--help" in argv else 2), out
    assert "torch imported: False" in out
    assert cpu < 0.5, f"ddbench {' '.join(argv)} took {cpu:.2f} s of CPU"
