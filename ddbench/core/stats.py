"""The statistics of ddbench's reports: a cell's mean ± std and its test against a reference, as data.

The unit of a method's claim is the method seed: networks trained on one synthetic set are not independent
draws of the method (they share the set), so 2 seeds x 5 networks are 2 samples, not 10. Hence:

- `spread(per_seed)`: the mean of the seed means ± their sample standard deviation (ddof=1), over seeds; with
  one seed, its networks' mean ± their sample std, over networks (say so wherever it is shown: `over`).
- `seed_test(a, b)`: Welch's two-sided t-test of the two sides' seed means (the default test), None with fewer
  than 2 seeds on either side (and `reason` says why); the test over all networks pooled is computed beside
  it, `p_pooled`, to be shown only labelled as such.

A run's own figure (`EvalResult.std`, the stored `accuracy_std`) stays the population std of its networks, as
the reference code's `np.std` reports it, so a single run reads like the papers' tables; it is labelled where
shown. Reports (report.py), `run --reference` (reference.py) and the scores (scores.py) all use this module,
so it sits below them; it holds plain numbers only (`per_seed`: one list of network accuracies per seed).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

SEEDS, NETWORKS = "seeds", "networks"  # what a ± is over
MIN_SEEDS = 2  # per side, for the test over seed means


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p-value; None when either side has fewer than two values."""
    a, b = list(a), list(b)
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):  # no variance on either side: the test is undefined
        return 1.0 if a[0] == b[0] else 0.0
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (ddof=1); None with fewer than two values."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def population_std(values: Sequence[float]) -> float | None:
    """ddof=0, as the reference code's np.std: a run's own figure over its networks."""
    if not values:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def seed_means(per_seed: Sequence[Sequence[float]]) -> list[float]:
    return [sum(s) / len(s) for s in per_seed if s]


@dataclass(frozen=True)
class Spread:
    """mean ± std of a cell, and what the ± is over (SEEDS, or NETWORKS when the cell has one seed)."""

    mean: float | None
    std: float | None  # sample std (ddof=1); None with one value
    over: str
    n_seeds: int
    n_networks: int  # all networks of all seeds

    @property
    def n(self) -> int:
        """How many values the ± is over."""
        return self.n_seeds if self.over == SEEDS else self.n_networks

    def label(self) -> str:
        """`2 seeds` or `1 seed, 5 nets`: what the ± of this cell is over."""
        if self.over == SEEDS:
            return f"{self.n_seeds} seeds"
        return (f"{self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}, "
                f"{self.n_networks} net{'s' if self.n_networks != 1 else ''}")

    def text(self, digits: int = 2) -> str:
        """`69.29 ± 1.57` (`± -` where one value gives no std); '-' without values."""
        if self.mean is None:
            return "-"
        return f"{self.mean:.{digits}f} ± {'-' if self.std is None else f'{self.std:.{digits}f}'}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def spread(per_seed: Sequence[Sequence[float]]) -> Spread:
    """Over seeds (their means) with two or more seeds, else over the one seed's networks."""
    per_seed = [list(s) for s in per_seed if s]
    nets = sum(len(s) for s in per_seed)
    if len(per_seed) >= 2:
        means = seed_means(per_seed)
        return Spread(mean(means), sample_std(means), SEEDS, len(per_seed), nets)
    values = per_seed[0] if per_seed else []
    return Spread(mean(values), sample_std(values), NETWORKS, len(per_seed), nets)


@dataclass(frozen=True)
class Test:
    """A cell against its reference: Welch over seed means (`p`, the default) and over pooled networks
    (`p_pooled`, shown only labelled); `reason` says why `p` is None."""

    p: float | None
    p_pooled: float | None
    n_seeds: tuple[int, int]  # (cell, reference)
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def seed_test(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Test:
    """Welch's test of `a`'s seed means against `b`'s (each a list of per-seed network accuracies)."""
    a = [list(s) for s in a if s]
    b = [list(s) for s in b if s]
    pooled = welch([x for s in a for x in s], [x for s in b for x in s])
    n = (len(a), len(b))
    if min(n) < MIN_SEEDS:
        return Test(None, pooled, n, no_test_reason(*n))
    return Test(welch(seed_means(a), seed_means(b)), pooled, n)


def no_test_reason(n_cell: int, n_ref: int) -> str:
    """Why there is no p: the test is over method-seed means and needs two per side."""
    return (f"{n_cell} seed(s) here, {n_ref} in the reference: the t-test is over method-seed means and needs "
            f">= {MIN_SEEDS} on each side (networks trained on one set are not independent samples)")


STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def stars(p: float | None) -> str:
    if p is None or math.isnan(p):
        return ""
    return next((mark for limit, mark in STARS if p < limit), "")


def p_text(p: float) -> str:
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


__all__ = ["welch", "spread", "seed_test", "Spread", "Test", "sample_std", "population_std", "seed_means",
           "no_test_reason", "stars", "p_text", "SEEDS", "NETWORKS", "MIN_SEEDS", "STARS"]
