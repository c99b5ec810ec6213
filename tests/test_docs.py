"""The plugin guide documents the live code (datasette's tests/test_docs.py way): every hook, every contract
method and field is derived from the running plugin manager and ddbench.api, then looked up in
docs/plugins.md; and every setting any loaded plugin declares cites a source a user can follow."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from ddbench import api
from ddbench.host.plugins import CONTRACTS, load_plugins, make_manager

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "plugins.md").read_text()


def _hooks() -> dict[str, list[str]]:
    pm = make_manager()
    return {name: list(getattr(pm.hook, name).spec.argnames) for name in dir(pm.hook) if name.startswith("register_")}


@pytest.mark.parametrize("hook", sorted(_hooks()))
def test_every_hook_has_a_heading_with_its_signature(hook):
    args = ", ".join(_hooks()[hook])
    assert re.search(rf"^#+ .*`{hook}\({args}\)`", GUIDE, re.M), f"docs/plugins.md has no heading `{hook}({args})`"


def test_every_hook_is_a_contract_and_back():
    assert {c.hook for c in CONTRACTS.values()} == set(_hooks())


def _documented_members(c) -> list[str]:
    """What a plugin of this kind implements or may override: the members the host calls, plus every public
    method the abstract base defines (a dataclass spec has only its callables)."""
    names = set(c.members)
    if not dataclasses.is_dataclass(c.base):
        names |= {n for n, v in vars(c.base).items() if inspect.isfunction(v) and not n.startswith("_")}
    return sorted(names)


@pytest.mark.parametrize("kind", sorted(CONTRACTS))
def test_every_contract_method_is_documented(kind):
    c = CONTRACTS[kind]
    assert f"ddbench.api.{c.base.__name__}" in GUIDE, f"docs/plugins.md does not name ddbench.api.{c.base.__name__}"
    for name in _documented_members(c):
        assert re.search(rf"`{name}\(", GUIDE), f"{c.base.__name__}.{name}() is not documented in docs/plugins.md"


def test_every_run_context_method_is_documented():
    for name, value in vars(api.RunContext).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            assert re.search(rf"`{name}\(", GUIDE), f"RunContext.{name}() is not documented in docs/plugins.md"


DOCUMENTED_TYPES = [api.SyntheticSet, api.ImageDataset, api.DatasetSpec, api.ModelSpec, api.Param, api.RunContext,
                    api.EvalResult, api.SampleRequest, api.SampleResult, api.PlanRequest, api.Decision, api.Throughput]


def _sections() -> list[tuple[str, str]]:
    """(heading, body) of every section of the guide."""
    parts = re.split(r"^(#+ .*)$", GUIDE, flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def _section_of(cls: type) -> str:
    """The section that documents `cls`: the one whose heading names it, else the one that constructs it."""
    for heading, body in _sections():
        if f"`{cls.__name__}`" in heading:
            return body
    for heading, body in _sections():
        if f"ddbench.api.{cls.__name__}(" in body:
            return body
    return ""


@pytest.mark.parametrize("cls", DOCUMENTED_TYPES, ids=lambda c: c.__name__)
def test_every_field_of_the_types_plugins_exchange_is_documented(cls):
    section = _section_of(cls)
    assert section, f"docs/plugins.md has no section documenting {cls.__name__}"
    for f in dataclasses.fields(cls):
        assert re.search(rf"`{f.name}\b|\b{f.name}[,=)]", section), \
            f"{cls.__name__}.{f.name} is not documented in its section of docs/plugins.md"


# ---- Param sources ------------------------------------------------------------------------------------------

REPO = re.compile(r"\b[A-Za-z0-9][\w-]*/[A-Za-z0-9][\w.-]*")  # owner/repository, e.g. VICO-UoE/DatasetCondensation
PAPER = re.compile(r"et al\.|\bpapers?\b|\b(19|20)\d\d\b|arXiv", re.I)
LOCAL_DOC = re.compile(r"\b((?:docs/)[\w./-]+\.md|README\.md)(#[\w-]+)?")
UNFOLLOWABLE = re.compile(r"REFERENCE\.md|\bissues?\s*#?\d|(?<![\w/])#\d+\b", re.I)


def _slugs(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file."""
    out = set()
    for line in path.read_text().splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def followable(source: str) -> str | None:
    """None if a user can follow `source`; else why not."""
    if not source.strip():
        return "no source"
    if UNFOLLOWABLE.search(source):
        return f"points at something users do not have: {UNFOLLOWABLE.search(source).group(0)!r}"
    for doc, anchor in LOCAL_DOC.findall(source):
        path = ROOT / doc
        if not path.is_file():
            return f"{doc} does not exist"
        if anchor and anchor[1:] not in _slugs(path):
            return f"{doc} has no heading {anchor}"
    without_docs = LOCAL_DOC.sub("", source)
    if LOCAL_DOC.search(source) or REPO.search(without_docs) or PAPER.search(source):
        return None
    return "cites no paper, public repository or document of this repository"


