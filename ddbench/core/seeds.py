"""Seed derivation: the one way any part of ddbench turns (run seed, purpose, index...) into an RNG seed.

A keyed hash of the whole key tuple, so two purposes never share a stream (additive offsets such as
`seed * 1_000_003 + 256` collide as soon as two counters overlap).
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator

import torch


def derive_seed(*keys: Any) -> int:
    """A 63-bit seed from any printable keys (stable across processes, unlike hash())."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*keys: Any) -> torch.Generator:
    """A CPU generator seeded from keys, e.g. (run seed, "my-method", iteration): resuming replays the same draws."""
    return torch.Generator().manual_seed(derive_seed(*keys))


@contextlib.contextmanager
def seeded(*keys: Any) -> Iterator[None]:
    """Seed torch's global CPU RNG (used by nn.Module init) for a block, restoring it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(*keys))
        yield
