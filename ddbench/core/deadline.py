"""The one stopping rule of a loop under `--budget`: no iteration starts that would end past the deadline.

The next iteration is predicted to take as long as the slowest one so far (before the first, an `expected` time
the caller measured), plus whatever must still run once the loop ends (`reserve`), times a safety margin. DM's
budget loop, minmax-diffusion's refine and its noise refine all stop by this rule, so methods that share a budget
stop alike.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# minmax-diffusion's budget_safety default (docs/minmax.md#dsr-sampler-and-policies): a 10% margin, so the last
# batch ends inside the budget on a machine whose speed drifts during a run.
BUDGET_SAFETY = 1.1


class Deadline:
    """`at`: an absolute `clock()` value (time.perf_counter's), or None for a loop without a budget."""

    def __init__(self, at: float | None, safety: float = BUDGET_SAFETY, expected: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.at, self.safety, self.clock = at, safety, clock
        self.slowest = expected  # seconds of the slowest iteration timed so far
        self.last = 0.0  # seconds of the last iteration timed
        self.stopped = False  # whether the deadline stopped the loop

    def allows(self, reserve: float = 0.0) -> bool:
        """Whether one more iteration, and then `reserve` seconds, fit before the deadline; once one does not,
        `stopped` is True."""
        if self.at is not None and self.clock() + (self.slowest + reserve) * self.safety > self.at:
            self.stopped = True
        return not self.stopped

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Time one iteration (the block): the prediction `allows` makes of the next."""
        start = self.clock()
        yield
        self.last = self.clock() - start
        self.slowest = max(self.slowest, self.last)


__all__ = ["BUDGET_SAFETY", "Deadline"]
