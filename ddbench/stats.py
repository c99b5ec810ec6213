"""The one significance test of ddbench: Welch's two-sided t-test of two samples of accuracies.

Reports (a cell against the reference method's) and `run --reference` (a run against its reference at equal
count) both use it, so it sits below both.
"""
from __future__ import annotations


def welch(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value; None when either side has fewer than two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):  # no variance on either side: the test is undefined
        return 1.0 if a[0] == b[0] else 0.0
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


__all__ = ["welch"]
