"""The objects plugins hand to the host and receive from it: the contracts of every kind of extension.

Everything a plugin needs to implement or consume is importable from here (`__all__`); the helpers it may use
besides are `ddbench.helpers`' names (`PUBLIC_SURFACE`). The host never imports a method, sampler or policy by name: it
only sees these interfaces. This module depends on nothing of the host but the bottom layer (errors, the run
record, the sweep job), and imports torch only where a tensor is touched, so the CLI can parse its
arguments without loading torch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol as Interface

from .core.errors import DDBenchError, RunFailed
from .core.jobs import Job
from .core.params import Param, resolve_params
from .core.records import RunRecord
from .core.roles import AUGMENTATION, EPOCHS, IMPLEMENTATION, NETWORKS, PRECISION, ROLES, SPEED
# The generative and selection contracts live in their own modules (one audience each); re-exported here so that
# `from ddbench.api import Sampler` (the documented surface) keeps working.
from .core.generative import Decision, PlanRequest, Policy, SampleRequest, SampleResult, Sampler, Throughput
from .core.selection import Selector, check_picks, check_pool

if TYPE_CHECKING:  # annotations only: torch is imported where a tensor is touched
    import argparse

    import torch
    from torch import nn


# Every command's and request's defaults, in this one place: real Fashion-MNIST (Debian's dataset-fashion-mnist;
# the seed paper's low-resolution track, ../shared/seed), the standard evaluation protocol `dsa` (1000 epochs x 5
# networks, VICO-UoE/DatasetCondensation evaluate_synset) and its ConvNet (utils.py get_network('ConvNet')).
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_PROTOCOL = "dsa"
DEFAULT_MODEL = "convnet"

# The longest generation budget taken: a day (the CLI's parsers and the runner check it). The ECCV 2024 challenge
# budgets are minutes (docs/benchmark-axes.md); an uncapped budget plans absurd counts (1e300 s: 16,777,215 per class).
MAX_BUDGET = 86400.0


def check_budget(seconds: float) -> float:
    """The one rule for a generation budget, wherever it comes from (a flag, a RunRequest): positive, finite, at
    most MAX_BUDGET. ValueError says why, for the caller to name its input."""
    if not seconds > 0 or seconds == float("inf"):  # NaN fails `> 0`
        raise ValueError("must be a positive, finite number of seconds")
    if seconds > MAX_BUDGET:
        raise ValueError(f"is above the cap of {MAX_BUDGET:g} s (a day)")
    return seconds


# What a plugin may import from ddbench, by name: `hookimpl`, this module's `__all__` and `ddbench.helpers`'
# `__all__` (docs/plugins.md#what-a-plugin-may-import). tests/test_layers.py holds every bundled plugin
# (ddbench/default_plugins/, baselines/, ddbench_minmax/) to it; anything else of the host may change freely.
PUBLIC_SURFACE: dict[str, str] = {
    "ddbench": "`hookimpl`, the marker of a hook implementation",
    "ddbench.api": "the contracts and types of every kind of extension, and the errors (its `__all__`)",
    "ddbench.helpers": "the helpers, one name each: atomic writes, seeded streams, cache keys, the `.pt` reader, "
                       "guarded calls, DSA and ZCA, the reference classifier and feature spaces, and for launchers "
                       "and commands the worker, the run flags, running a cell and reading the results (its "
                       "`__all__`)",
}


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """A loaded dataset: normalised float tensors (N, C, H, W) and integer labels, on the CPU."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def indices_of_class(self, c: int) -> torch.Tensor:
        return (self.train_y == c).nonzero(as_tuple=True)[0]

    def class_counts(self) -> torch.Tensor:
        import torch

        return torch.bincount(self.train_y, minlength=self.num_classes)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixel space (for image grids and for generators that work in pixel space)."""
        import torch

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * std + mean

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


class DatasetLoader(Interface):
    def __call__(self, root: Path | None = None, download: bool = False) -> ImageDataset: ...


@dataclass
class DatasetSpec:
    """A dataset plugin: a name and a loader. The loader raises DDBenchError naming where it looked.

    `image_size` (an int: images are square), `channels` and `num_classes` describe the data for
    `ddbench list` before anything is loaded; the loaded `ImageDataset` is what runs use.
    """

    name: str
    load: DatasetLoader  # load(root: Path | None, download: bool) -> ImageDataset
    description: str = ""
    image_size: int = 0
    channels: int = 0
    num_classes: int = 0


@dataclass
class SyntheticSet:
    """What a method returns: images in the dataset's normalised space, labels, and free metadata.

    `meta` may carry e.g. a learned learning rate (MTT) or the sampler's step count; `lr` (if set) is
    the learning rate the evaluation should use, as MTT evaluates with its learned lr. Under a generation
    budget the method declares what it produced: `ipc` (images per class; the host checks the set holds
    exactly that many of every class) and `generation_seconds` (the time spent generating; the host checks
    it is within the budget). Without a budget `generation_seconds` is optional: when declared (the time spent
    generating once every model is trained: sampling and refine, a matching loop, a selection) it is the run's
    place on the report's accuracy-per-second axis, else its distill seconds are. Labels are N class indices, or
    an (N, num_classes) soft-label matrix.
    """

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    ipc: int | None = None
    generation_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"synthetic images must be (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError("synthetic images and labels differ in length")

    def per_class(self, num_classes: int) -> list[int]:
        """Images of each class (soft labels count by their argmax)."""
        import torch

        labels = self.labels.argmax(1) if self.labels.ndim == 2 else self.labels
        return torch.bincount(labels.long().cpu(), minlength=num_classes).tolist()


# --------------------------------------------------------------------------------------------------
# Components registered by plugins
# --------------------------------------------------------------------------------------------------


class ModelBuilder(Interface):
    def __call__(self, channels: int, num_classes: int, image_size: int) -> nn.Module: ...


@dataclass
class ModelSpec:
    """An architecture: build(channels, num_classes, image_size) -> nn.Module; `description` for `ddbench list`.

    Modules should expose `embed(x)` (features before the classifier) for methods that match embeddings.
    """

    name: str
    build: ModelBuilder
    description: str = ""


class Method(ABC):
    """A distillation method. Subclass, set `name`, `description`, `params`, and implement `distill`.

    `params` maps each setting to a `Param` whose `source` cites where its default comes from; the host
    resolves them (defaults < plugins.toml < --set) into `ctx.params`. Set `supports_budget = True` if the
    method honours `--budget SECONDS` (`ctx.budget`); it then declares `SyntheticSet.ipc`. `role` marks a
    reference the scores are measured against: "random-real" (IOR) or "full-data" (HLR); "" otherwise.
    `iteration_settings` names settings that count matching iterations beyond the report's own list
    (`iterations`, `refine_iterations`, `image_updates`): runs differing only in them are drawn as an
    accuracy-per-second curve (ddbench/analysis/report_curves.py).
    """

    name: str = ""
    description: str = ""
    params: dict[str, Param] = {}
    supports_budget: bool = False
    role: str = ""
    iteration_settings: tuple[str, ...] = ()

    def validate(self, ctx: "RunContext") -> None:
        """Check the resolved settings against the data before any work starts (raise DDBenchError)."""

    @abstractmethod
    def distill(self, ctx: "RunContext") -> SyntheticSet:
        """Turn `ctx.dataset` into a synthetic set honouring the run's contract (ddbench/host/output_checks.py)."""


