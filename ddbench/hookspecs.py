"""The hooks a ddbench plugin can implement.

Every hook receives one `register` callable and calls it once per object it adds (the simonw/llm style):

    from ddbench import hookimpl

    @hookimpl
    def register_methods(register):
        register(MyMethod())

Each registered object carries a unique `name` and honours the contract of its kind (ddbench.host.plugins.CONTRACTS,
checked at `register` time); a plugin that breaks either is refused whole and reported, and the others load.
Plugins are found through the `ddbench` entry-point group; plugins that add commands through the
`ddbench.commands` group (their modules stay light: `ddbench --help` imports them, and no torch).
"""
from __future__ import annotations

from typing import Callable

import pluggy

from .api import (Command, DatasetSpec, Launcher, Method, ModelSpec, Objective, Policy, Protocol, Sampler,
                  Selector)

hookspec = pluggy.HookspecMarker("ddbench")


@hookspec
def register_methods(register: Callable[[Method], None]) -> None:
    """Add distillation methods: `register(method)` with a `ddbench.api.Method` instance.

    A method turns a real dataset into a synthetic set (`distill(ctx) -> SyntheticSet`).
    """


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Add datasets: `register(spec)` with a `ddbench.api.DatasetSpec` (a name and a loader)."""


@hookspec
def register_protocols(register: Callable[[Protocol], None]) -> None:
    """Add evaluation protocols: `register(protocol)` with a `ddbench.api.Protocol` instance.

    A protocol trains fresh networks on a synthetic set and reports test accuracy on the real test set.
    """


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Add network architectures: `register(spec)` with a `ddbench.api.ModelSpec`.

    Used by protocols (the networks trained for evaluation) and by methods (embedders, experts).
    """


@hookspec
def register_samplers(register: Callable[[Sampler], None]) -> None:
    """Add samplers: `register(sampler)` with a `ddbench.api.Sampler`, e.g. few-step diffusion sampling."""


@hookspec
def register_policies(register: Callable[[Policy], None]) -> None:
    """Add IPC / budget policies: `register(policy)` with a `ddbench.api.Policy`.

    A policy decides how many images per class a generative method makes, e.g. within a time budget.
    """


@hookspec
def register_launchers(register: Callable[[Launcher], None]) -> None:
    """Add launchers: `register(launcher)` with a `ddbench.api.Launcher` that runs sweep jobs somewhere."""


@hookspec
def register_selectors(register: Callable[[Selector], None]) -> None:
    """Add selectors: `register(selector)` with a `ddbench.api.Selector` that picks k items per class from a pool
    by their features (coreset baselines, and generative methods that over-generate and keep the best)."""


@hookspec
def register_objectives(register: Callable[[Objective], None]) -> None:
    """Add matching objectives: `register(objective)` with a `ddbench.api.Objective`, a method's loss on the pixels
    of a synthetic set (e.g. DM's), which other methods look up by name to optimise their own sets with it."""


@hookspec
def register_commands(register: Callable[[Command], None]) -> None:
    """Add `ddbench` subcommands: `register(command)` with a `ddbench.api.Command` (name, flags, what it does).

    The host's own commands (`run`, `compare`, `report`...) are registered this way too; a module implementing
    this hook is listed in the `ddbench.commands` entry-point group.
    """
