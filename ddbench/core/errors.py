"""The two ways a command ends badly, at the bottom of the house so every module can raise them.

`DDBenchError` is the user's (bad input: one line, exit 2, nothing written); `RunFailed` is a run's (it
started and failed: recorded as failed, exit 1). `ddbench.api` re-exports both for plugins.
"""
from __future__ import annotations


class DDBenchError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits 2."""


class RunFailed(Exception):
    """A run that started and failed: recorded as failed, exit code 1."""


__all__ = ["DDBenchError", "RunFailed"]
