"""The generative contracts: how a generative method draws images (Sampler: SampleRequest -> SampleResult, its
cost measured as a Throughput) and decides what a generation budget buys (Policy: PlanRequest -> Decision).

They serve one audience, the methods that train a generator and sample from it (ddbench_minmax and its
successors), so they live apart from the core contracts of ddbench.api, which re-exports every name here for
plugins written against it (`from ddbench.api import Sampler` keeps working). torch is imported only where a
tensor is touched.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import DDBenchError

if TYPE_CHECKING:  # annotations only
    import torch


@dataclass
class Throughput:
    """Measured cost of one generator call as a function of the batch size n: a + b*n seconds.

    A sampler returns it from `measure`, timing whatever one denoising step really costs (with
    classifier-free guidance, both branches); policies turn it into "how many images fit in a budget".
    """

    a: float
    b: float
    num_classes: int
    batch_size: int
    overhead: float = 0.0
    samples: list[tuple[int, float]] = field(default_factory=list)
    threads: int | None = None  # the CPU thread count the measurement found fastest (None: leave torch's)

    def seconds(self, n_images: int, steps: int) -> float:
        """Time to generate n_images at `steps` steps in batches of at most `batch_size`."""
        if n_images <= 0:
            return 0.0
        full, rest = divmod(n_images, self.batch_size)
        t = full * (steps * (self.a + self.b * self.batch_size) + self.overhead)
        if rest:
            t += steps * (self.a + self.b * rest) + self.overhead
        return t

    def images_per_second(self, steps: int) -> float:
        n = self.batch_size
        return n / (steps * (self.a + self.b * n) + self.overhead)

    def max_ipc(self, budget: float, steps: int, safety: float = 1.0) -> int:
        """Largest IPC whose balanced generation fits `budget` seconds (with a safety factor)."""
        k = self.num_classes
        lo, hi = 0, 1
        while self.seconds(hi * k, steps) * safety <= budget:
            lo, hi = hi, hi * 2
            if hi > 10**7:
                break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.seconds(mid * k, steps) * safety <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    def min_budget(self, steps: int, safety: float = 1.0) -> float:
        """The smallest budget that gives every class one image at `steps` steps."""
        return self.seconds(self.num_classes, steps) * safety

    def table(self, steps_list) -> dict[str, float]:
        return {str(s): round(self.images_per_second(s), 2) for s in steps_list}


@dataclass
class SampleRequest:
    """What a method asks of a sampler: `ipc` images per class, or (deadline set, ipc None) as many
    class-balanced rounds as finish before `deadline` (an absolute time.perf_counter() value)."""

    num_classes: int
    steps: int
    image_shape: tuple[int, int, int]
    ipc: int | None = None
    deadline: float | None = None
    guidance: float = 1.0  # classifier-free guidance scale s (1 = the conditional model alone)
    scheduler: str = "ddim"
    batch_size: int = 100
    seed: int = 0
    throughput: Throughput | None = None  # needed with a deadline
    safety: float = 1.1  # factor on predicted batch times under a deadline
    progress: bool = False
    # The sampler's own settings (its `params`, resolved by the method: defaults < the run's settings), and data the
    # method prepared for it by name (ddbench_minmax: "prototypes", a (classes, M, C, H, W) tensor). A sampler's
    # levers live here, so a new one changes the sampler and its method, not this contract.
    settings: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SampleResult:
    """What a sampler returns; a method may rely on these fields and nothing else.

    `images`: a float (N, C, H, W) tensor in the generator's space (ddbench_minmax: pixels scaled to [-1, 1]);
    `labels`: N integer class indices, every class equally often (whole rounds: `per_class` gives the count);
    `stats`: free metadata the method records as is (step count, scheduler...), never read for accounting.
    Under a deadline, N may be 0: nothing fitted, and the method decides what that means.
    """

    images: torch.Tensor
    labels: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)

    def per_class(self, num_classes: int) -> list[int]:
        """Images of each class (what a method checks before trusting the set to be balanced)."""
        import torch

        return torch.bincount(self.labels.long().cpu(), minlength=num_classes).tolist()


class Sampler(ABC):
    """Generates images from a trained generator (e.g. few-step diffusion sampling).

    `model` is whatever the method trained; the method and its sampler agree on it (ddbench_minmax passes
    a denoiser `model(x_t, t, y) -> eps` with a `config` carrying the noise schedule and the null class,
    docs/plugins.md#samplers). `generate` returns a `SampleResult` (its fields are the contract; `stats` is free).
    """

    name: str = ""
    description: str = ""
    # The sampler's settings (its levers), `Param`s as for methods, immutable: the method resolves them into
    # SampleRequest.settings, and refuses a run that turns on a lever its sampler does not declare here.
    params: Mapping[str, Any] = MappingProxyType({})  # name -> ddbench.api.Param

    @abstractmethod
    def measure(self, model: Any, num_classes: int, image_shape: tuple[int, int, int], batch_size: int,
                guidance: float = 1.0) -> Throughput:
        """Time the generator on this device (its cost counts guidance), so policies can plan budgets."""

    @abstractmethod
    def generate(self, model: Any, request: SampleRequest) -> SampleResult:
        """Generate a class-balanced set; under a deadline, never run past it."""


@dataclass
class PlanRequest:
    """What a policy decides from: the fixed IPC or the budget, the step range and the measured cost."""

    num_classes: int
    budget: float | None
    ipc: int
    steps: int
    min_steps: int
    max_steps: int
    throughput: Throughput
    candidates: list[int] = field(default_factory=list)
    # pilot(S) -> {ipc: accuracy%}: generate at S and evaluate at the pilot IPCs (for policies that pilot)
    pilot: Callable[[int], dict[int, float]] | None = None
    safety: float = 1.1
    log: Callable[[str], None] = print


@dataclass
class Decision:
    """A policy's answer: S steps, and the IPC (fixed, or predicted to fit the budget), with its reason."""

    policy: str
    steps: int
    mode: str  # "ipc" or "budget"
    ipc: int
    reason: str
    curve: dict[str, Any] = field(default_factory=dict)

    def as_meta(self) -> dict[str, Any]:
        return asdict(self)


class Policy(ABC):
    """Decides how many denoising steps, and so how many images per class, a generative method produces."""

    name: str = ""
    description: str = ""
    # True: under a budget the run's own IPC is sampled (Decision.mode "ipc"), and the seconds the sampling leaves
    # go to the method's later stages (minmax-diffusion's refine), so a budget run stays at equal count.
    holds_ipc: bool = False
    # True: S is always the request's `steps` (the policy chooses no S), so a method can check a budget at that S
    # before any work; False: S may be any count from `min_steps` up, and a check must allow the fewest.
    fixed_steps: bool = False

    @abstractmethod
    def decide(self, request: PlanRequest) -> Decision:
        """Choose S for the request; raise DDBenchError when not even one image per class fits the budget."""
