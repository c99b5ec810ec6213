"""Plugin code runs in the host's process: tell the host's own interruptions from a plugin's control flow.

A real Ctrl-C or SIGTERM must stop a run without a row (checkpoints stay, the run resumes), but a plugin that
calls `sys.exit(0)` or raises KeyboardInterrupt itself used to end `run` and `compare` with exit 0 and no
record. The CLI installs handlers that note each signal (`handle_signals`); a SystemExit from plugin code, or a
KeyboardInterrupt with no signal behind it, is then the plugin's failure (`plugin_call`), recorded and exit 1.

`os._exit()` raises nothing a handler could catch, so while plugin code runs (`no_hard_exit`: loading a plugin,
its hooks, a method's `validate`/`distill`, a protocol's `evaluate`) `os._exit` is replaced by a function that
raises `HardExit` (a SystemExit) in the process that installed it; a forked child (a DataLoader worker, a
multiprocessing fork) still ends with the real `os._exit`, as it must. Swapping one attribute costs nothing per
call. What no in-process guard stops: a crash of the interpreter itself (a segfault in native code), a plugin that
kept `posix._exit` under another name before loading, or calls into libc's `_exit` through ctypes. For those,
`compare --jobs N` runs cells in worker processes and a dead worker fails its own cell only (launchers.py).
"""
from __future__ import annotations

import os
import posix
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from ..api import DDBenchError, RunFailed

T = TypeVar("T")
_state = {"installed": False, "signals": 0}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (no row, checkpoints kept); the CLI exits 143 (128 + 15)."""


class PluginExit(RunFailed):
    """Plugin code raised SystemExit, or KeyboardInterrupt without a signal: a failed run naming the plugin."""


class HardExit(SystemExit):
    """Plugin code called `os._exit(code)` while `no_hard_exit` was active: raised instead of ending the process."""


_REAL_EXIT = os._exit
_hard = {"depth": 0, "pid": 0}


def _refusing_exit(code: int = 0) -> None:
    """`os._exit` while plugin code runs: raise in the guarded process; a forked child ends for real."""
    if _hard["depth"] and os.getpid() == _hard["pid"]:
        raise HardExit(code)
    _REAL_EXIT(code)


@contextmanager
def no_hard_exit() -> Iterator[None]:
    """While the block runs, `os._exit()` in this process raises HardExit (re-entrant; main thread or not)."""
    if _hard["depth"] == 0:
        _hard["pid"] = os.getpid()
        os._exit = posix._exit = _refusing_exit
    _hard["depth"] += 1
    try:
        yield
    finally:
        _hard["depth"] -= 1
        if _hard["depth"] == 0:
            os._exit = posix._exit = _REAL_EXIT


def ended(exc: SystemExit) -> str:
    """`called sys.exit(0)` or `called os._exit(3)`: how a message says what the plugin did."""
    return f"called {'os._exit' if isinstance(exc, HardExit) else 'sys.exit'}({exc.code!r})"


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


def raised_by_a_signal_handler(exc: BaseException) -> bool:
    """Whether `exc` was raised inside a signal handler installed now: the process being ended from outside (submitit
    exits with sys.exit(-1) from its SIGUSR2 handler to requeue a preempted SLURM job), not the plugin ending it."""
    codes = set()
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        code = getattr(getattr(handler, "__func__", handler), "__code__", None)
        if code is not None:
            codes.add(code)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False


def plugin_call(label: str, what: str, call: Callable[[], T], refuse_is_failure: bool = False) -> T:
    """Run plugin code; its SystemExit or self-raised KeyboardInterrupt becomes PluginExit naming `label`.

    With `refuse_is_failure` (work has begun: the run has a record to keep), a DDBenchError becomes
    PluginRefused: the plugin found a problem too late for it to be the user's bad input (exit 2 writes nothing).
    """
    try:
        with no_hard_exit():
            return call()
    except SystemExit as exc:
        if raised_by_a_signal_handler(exc):
            raise
        raise PluginExit(f"{label} {ended(exc)} in {what}; a plugin must raise an exception, not end the "
                         "process") from None
    except KeyboardInterrupt as exc:
        if from_a_signal(exc):
            raise
        raise PluginExit(f"{label} raised KeyboardInterrupt in {what} without a Ctrl-C or SIGTERM") from None
    except DDBenchError as exc:
        if not refuse_is_failure:
            raise
        raise PluginRefused(f"{label} refused in {what}, after work had begun: {exc}") from None


class PluginCrashed(RunFailed):
    """Plugin code that a method called (a selector, sampler, policy) raised: the run fails naming that plugin."""


def owned_label(registry, kind: str, name: str) -> str:
    """`selector 'NAME' (plugin 'OWNER')` for any registry-like object (its `owners` when it has them)."""
    owner = getattr(registry, "owners", {}).get(kind, {}).get(name, "?")
    return f"{'policy' if kind == 'policies' else kind[:-1]} {name!r} (plugin {owner!r})"


def call_plugin(registry, kind: str, name: str, what: str, call: Callable[[], T]) -> T:
    """Call a registered object's code from inside a method (a selector's `select`, a sampler's `generate`, a
    policy's `decide`) so that its fault is blamed on its own plugin, not on the method that called it: an
    ordinary exception becomes PluginCrashed, sys.exit/os._exit PluginExit, both naming the object's plugin.
    A DDBenchError (bad input) and a failure that already names a plugin pass through unchanged."""
    label = owned_label(registry, kind, name)
    try:
        return plugin_call(label, what, call)
    except (DDBenchError, RunFailed):
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's fault, named
        raise PluginCrashed(f"{label} crashed in {what}: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc


__all__ = ["PluginCrashed", "owned_label", "call_plugin", "Terminated", "PluginExit", "HardExit", "no_hard_exit",
           "ended", "PluginRefused", "handle_signals", "on_signal", "from_a_signal", "plugin_call"]
