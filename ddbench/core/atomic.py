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
import threading
from pathlib import Path
from typing import Any, Callable


LOW_SPACE = 64 * 2**20  # bytes free below which a failed write is reported as a full disk


class DiskFull(OSError):
    """A write failed on a (nearly) full filesystem; the message says so and where, not a torch internals line."""


def _full_disk(exc: BaseException, target: Path) -> DiskFull | None:
    """A DiskFull for `exc` when it is ENOSPC, or torch.save's `[enforce fail at inline_container.cc...]` on a
    filesystem with almost nothing free (how a full disk reads through torch's zip writer)."""
    import errno
    import shutil

    nospace = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    torch_zip = isinstance(exc, RuntimeError) and "inline_container" in str(exc)
    if not (nospace or torch_zip):
        return None
    try:
        free = shutil.disk_usage(target.parent).free
    except OSError:
        return None
    if not nospace and free >= LOW_SPACE:
        return None
    return DiskFull(errno.ENOSPC, f"no space left on device writing {target} ({free / 2**20:.1f} MiB free on the "
                                  f"filesystem of {target.parent}); free some space and run again")


def atomic_write(target: Path | str, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file next to `target`, then rename it to `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        full = _full_disk(exc, target)
        if full is not None:
            raise full from exc
        raise
    return target


def missing_dirs(folder: Path | str) -> list[Path]:
    """`folder` and those of its parents that do not exist yet (what creating it would make), deepest first."""
    out = []
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder that is (still) empty, deepest first: an exit-2 error leaves no folder behind."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def writable_dir(path: Path | str, flag: str) -> Path:
    """Create `path` and prove a file can be written in it; DDBenchError (one line, naming `flag`) if not.

    Called before any work, so an unwritable --out or --report costs nothing."""
    from .errors import DDBenchError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # one probe per process and thread: pool workers probe the same --out at once, and a shared name let one
        # worker's unlink remove the probe another was about to unlink (FileNotFoundError, a false "cannot write")
        probe = path / f".ddbench-write-probe-{os.getpid()}-{threading.get_ident()}"
        atomic_write_bytes(b"", probe)
        probe.unlink()
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


__all__ = ["DiskFull", "missing_dirs", "remove_empty", "writable_dir", "atomic_write", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "atomic_save"]
