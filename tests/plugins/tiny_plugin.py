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


class _Bad(Method):
    """Returns a set that breaks the run's contract in the way `kind` says (the host must catch it)."""

    description = "returns a broken set (tests)"
    params = {}
    supports_budget = True

    def __init__(self, kind: str):
        self.kind = kind
        self.name = f"bad-{kind}"

    def distill(self, ctx):
        import torch

        from ddbench.api import SyntheticSet

        d, k = ctx.dataset, ctx.dataset.num_classes
        per = ctx.ipc + 2 if self.kind == "extra" else ctx.ipc
        labels = torch.arange(k).repeat_interleave(per)
        images = d.train_x[: len(labels)].clone()
        declared = per
        if self.kind == "nan":
            images[1, 0, 0, 0] = float("nan")
        elif self.kind == "size":
            images = images[:, :, :20, :20]
        elif self.kind == "labels":
            labels = labels + 1
        elif self.kind == "unbalanced":
            labels[0] = 1
        elif self.kind == "undeclared":
            declared = None
        return SyntheticSet(images, labels, ipc=declared)


BAD_KINDS = ("extra", "nan", "size", "labels", "unbalanced", "undeclared")


class _CrashingValidate(Method):
    """A method whose validate() has a bug (not a DDBenchError): the host names the plugin, exit 1."""

    name = "crash-validate"
    params = {}

    def validate(self, ctx):
        return ctx.no_such_attribute

    def distill(self, ctx):  # pragma: no cover - never reached
        raise AssertionError


@hookimpl
def register_methods(register):
    register(_Failing())
    for kind in BAD_KINDS:
        register(_Bad(kind))
    register(_CrashingValidate())