def _all_params():
    registry = load_plugins()
    for kind in ("methods", "protocols", "launchers", "objectives"):
        for name, obj in registry.items[kind].items():
            for key, param in (getattr(obj, "params", {}) or {}).items():
                yield f"{kind[:-1]} {name} [{registry.owners[kind][name]}] {key}", param.source


def test_every_param_of_every_loaded_plugin_has_a_followable_source():
    bad = [f"{where}: {why} ({source!r})" for where, source in _all_params() if (why := followable(source))]
    assert not bad, "\n".join(bad)


def test_the_source_check_refuses_what_it_should():
    assert followable("VICO-UoE/DatasetCondensation main_DM.py: --Iteration 20000") is None
    assert followable("Zhao & Bilen, WACV 2023, Table 2") is None
    assert followable("docs/evaluation.md#peak-memory: measured") is None
    assert "REFERENCE.md" in followable("REFERENCE.md §4")
    assert "issue" in followable("ddbench issue 4: chosen here")
    assert "does not exist" in followable("docs/nosuch.md")
    assert "no heading" in followable("docs/evaluation.md#nosuch-heading")
    assert "cites no" in followable("ddbench: a memory cap")
    assert followable("") == "no source"


def test_every_guarantee_names_its_tests_and_every_test_named_exists():
    text = (ROOT / "docs" / "guarantees.md").read_text()
    rows = re.findall(r"^\| (\d+) \|(.*)\|(.*)\|\s*$", text, re.M)
    assert [int(n) for n, _, _ in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 40, "rows numbered 1..N"
    for n, _, tests in rows:  # a guarantee without a test that holds it is a promise, not a guarantee
        assert re.search(r"`tests/test_\w+\.py", tests), f"guarantee {n} names no test"
    named = re.findall(r"`(tests/test_\w+\.py)((?:::\w+)?)`", text)
    current = None
    for path, test in named:
        current = ROOT / path
        assert current.is_file(), path
        if test:
            assert re.search(rf"^def {test[2:]}\(", current.read_text(), re.M), f"{path}{test} does not exist"
    chained = re.findall(r"`::(\w+)`", text)  # `::name` continues the file named just before it
    every = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for test in chained:
        assert re.search(rf"^def {test}\(", every, re.M), f"::{test} does not exist"


def test_every_class_attribute_of_the_plugin_contracts_is_documented():
    """A contract's class attribute a plugin sets (Method.role, Protocol.standard_epochs, Sampler.params...) is
    part of the surface: docs/plugins.md names each one."""
    import inspect

    from ddbench import api

    text = (ROOT / "docs" / "plugins.md").read_text()
    for cls in (api.Method, api.Protocol, api.Sampler, api.Policy, api.Selector, api.Launcher, api.Objective):
        attrs = [k for k, v in vars(cls).items() if not k.startswith("_") and not callable(v)
                 and not isinstance(v, (property, staticmethod, classmethod)) and not inspect.isfunction(v)]
        for attr in attrs:
            assert f"`{attr}" in text, f"{cls.__name__}.{attr} is not in docs/plugins.md"
