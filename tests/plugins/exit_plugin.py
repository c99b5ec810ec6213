"""A plugin whose method and protocol end the process the hard way (os._exit, a segfault), for
tests/test_plugin_exits.py. The host must record a failed run naming the plugin, never exit 0."""
import os
import signal

from ddbench import hookimpl
from ddbench.api import Method, Protocol


class _Ender(Method):
    description = "ends the process (tests)"
    params = {}

    def __init__(self, kind: str, where: str = "distill"):
        self.kind, self.where = kind, where
        self.name = f"{kind}-{where}" if where != "distill" else f"{kind}-method"

    def _end(self):
        if self.kind == "os-exit":
            os._exit(0)
        os.kill(os.getpid(), signal.SIGSEGV)  # a hard crash: no Python handler runs

    def validate(self, ctx):
        if self.where == "validate":
            self._end()

    def distill(self, ctx):
        self._end()


class _EndingProtocol(Protocol):
    name = "os-exit-protocol"
    description = "calls os._exit(0) in evaluate (tests)"
    params = {}

    def evaluate(self, syn, ctx, settings):
        os._exit(0)


@hookimpl
def register_methods(register):
    register(_Ender("os-exit"))
    register(_Ender("os-exit", "validate"))
    register(_Ender("segv"))


@hookimpl
def register_protocols(register):
    register(_EndingProtocol())
