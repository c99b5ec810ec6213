"""Plugin code runs in the host's process: tell the host's own interruptions from a plugin's control flow.

A real Ctrl-C or SIGTERM must stop a run without a row (checkpoints stay, the run resumes), but a plugin that
calls `sys.exit(0)` or raises KeyboardInterrupt itself used to end `run` and `compare` with exit 0 and no
record. The CLI installs handlers that note each signal (`handle_signals`); a SystemExit from plugin code, or a
KeyboardInterrupt with no signal behind it, is then the plugin's failure (`plugin_call`), recorded and exit 1.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from .api import DDBenchError, RunFailed

T = TypeVar("T")
_state = {"installed": False, "signals": 0}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (no row, checkpoints kept); the CLI exits 143 (128 + 15)."""


class PluginExit(RunFailed):
    """Plugin code raised SystemExit, or KeyboardInterrupt without a signal: a failed run naming the plugin."""


class PluginRefused(RunFailed):
    """Plugin code raised DDBenchError after work had begun: a failed run (exit 1), recorded, not bad input."""


def on_signal(signum, frame) -> None:
    """Note the signal, then stop the work as Ctrl-C does (SIGTERM as Terminated)."""
    _state["signals"] += 1
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def handle_signals() -> Iterator[None]:
    """Note SIGINT and SIGTERM while the block runs (main thread only), then restore the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    was = dict(_state)
    _state.update(installed=True, signals=0)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state.update(was)


def from_a_signal(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is the user's (a signal arrived, or nobody is watching for signals)."""
    return isinstance(exc, Terminated) or not _state["installed"] or _state["signals"] > 0


def plugin_call(label: str, what: str, call: Callable[[], T], refuse_is_failure: bool = False) -> T:
    """Run plugin code; its SystemExit or self-raised KeyboardInterrupt becomes PluginExit naming `label`.

    With `refuse_is_failure` (work has begun: the run has a record to keep), a DDBenchError becomes
    PluginRefused: the plugin found a problem too late for it to be the user's bad input (exit 2 writes nothing).
    """
    try:
        return call()
    except SystemExit as exc:
        raise PluginExit(f"{label} called sys.exit({exc.code!r}) in {what}; a plugin must raise an "
                         "exception, not end the process") from None
    except KeyboardInterrupt as exc:
        if from_a_signal(exc):
            raise
        raise PluginExit(f"{label} raised KeyboardInterrupt in {what} without a Ctrl-C or SIGTERM") from None
    except DDBenchError as exc:
        if not refuse_is_failure:
            raise
        raise PluginRefused(f"{label} refused in {what}, after work had begun: {exc}") from None


__all__ = ["Terminated", "PluginExit", "PluginRefused", "handle_signals", "on_signal", "from_a_signal", "plugin_call"]
