"""Identities: the one config hash and the one dataset fingerprint every part of ddbench uses.

A config hash names a cell or a cache entry (same settings, same hash); a dataset fingerprint says which
data a result or a cached model was computed on, so nothing is reused across different data.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import ImageDataset


def config_hash(obj: Any) -> str:
    """16 hex digits of the sha256 of `obj` as canonical JSON (sorted keys; non-JSON values by str())."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_fingerprint(ds: ImageDataset) -> str:
    """Cheap identity of the data itself (shape, labels, a strided sample of pixels), not just its name."""
    h = hashlib.sha256()
    h.update(repr((ds.name, tuple(ds.train_x.shape), ds.num_classes, ds.mean, ds.std)).encode())
    h.update(ds.train_y.cpu().numpy().tobytes())
    stride = max(1, len(ds.train_x) // 257)
    h.update(ds.train_x[::stride].cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks (shipped tables and weights are checked by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
