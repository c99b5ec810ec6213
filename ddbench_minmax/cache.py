"""The denoiser cache: a trained base or fine-tuned generator saved with diffusers' `save_pretrained`
(safetensors), keyed by dataset, recipe or fine-tuning spec and seed, plus the resumable training checkpoint of
an unfinished training. The shipped base uses the same layout (shipped.py).

Layout under `<cache_dir>/minmax-diffusion/<key>/`:
    generator/              save_pretrained output (config.json + diffusion_pytorch_model.safetensors); the
                            folder keeps the first release's name, so existing caches and the shipped base load
    meta.json               written last: the config, the weights' sha256, training time; "complete": true
    checkpoint.pt           training state while training runs (deleted once the denoiser is saved)
    .lock                   a file lock held while one process trains this key
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from ddbench.api import DDBenchError
from ddbench.helpers import atomic_save, atomic_write_text, config_hash, file_sha256, load_tensors

from .model import Denoiser

WEIGHTS = "diffusion_pytorch_model.safetensors"


def cache_key(prefix: str, identity: dict[str, Any]) -> str:
    """The folder name of a cached denoiser: `prefix-<hash of what made it>` (the format existing caches use)."""
    return f"{prefix}-{config_hash(identity)}"


class DenoiserCache:
    """One cached denoiser (base or fine-tuned generator) under `root`, in the layout above."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.key = self.root.name

    @classmethod
    def for_key(cls, cache_dir: Path, key: str) -> "DenoiserCache":
        return cls(Path(cache_dir) / "minmax-diffusion" / key)

    @property
    def generator_dir(self) -> Path:
        """The saved weights' folder (named `generator/` on disk, for either stage)."""
        return self.root / "generator"

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoint.pt"

    def exists(self) -> bool:
        return self.meta_path.is_file() or self.generator_dir.exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise training of one key across processes (a second run waits, then finds the cache)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self) -> tuple[Denoiser, dict[str, Any]]:
        """The cached denoiser and its meta. Raises CorruptCache when anything is missing or altered."""
        if not self.meta_path.is_file():
            raise CorruptCache(f"{self.meta_path} is missing (an interrupted save?)")
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CorruptCache(f"{self.meta_path} is unreadable: {exc}") from None
        weights = self.generator_dir / WEIGHTS
        if not weights.is_file():
            raise CorruptCache(f"{weights} is missing")
        if meta.get("sha256") and file_sha256(weights) != meta["sha256"]:
            raise CorruptCache(f"{weights} does not match the sha256 recorded in meta.json")
        try:
            denoiser = Denoiser.load(self.generator_dir)
        except Exception as exc:  # noqa: BLE001 - any loader failure means a corrupt cache entry
            raise CorruptCache(f"{self.generator_dir} does not load: {type(exc).__name__}: {exc}") from None
        return denoiser, meta

    def save(self, denoiser: Denoiser, meta: dict[str, Any]) -> dict[str, Any]:
        """save_pretrained into a temporary folder, swap it in, then write meta.json last."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "generator.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        denoiser.save(tmp)
        if self.generator_dir.exists():
            shutil.rmtree(self.generator_dir)
        os.replace(tmp, self.generator_dir)
        meta = {**meta, "sha256": file_sha256(self.generator_dir / WEIGHTS), "complete": True}
        atomic_write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), self.meta_path)
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint_path.unlink()
        return meta

    def clear(self) -> None:
        """Remove the saved denoiser and its meta (a corrupt entry); a training checkpoint is kept."""
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()
        for d in (self.generator_dir, self.root / "generator.tmp"):
            if d.exists():
                shutil.rmtree(d)

    # -- training checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The saved training state, or None (absent, or unreadable: then it is removed and training restarts)."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            return load_tensors(self.checkpoint_path)
        except Exception:  # noqa: BLE001 - a truncated or refused (safeload.UnsafeFile) checkpoint is deleted unread
            self.checkpoint_path.unlink()
            return None


class CorruptCache(DDBenchError):
    pass
