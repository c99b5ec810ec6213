"""The reference classifier's second import path, kept only while ddbench_minmax/plugin.py and
benchmarks/bench_minmax.py import `reference_classifier` from here (issue 29: they move to
`from ddbench.helpers import reference_classifier`, then this file goes). The classifier and the quality figures
it gives are ddbench/classifier.py's."""
from __future__ import annotations

from ddbench.helpers import reference_classifier  # noqa: F401
