"""The one atomic-write helper: write to a temporary file in the target's folder, then rename it into place.

A file that exists is therefore whole (a killed process leaves at most a hidden `.NAME.*.tmp`, which is
removed on failure), which is what makes checkpoints, caches and the synthetic sets safe to resume from.
Everything in ddbench that writes a file another run may read goes through `atomic_write`.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(target: Path | str, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file next to `target`, then rename it to `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def writable_dir(path: Path | str, flag: str) -> Path:
    """Create `path` and prove a file can be written in it; DDBenchError (one line, naming `flag`) if not.

    Called before any work, so an unwritable --out or --report costs nothing."""
    from .errors import DDBenchError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(b"", path / ".ddbench-write-probe")
        (path / ".ddbench-write-probe").unlink()
    except OSError as exc:
        raise DDBenchError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def atomic_write_bytes(data: bytes, target: Path | str) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(text: str, target: Path | str) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_text(text))


def atomic_write_json(obj: Any, target: Path | str, **dump_kwargs: Any) -> Path:
    return atomic_write_text(json.dumps(obj, **dump_kwargs), target)


def atomic_save(obj: Any, target: Path | str) -> Path:
    """torch.save, atomically."""
    import torch

    return atomic_write(target, lambda tmp: torch.save(obj, tmp))


__all__ = ["writable_dir", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save"]
