"""Accuracy per second: runs of one method that differ only in how many matching iterations they ran, as a curve
of accuracy against the seconds spent generating once trained (`generating_seconds`), beside random real and
herding at the same count (the report's `accuracy_vs_seconds.png`).

The rule that makes a series (docs/compare.md#accuracy-per-second): in one report section (dataset, protocol,
evaluation model and settings), at one IPC and with no budget, the ok runs of one method whose method settings are
equal except for iteration-count settings, and which take at least 2 distinct values of those. Iteration-count
settings are the names in ITERATION_SETTINGS (`iterations`: DM, DC/DSA, MTT; `refine_iterations`: minmax-diffusion's
refine; `image_updates`: DC/DSA's CPU budget) and any a method declares in `Method.iteration_settings`. A warm
start `init=run:ID` counts by the method that made run ID (`run:herding`), so seeds that start from their own
seed's herding run form one line, and that run's seconds are added to the point's: a line's seconds are what its
sets cost once every model is trained. A point is one iteration count: accuracy as the report's cells (mean ±
sample std over seed means, ddbench/core/stats.py), seconds the mean over its seeds.

Why not the report's cells: a cell keeps only the newest run of a (method, IPC, seed), whatever its settings, so
an iteration sweep is read here from every config's latest run instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..core.records import RunRecord
from ..core.stats import Spread, spread

ITERATION_SETTINGS = ("iterations", "refine_iterations", "image_updates")
RUN_PREFIX = "run:"  # baselines/warm_start.py: init=run:RUN_ID
LINE_METHODS = ("herding",)  # drawn as horizontal lines with the section's reference (random real), if run


@dataclass
class Point:
    iterations: tuple  # the values of the series' iteration settings, in `Series.keys` order
    seconds: float  # mean generating seconds over seeds (generating_seconds; a warm start's source run included)
    spread: Spread
    runs: list[RunRecord] = field(default_factory=list)


@dataclass
class Series:
    method: str
    ipc: int
    keys: tuple[str, ...]  # the iteration settings that vary along it
    fixed: tuple  # the other method settings, (key, value) sorted: what the line is
    points: list[Point] = field(default_factory=list)
    label: str = ""


def iteration_keys(method: str, registry: Any = None) -> tuple[str, ...]:
    """ITERATION_SETTINGS plus what the loaded method declares (`Method.iteration_settings`)."""
    declared: Iterable[str] = ()
    if registry is not None:
        obj = registry.methods.get(method)
        declared = getattr(obj, "iteration_settings", ()) or ()
    return tuple(dict.fromkeys((*ITERATION_SETTINGS, *declared)))


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _warm_source(value: Any, by_id: Mapping[str, RunRecord]) -> RunRecord | None:
    if isinstance(value, str) and value.startswith(RUN_PREFIX):
        return by_id.get(value[len(RUN_PREFIX):].strip())
    return None


def generating_seconds(r: RunRecord) -> float:
    """A run's seconds on the curve's axis: the `SyntheticSet.generation_seconds` its method declared (the time
    spent generating once trained: sampling and refine, a matching loop, a selection), else its distill seconds
    (which also hold loading a cached generator, data preparation and any figures a method computes)."""
    declared = (r.meta or {}).get("generation_seconds")
    return float(declared) if declared is not None else float(r.distill_seconds or 0.0)


def find_series(rows: Iterable[RunRecord], by_id: Mapping[str, RunRecord], registry: Any = None) -> list[Series]:
    """The series among one section's rows (every config's latest run), per the module's rule; `by_id`: every run
    of the database, to resolve warm starts."""
    groups: dict[tuple, dict[tuple, list[RunRecord]]] = {}
    keys_of: dict[tuple, tuple[str, ...]] = {}
    for r in rows:
        if r.status != "ok" or not r.accuracies or r.budget is not None or r.distill_seconds is None:
            continue
        params = dict((r.config or {}).get("method_params") or {})
        keys = tuple(k for k in iteration_keys(r.method, registry) if k in params)
        if not keys:
            continue
        fixed = []
        for k, v in sorted(params.items()):
            if k in keys:
                continue
            source = _warm_source(v, by_id)
            fixed.append((k, f"{RUN_PREFIX}{source.method}" if source is not None else _hashable(v)))
        gkey = (r.method, r.ipc, tuple(fixed))
        keys_of[gkey] = keys
        groups.setdefault(gkey, {}).setdefault(tuple(_hashable(params[k]) for k in keys), []).append(r)
    out = []
    for (method, ipc, fixed), by_value in groups.items():
        if len(by_value) < 2:
            continue
        keys = keys_of[(method, ipc, fixed)]
        varying = [i for i in range(len(keys)) if len({v[i] for v in by_value}) > 1]
        series = Series(method, ipc, tuple(keys[i] for i in varying), fixed)
        for value, runs in sorted(by_value.items(), key=lambda kv: str(kv[0])):
            seconds = []
            for r in runs:
                extra = sum(generating_seconds(src) for _, v in sorted(((r.config or {}).get("method_params")
                            or {}).items()) if (src := _warm_source(v, by_id)) is not None)
                seconds.append(generating_seconds(r) + extra)
            series.points.append(Point(tuple(value[i] for i in varying), sum(seconds) / len(seconds),
                                       spread([[float(a) for a in r.accuracies] for r in runs]), runs))
        series.points.sort(key=lambda p: p.seconds)
        out.append(series)
    _label(out)
    return sorted(out, key=lambda s: (s.ipc, s.label))


def _label(series: list[Series]) -> None:
    """`dm (init=run:herding)`: the method, and the fixed settings that tell its lines apart at one IPC."""
    for s in series:
        siblings = [o for o in series if o.method == s.method and o.ipc == s.ipc]
        mine = dict(s.fixed)
        differ = [k for k in mine if any(dict(o.fixed).get(k, "-") != mine[k] for o in siblings)]
        extra = ", ".join(f"{k}={mine[k]}" for k in differ)
        s.label = f"{s.method}{f' ({extra})' if extra else ''}"


def plot_accuracy_vs_seconds(sec: Any, series: list[Series], target: Path) -> Path | None:
    """One panel per IPC with a series: each series' accuracy (mean ± std over seeds) against its mean generating
    seconds, points annotated with their iteration counts; the section's reference method (random real) and
    herding at the same IPC as horizontal lines (their own seconds are not on the axis: selections cost ~0 s of
    matching). None when the section has no series."""
    if not series:
        return None
    from ..store.shipped import row_name as shipped_name
    from .plots import figure, finish

    ipcs = sorted({s.ipc for s in series})
    fig = figure()
    fig.set_size_inches(6.4 * len(ipcs), 4.4)
    ax = None
    for n, ipc in enumerate(ipcs):
        ax = fig.add_subplot(1, len(ipcs), n + 1)
        for s in (s for s in series if s.ipc == ipc):
            pts = [p for p in s.points if p.spread.mean is not None]
            line = ax.errorbar([p.seconds for p in pts], [p.spread.mean for p in pts],
                               yerr=[p.spread.std or 0.0 for p in pts], marker="o", capsize=3,
                               label=f"{s.label} ({'/'.join(s.keys)})")
            for p in pts:
                ax.annotate("/".join(str(v) for v in p.iterations), (p.seconds, p.spread.mean), fontsize=7,
                            textcoords="offset points", xytext=(3, 3), color=line[0].get_color())
        for name, style in ((sec.reference, "--"), (shipped_name(str(sec.reference)), "--"),
                            *((m, ":") for m in LINE_METHODS)):
            cell = sec.cells.get((name, None, ipc)) if name else None
            if cell is None or cell.mean is None:
                continue
            ax.axhline(cell.mean, color="0.3" if style == "--" else "0.55", linestyle=style,
                       label=f"{name} at IPC {ipc}: {cell.mean:.2f} ({cell.spread.label()})")
            if cell.std:
                ax.axhspan(cell.mean - cell.std, cell.mean + cell.std, color="0.85", alpha=0.4)
        if n < len(ipcs) - 1:  # the last panel gets the same from `finish`, which also saves
            ax.set_xlabel(XLABEL)
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(_title(sec, ipc), fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    return finish(fig, ax, XLABEL, _title(sec, ipcs[-1]), target)


XLABEL = "seconds generating, after training (mean over seeds; a warm start's source run included)"


def _title(sec: Any, ipc: int) -> str:
    return f"{sec.dataset}, protocol {sec.protocol}, IPC {ipc}: accuracy per second"


__all__ = ["ITERATION_SETTINGS", "Point", "Series", "find_series", "iteration_keys", "plot_accuracy_vs_seconds"]
