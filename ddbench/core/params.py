"""Settings: `Param`, one hyper-parameter of a plugin with the citation of its default, and `resolve_params`,
defaults overridden layer by layer (plugins.toml, then `--set`), every value coerced and range-checked. A
contract of every kind that has settings; `ddbench.api` re-exports both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import DDBenchError
from .roles import AUGMENTATION, ROLES


@dataclass(frozen=True)
class Param:
    """One hyper-parameter of a method or protocol.

    `source` says where the default comes from (paper table or reference code): the benchmark promises
    faithful defaults, so every one carries its citation and `ddbench list --params` prints it.

    `role` (protocols only) tells the host what the setting means, so that it names no protocol's keys:
    IMPLEMENTATION (the implementation `--eval-impl` picks) and SPEED (any other speed- or memory-only knob)
    never split runs that are compared; NETWORKS (`--eval-models`) is a sample size, so runs are pooled;
    EPOCHS (`--eval-epochs`) is shown and the full-data reference ignores it; AUGMENTATION (a bool) is the
    axis of the ARS score; PRECISION (the arithmetic, e.g. fp32 or bf16) never splits compared runs either,
    which a protocol may declare only once its lower precision passed an equivalence test against fp32.
    "" (the default): the setting changes what is measured. docs/plugins.md#setting-roles.
    """

    default: Any
    source: str = ""
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    check: Callable[[str, Any], None] | None = None  # raises DDBenchError for a value type and range allow
    role: str = ""

    def __post_init__(self) -> None:
        if self.role and self.role not in ROLES:
            raise ValueError(f"Param role {self.role!r} is not one of: {', '.join(ROLES)}")
        if self.role == AUGMENTATION and not isinstance(self.default, bool):
            raise ValueError(f"a Param of role {AUGMENTATION!r} is an on/off switch; its default must be a bool")

    def coerce(self, key: str, value: Any) -> Any:
        """Convert a value (often a string from `--set`) to the default's type and check its range."""
        kind = type(self.default)
        try:
            if self.default is None:
                out = value if not isinstance(value, str) else _parse_scalar(value)
                numeric = self.min is not None or self.max is not None  # bounds make an unset-by-default Param a number
                if numeric and out is not None and (isinstance(out, (bool, str)) or not isinstance(out, (int, float))):
                    raise DDBenchError(f"{key}={value!r} is not allowed; give a number"
                                       + (f" >= {self.min}" if self.min is not None else "")
                                       + (f" <= {self.max}" if self.max is not None else "") + " (or leave it unset)")
            elif kind is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    out = low in ("true", "1", "yes", "on")
                else:
                    out = bool(value)
            elif kind is int:
                number = float(value)  # accepts "1e3" and 1000.0, refuses 2.5
                if isinstance(value, bool) or not number.is_integer():
                    raise ValueError(value)
                out = int(number)
            elif kind is float:
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError(value)
            elif kind is str:
                out = str(value)
            elif kind in (list, tuple):
                if isinstance(value, str):
                    out = kind(_parse_scalar(v) for v in value.split(",") if v.strip())
                else:
                    out = kind(value)
            else:
                out = value
        except (TypeError, ValueError):
            raise DDBenchError(
                f"{key}={value!r} is not a valid {kind.__name__} (default {self.default!r})"
            ) from None
        if self.choices is not None and out not in self.choices:
            raise DDBenchError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, self.choices))}")
        if self.min is not None and out is not None and not isinstance(out, (str, list, tuple)) and out < self.min:
            raise DDBenchError(f"{key}={value!r} is below the minimum {self.min}")
        if self.max is not None and out is not None and not isinstance(out, (str, list, tuple)) and out > self.max:
            raise DDBenchError(f"{key}={value!r} is above the maximum {self.max}")
        if self.check is not None:
            self.check(key, out)
        return out


def _parse_scalar(text: str) -> Any:
    text = text.strip()
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def resolve_params(owner: str, spec: Mapping[str, Param], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then each layer of overrides in turn; an unknown key names the allowed ones."""
    values = {k: p.default for k, p in spec.items()}
    for layer in layers:
        for key, value in layer.items():
            if key not in spec:
                allowed = ", ".join(sorted(spec)) or "(none)"
                raise DDBenchError(f"unknown setting {key!r} for {owner}; allowed: {allowed}")
            values[key] = spec[key].coerce(key, value)
    return values
