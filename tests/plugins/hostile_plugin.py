"""A local plugin that misbehaves the ways a hostile or careless plugin author would (tests, bad_inputs.py).

Every thing here is the plugin's fault, so the host must record a failed run naming the plugin (exit 1), or,
before any work, refuse it in one line naming the plugin (exit 1): never exit 0, never exit 2."""
import sys

from ddbench import hookimpl
from ddbench.api import DatasetSpec, DDBenchError, EvalResult, Method, Protocol


class _BadProtocol(Protocol):
    description = "returns bad accuracies (tests)"
    params = {}

    def __init__(self, name: str, accuracies):
        self.name, self.accuracies = name, accuracies

    def evaluate(self, syn, ctx, settings):
        if self.accuracies == "exit":
            sys.exit(0)
        return EvalResult(list(self.accuracies), 0.01)


class _Misbehaving(Method):
    description = "ends the process or refuses late (tests)"
    params = {}

    def __init__(self, kind: str):
        self.kind, self.name = kind, f"{kind}-method"

    def distill(self, ctx):
        if self.kind == "exit":
            sys.exit(0)
        if self.kind == "interrupt":
            raise KeyboardInterrupt
        raise DDBenchError("found a problem only after distilling began")


def _tiny():
    from conftest import make_tiny_dataset

    return make_tiny_dataset(num_classes=3, per_class=12, size=28, test_per_class=6)


def _none(root=None, download=False):
    return None


def _label_too_big(root=None, download=False):
    ds = _tiny()
    ds.train_y[0] = ds.num_classes
    return ds


def _no_test_set(root=None, download=False):
    ds = _tiny()
    ds.test_x, ds.test_y = ds.test_x[:0], ds.test_y[:0]
    return ds


@hookimpl
def register_protocols(register):
    register(_BadProtocol("nan-protocol", [float("nan")]))
    register(_BadProtocol("empty-protocol", []))
    register(_BadProtocol("range-protocol", [150.0, -20.0]))
    register(_BadProtocol("exit-protocol", "exit"))


@hookimpl
def register_methods(register):
    for kind in ("exit", "interrupt", "refuse"):
        register(_Misbehaving(kind))


@hookimpl
def register_datasets(register):
    for name, load in (("none-data", _none), ("big-label-data", _label_too_big), ("no-test-data", _no_test_set)):
        register(DatasetSpec(name=name, load=load, description="a broken loader (tests)", image_size=28, channels=1,
                             num_classes=3))
