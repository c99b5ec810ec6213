"""The one reader of `.pt` files: tensors and plain containers only, never code.

`torch.load(weights_only=False)` unpickles any object, and unpickling can call any function: a `.pt` planted in
a results folder (what researchers share to reproduce a table) or a cache would run its code the moment ddbench
read it. `load_tensors` reads with `weights_only=True` (tensors, dicts, lists, tuples, strings, numbers, None)
plus the few types ddbench itself saves that torch does not accept by default (`ALLOWED`); a file that needs
anything else is refused, unread, with one line naming the file and the globals it asks for (read from the
pickle's opcodes, nothing executed). Every ddbench loader of `.pt` files goes through it.

`UnsafeFile` is a `DDBenchError`: where the file is user input it ends the command with exit 2; a cache that
holds one is deleted and rebuilt by its caller, which says so in the log.
"""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import DDBenchError


def _allowed() -> list[Any]:
    """Types ddbench has written into its own files that `weights_only` does not accept by default: numpy
    scalars and dtypes (a method's `meta` may hold e.g. an `np.float64`; torch's docs name these three for it)."""
    import numpy as np

    out: list[Any] = [np.dtype]
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved np.core to np._core
    out.append(core.multiarray.scalar)
    out += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                                        "uint8", "bool")]
    return out


class UnsafeFile(DDBenchError):
    """A `.pt` file that holds more than tensors and plain containers: refused without running anything in it."""

    def __init__(self, path: Path | str, holds: list[str]):
        self.path, self.holds = Path(path), holds
        what = ", ".join(holds[:4]) + (f" and {len(holds) - 4} more" if len(holds) > 4 else "") if holds else "objects"
        super().__init__(f"{path}: refused to load, it holds {what} (code that would run when read); ddbench reads "
                         "only tensors and plain containers from .pt files")


def unsafe_globals(path: Path | str) -> list[str]:
    """The globals a `.pt` file names that `load_tensors` would refuse (read from its pickle, nothing executed)."""
    import torch

    allowed = {f"{t.__module__}.{t.__qualname__}" for t in _allowed()}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file or a bare pickle: read its opcodes instead
        names = _pickle_globals(Path(path))
    return [n for n in names if n not in allowed and not n.startswith(("torch.", "collections.OrderedDict"))]


def _pickle_globals(path: Path) -> list[str]:
    """Every `module.name` the pickles in a file import (GLOBAL and STACK_GLOBAL opcodes), without running any."""
    import pickletools

    found: list[str] = []
    try:
        with open(path, "rb") as fh:
            while True:
                strings: list[str] = []
                for op, arg, _ in pickletools.genops(fh):
                    if op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # noqa: BLE001 - the end of the file, or bytes that are not a pickle
        pass
    return sorted(set(found))


def load_tensors(path: Path | str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path)` reading tensors and plain containers only; UnsafeFile (one line) for anything else.

    Other failures (missing, truncated, not a torch file) raise as torch raises them."""
    import torch

    try:
        with torch.serialization.safe_globals(_allowed()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc).lower():
            raise
        holds = unsafe_globals(path) or sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        if not holds:  # no object named anywhere: bytes that are not a torch file (or a truncated one), not code
            raise
        raise UnsafeFile(path, holds) from None


def drop_refused(exc: UnsafeFile, log: Callable[[str], None] | None = None, then: str = "rebuilding it") -> None:
    """A cache file that was refused: delete it (it is rebuilt) and say so in the log (stderr without one)."""
    exc.path.unlink(missing_ok=True)
    message = f"{exc}; deleted it, {then}"
    if log is None:
        print(f"warning: {message}", file=sys.stderr)
    else:
        log(message)


__all__ = ["load_tensors", "UnsafeFile", "unsafe_globals", "drop_refused"]
