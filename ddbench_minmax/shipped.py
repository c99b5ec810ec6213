"""The files shipped inside the package: the pretrained base of each dataset.

`ddbench_minmax/weights/<dataset>/` holds `generator/` and `meta.json`, read through the generator cache's
layout; ./base.py makes them, ./generator.py reads them.
"""
from __future__ import annotations

from pathlib import Path

from ddbench.api import DDBenchError

from .cache import CorruptCache, GeneratorCache

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


def shipped_cache(dataset: str) -> GeneratorCache:
    """The shipped base of a dataset, in the generator cache's layout (generator/ + meta.json)."""
    return GeneratorCache(SHIPPED_DIR / dataset)


def load_verified(cache: GeneratorCache):
    """A saved base and its meta; a one-line DDBenchError when a file is missing, altered or unreadable."""
    try:
        return cache.load()
    except CorruptCache as exc:
        raise DDBenchError(f"base is corrupt: {exc}; reinstall the package, retrain it with "
                           f"`python -m ddbench_minmax.base train`, or set base=train") from None


__all__ = ["SHIPPED_DIR", "shipped_cache", "load_verified"]
