"""The files shipped inside the package: the pretrained base of each dataset.

`ddbench_minmax/weights/<dataset>/` holds `generator/` and `meta.json`, read through the denoiser cache's
layout; ./base.py makes them, ./generator.py reads them.
"""
from __future__ import annotations

from pathlib import Path

from ddbench.api import DDBenchError

from .cache import CorruptCache, DenoiserCache

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def shipped_cache(dataset: str) -> DenoiserCache:
    """The shipped base of a dataset, in the denoiser cache's layout (generator/ + meta.json)."""
    return DenoiserCache(SHIPPED_DIR / dataset)


def load_verified(cache: DenoiserCache):
    """A saved base and its meta; a one-line DDBenchError when a file is missing, altered or unreadable."""
    try:
        return cache.load()
    except CorruptCache as exc:
        raise DDBenchError(f"base is corrupt: {exc}; reinstall the package, retrain it with "
                           f"`python -m ddbench_minmax.base train`, or set base=train") from None


__all__ = ["SHIPPED_DIR", "shipped_cache", "load_verified"]
