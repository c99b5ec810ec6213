"""A local (not installed) plugin for CLI tests: a tiny separable dataset, loaded via plugins.toml `modules`."""
from ddbench import hookimpl
from ddbench.api import DatasetSpec, Method


def _load(root=None, download=False):
    from conftest import make_tiny_dataset  # tests/ is on sys.path under pytest; PYTHONPATH in subprocesses

    return make_tiny_dataset(num_classes=3, per_class=12, size=28, test_per_class=6)


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="tiny", load=_load, description="3 classes, 28x28 grey, for tests", image_size=28,
                         channels=1, num_classes=3))


class _Failing(Method):
    """A method that crashes mid-run: the run must be recorded as failed, with its traceback."""

    name = "failing"
    description = "raises during distill (tests)"
    params = {}

    def distill(self, ctx):
        raise RuntimeError("boom from the failing test method")


@hookimpl
def register_methods(register):
    register(_Failing())
