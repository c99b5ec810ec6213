"""A sweep's job: one cell of a `ddbench compare` grid as shipped to a worker.

It sits at the bottom of the house because both sides of the launcher contract hold it: the driver
(ddbench/run/sweeps.py, ddbench/commands/compare.py) makes jobs, and a launcher plugin (`ddbench.api.Launcher`)
runs them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """One cell of a sweep, as shipped to a worker (picklable: a request and the config to resolve it)."""

    index: int
    request: Any  # ddbench.run.runner.RunRequest, with absolute paths
    config_path: tuple[str, ...] | str | None  # the driver's plugins.toml layers (ddbench.store.config.load_config)
    config_hash: str
    config: dict  # the resolved configuration (the same dict the hash was computed from)
    plugins: dict = field(default_factory=dict)  # `plugin:NAME` -> version of the plugins the cell uses

    @property
    def label(self) -> str:
        r = self.request
        budget = f" budget={r.budget:g}s" if r.budget else ""
        model = f" model={r.eval_architecture}" if getattr(r, "eval_architecture", None) else ""
        return f"{r.method} ipc={r.ipc}{budget}{model} seed={r.seed}"


__all__ = ["Job"]