@dataclass
class EvalResult:
    accuracies: list[float]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(sum(self.accuracies) / len(self.accuracies)) if self.accuracies else float("nan")

    @property
    def std(self) -> float:
        n = len(self.accuracies)
        if n < 2:
            return 0.0
        m = self.mean
        # Population std, as the reference code's np.std reports it.
        return float((sum((a - m) ** 2 for a in self.accuracies) / n) ** 0.5)


class Protocol(ABC):
    """An evaluation protocol: train fresh networks on a synthetic set, test on the real test set."""

    name: str = ""
    description: str = ""
    params: dict[str, Param] = {}
    # The epoch count of the published protocol this one follows (None: no such claim). A run evaluated with fewer
    # epochs (its setting of role EPOCHS) is a cut protocol, and reports label its tables as such.
    standard_epochs: int | None = None

    def validate(self, ctx: "RunContext", settings: dict[str, Any]) -> None:
        """Check the data, network and settings before any work starts (raise DDBenchError): a problem found
        in `evaluate` comes after distillation, when it is no longer the user's bad input but a failed run."""

    @abstractmethod
    def evaluate(self, syn: SyntheticSet, ctx: "RunContext", settings: dict[str, Any]) -> EvalResult:
        """Accuracies (%) of the networks trained on `syn`, its time in seconds, and free details."""


class MatchStep(Interface):
    """One iteration of a bound matching objective: (iteration, current images) -> (loss, d loss / d images)."""

    def __call__(self, iteration: int, images: torch.Tensor) -> tuple[float, torch.Tensor]: ...


class Objective(ABC):
    """A matching objective on the pixels of a synthetic set (DM's distribution matching, DC/DSA's gradient
    matching...), shared so that a method can optimise its own set with another method's loss code (minmax-diffusion's
    `refine`) instead of a copy of it. Registered by the plugin that owns the loss (`register_objectives`), looked
    up by name: `ctx.registry.get("objectives", name)`.

    Set `name`, `description`, `source` (the paper or `owner/repo: file` the loss follows) and `params`: its
    settings as `Param`s with cited defaults, among them `lr` and `momentum`, the SGD on the images its own method
    uses (a caller's optimiser reads them). Implement `bind`.
    """

    name: str = ""
    description: str = ""
    source: str = ""
    params: dict[str, Param] = {}

    def validate(self, ctx: "RunContext", settings: dict[str, Any]) -> None:
        """Check resolved `settings` against the run before any work (raise DDBenchError); the caller's `validate`
        calls it."""

    @abstractmethod
    def bind(self, ctx: "RunContext", labels: torch.Tensor, settings: dict[str, Any]) -> MatchStep:
        """A step function for a set with these hard `labels` (N,), every class equally often, in any order:
        `step(it, images) -> (loss, grad)` with `images` (N, C, H, W) in the dataset's normalised space on
        `ctx.device` and `grad` of their shape; call it with it = 0, 1, 2... (it may keep state between calls).
        Iteration `it`'s random draws depend only on (ctx.seed, it). `settings` are resolved `params`. Labels it
        cannot match (soft, unbalanced, another class count): DDBenchError."""


class Launcher(ABC):
    """Runs the jobs of a sweep (`ddbench compare --launcher NAME`) somewhere: processes, SLURM, a cluster.

    The driver plans the jobs (ddbench/run/sweeps.py), calls `check` once, then `run`, and stores each record
    `run` yields; a launcher never touches the database. `params` are its settings (`--launcher-set K=V`).
    """

    name: str = ""
    description: str = ""
    params: dict[str, Param] = {}

    def check(self, settings: dict[str, Any], parallelism: int) -> None:
        """Raise DDBenchError, quickly, when jobs cannot run here (a missing package, no controller...)."""

    @abstractmethod
    def run(self, jobs: list[Job], settings: dict[str, Any], parallelism: int,
            log: Callable[[str], None]) -> Iterator[tuple[Job, RunRecord]]:
        """Yield (job, record) once per job as each finishes: `ddbench.run.sweeps.run_job(job)` on the worker
        builds the record; a job that could not run gets `ddbench.run.sweeps.failed_record(job, why)`. When
        the generator is closed early (the sweep was interrupted), cancel whatever was started."""


class ArgumentAdder(Interface):
    def __call__(self, parser: argparse.ArgumentParser) -> None: ...


class CommandRunner(Interface):
    def __call__(self, args: argparse.Namespace) -> int: ...


@dataclass
class Command:
    """A `ddbench NAME` subcommand (as simonw/llm's `register_commands`): its flags and what it does.

    `add_arguments(parser)` adds its flags to its argparse sub-parser; `run(args)` does the work and returns
    the exit status (0 done, 1 a run failed); bad input raises DDBenchError (one line, exit 2). `ddbench
    --help` loads every command, so the module that registers one imports no torch: do heavy imports in `run`.
    """

    name: str
    help: str
    add_arguments: ArgumentAdder
    run: CommandRunner
    description: str = ""


class Components(Interface):
    """What a plugin may ask of the loaded plugins (`ddbench.host.plugins.Registry` is the host's): a registered
    object by kind and name (an unknown name is a DDBenchError listing the valid ones), and the names of a kind."""

    def get(self, kind: str, name: str) -> Any: ...

    def names(self, kind: str) -> list[str]: ...


@dataclass
class RunContext:
    """Everything a method needs for one run. Built by the host from the CLI and plugins.toml."""

    dataset: ImageDataset
    ipc: int
    seed: int
    device: torch.device
    params: dict[str, Any]
    model: str
    registry: Components
    work_dir: Path  # per-run scratch: checkpoints for resuming live here (keyed by config hash)
    cache_dir: Path  # shared across runs: expert buffers, trained generators
    budget: float | None = None  # seconds of generation (generative methods), None = fixed IPC
    progress: bool = True
    log: Callable[[str], None] = print
    protocol: str = "dsa"
    results_db: Path | None = None  # the run's results database (--out/--db): methods that start from a recorded run

    def build_model(self, name: str | None = None) -> nn.Module:
        spec = self.registry.get("models", name or self.model)
        return spec.build(self.dataset.channels, self.dataset.num_classes, self.dataset.image_size)

    def evaluate(self, syn: SyntheticSet, protocol: str = "fast", **overrides: Any) -> EvalResult:
        """Evaluate a (candidate) synthetic set with a registered protocol, e.g. inside a policy's pilot."""
        proto = self.registry.get("protocols", protocol)
        settings = resolve_params(f"protocol {protocol}", proto.params, overrides)
        return proto.evaluate(syn, self, settings)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator for stream `offset` of this run's seed (ddbench.core.seeds: a keyed hash, so no stream
        of a method collides with another method's, the evaluation's, or another seed's)."""
        from .core.seeds import generator

        return generator(self.seed, "run-context", offset)


__all__ = [
    # errors, records, jobs
    "DDBenchError", "RunFailed", "RunRecord", "Job",
    # settings and their roles
    "Param", "resolve_params", "AUGMENTATION", "EPOCHS", "IMPLEMENTATION", "NETWORKS", "PRECISION", "ROLES", "SPEED",
    # defaults and limits
    "DEFAULT_DATASET", "DEFAULT_PROTOCOL", "DEFAULT_MODEL", "MAX_BUDGET", "check_budget", "PUBLIC_SURFACE",
    # data, models, methods, protocols, objectives, launchers, commands
    "ImageDataset", "DatasetLoader", "DatasetSpec", "SyntheticSet", "ModelBuilder", "ModelSpec", "Method",
    "EvalResult", "Protocol", "MatchStep", "Objective", "Launcher", "ArgumentAdder", "CommandRunner", "Command",
    "Components", "RunContext",
    # the generative contracts (ddbench/core/generative.py) and the selection contract (ddbench/core/selection.py)
    "Sampler", "SampleRequest", "SampleResult", "Throughput", "Policy", "PlanRequest", "Decision", "Selector",
    "check_picks", "check_pool",
]
