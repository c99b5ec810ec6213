"""The scores as tables: DD-Ranking's scores per cell, the cross-architecture tables, and the section `ddbench
report` adds (terminal text, markdown and JSON), from scores.py's computed cells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import DDBenchError
from ..core.records import evaluation_settings
from ..core.tables import markdown_table, plain_table
from ..host.plugins import Registry, registry_or_default
from .scores import (ARS_WEIGHT, LRS_WEIGHT, Scored, as_records, augmented, epochs_of,
                     reference_names, score_rows)


# --------------------------------------------------------------------------------------------------
# Tables the report shows
# --------------------------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 2, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def score_table(scored: list[Scored], method_order: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Rows: cells; columns: accuracy, IOR, HLR (percentage points), LRS, ARS (x100)."""
    order = list(method_order or [])
    header = ["method", "model", "IPC", "aug", "epochs", "accuracy", "random real", "full data",
              "IOR", "HLR", "LRS", "ARS"]
    body = []
    for s in sorted(scored, key=lambda s: (order.index(s.method) if s.method in order else len(order), s.method,
                                           s.model, s.ipc, s.budget or 0, not s.augmented, s.epochs or 0)):
        name = s.method if s.budget is None else f"{s.method} ({s.budget:g} s)"
        aug = "-" if s.augmented is None else ("on" if s.augmented else "off")
        acc = s.accuracy_text()
        rnd = _pct(s.random_accuracy) + ("" if s.random_source in (None, "local") else f" ({s.random_source})")
        body.append([name, s.model, str(s.ipc), aug, "-" if s.epochs is None else str(s.epochs), acc, rnd,
                     _pct(s.full_accuracy), _pct(s.ior, signed=True), _pct(s.hlr, signed=True),
                     _pct(None if s.lrs is None else 100 * s.lrs), _pct(None if s.ars is None else 100 * s.ars)])
    return header, body


def cross_architecture_table(rows: list[dict], ipc: int | None = None, method_order: list[str] | None = None,
                             model_order: list[str] | None = None, value: str = "accuracy",
                             **score_kwargs: Any) -> tuple[list[str], list[list[str]]]:
    """Rows: methods; columns: architectures; a cell is `mean ± std` (or IOR/HLR/LRS with `value`).

    One IPC and one dataset/protocol setting at a time: pass `ipc` when the rows hold several.
    """
    if value not in ("accuracy", "ior", "hlr", "lrs"):
        raise DDBenchError(f"value {value!r} is not a column of the cross-architecture table; "
                           "allowed: accuracy, ior, hlr, lrs")
    scored = [s for s in score_rows(rows, **score_kwargs) if ipc is None or s.ipc == ipc]
    if ipc is None and len({s.ipc for s in scored}) > 1:
        raise DDBenchError(f"rows hold IPC {sorted({s.ipc for s in scored})}; pick one with ipc=")
    settings = {(s.dataset, s.protocol, s.augmented, s.epochs) for s in scored}
    if len(settings) > 1:
        shown = ", ".join(f"{d}/{p}/aug {a}/epochs {e}" for d, p, a, e in sorted(settings, key=str))
        raise DDBenchError(f"rows mix datasets, protocols or evaluation settings ({shown}); select one first")
    models = list(model_order or [])
    for s in scored:
        if s.model not in models:
            models.append(s.model)
    methods = list(method_order or [])
    for s in scored:
        name = s.method if s.budget is None else f"{s.method} ({s.budget:g} s)"
        if name not in methods:
            methods.append(name)
    cell: dict[tuple[str, str], str] = {}
    for s in scored:
        name = s.method if s.budget is None else f"{s.method} ({s.budget:g} s)"
        if value == "accuracy":
            text = s.accuracy_text()
        elif value == "lrs":
            text = _pct(None if s.lrs is None else 100 * s.lrs)
        else:
            text = _pct(getattr(s, value), signed=True)
        cell[(name, s.model)] = text
    header = ["method"] + models
    body = [[m] + [cell.get((m, a), "-") for a in models] for m in methods if any((m, a) in cell for a in models)]
    return header, body




# --------------------------------------------------------------------------------------------------
# The report's extra sections
# --------------------------------------------------------------------------------------------------


@dataclass
class ScoreReport:
    """What `ddbench report` adds: the scores table, cross-architecture tables, and their JSON."""

    terminal: str
    markdown: str
    scored: list[Scored]
    cross: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"scores": [s.as_json() for s in self.scored], "cross_architecture": self.cross,
                "units": {"accuracy": "%", "ior": "percentage points", "hlr": "percentage points",
                          "lrs": "fraction in [0, 1] (shown x100)", "ars": "fraction in [0, 1] (shown x100)"}}


def _cross_tables(shown_ok: list, full_method: str, roles, method_order: list[str] | None,
                  model_order: list[str] | None, registry: Registry) -> list[tuple[str, dict[str, Any]]]:
    """(title, table) of each cross-architecture table: one per (dataset, protocol, IPC, evaluation settings)
    that has more than one architecture; runs of other epochs or augmentation never share a cell."""
    groups: dict[tuple, list] = {}
    for r in shown_ok:
        if r.method != full_method:
            groups.setdefault((r.dataset, r.protocol, r.ipc, evaluation_settings(r, roles)), []).append(r)
    out = []
    for (dataset, protocol, ipc, _), members in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if len({r.model for r in members}) < 2:
            continue
        header, body = cross_architecture_table(members, ipc=ipc, method_order=method_order, model_order=model_order,
                                                registry=registry)
        aug, epochs = augmented(members[0], roles), epochs_of(members[0], roles)
        title = (f"{dataset} · protocol {protocol} · IPC {ipc}" + ("" if epochs is None else f" · {epochs} epochs")
                 + ("" if aug is None else f" · augmentation {'on' if aug else 'off'}"))
        out.append((title, {"dataset": dataset, "protocol": protocol, "ipc": ipc, "augmented": aug, "epochs": epochs,
                            "header": header, "rows": body}))
    return out


def score_report(all_rows: list, shown_rows: list, method_order: list[str] | None = None,
                 model_order: list[str] | None = None, w: float = LRS_WEIGHT, ars_w: float = ARS_WEIGHT,
                 registry: Registry | None = None) -> ScoreReport:
    """Scores of the cells in `shown_rows` (the report's selection), references looked up in `all_rows` (the
    whole database), and one cross-architecture table per (dataset, protocol, IPC, evaluation settings) that
    has more than one architecture. Plain-text and markdown renderings share the same tables. `registry`: the
    plugins the command loaded (they name the references and the protocols' setting roles)."""
    registry = registry_or_default(registry)
    roles = registry.setting_roles()
    random_method, full_method = reference_names(registry)
    shown_ok = [r for r in as_records(shown_rows) if r.ok]
    # score every shown cell on its shown runs; references come from the whole database
    everything = {r.run_id: r for r in as_records(list(all_rows) + list(shown_rows))}  # a run counts once
    from ..store.shipped import shipped_records

    shipped = [r for d in sorted({str(r.dataset) for r in shown_ok}) for r in shipped_records(d)]
    scored = score_rows(shown_ok, w, ars_w, random_method, full_method, references=list(everything.values()),
                        shipped=shipped, registry=registry)
    text = ["== scores (DD-Ranking): accuracy ± sample std over the seeds (or networks) marked; IOR, HLR in "
            "percentage points; LRS, ARS x100 (fractions in the exponent)"]
    md = ["## Scores (DD-Ranking)", "",
          "Accuracy: the mean of the method seeds' means ± their sample std, as in the tables above (a one-seed "
          "cell: over its networks; each cell says which). IOR = accuracy − random real subset at equal count "
          "(the same IPC: a budget run's is the IPC it "
          "produced), evaluated the same way (a value marked `shipped reference` comes from the table shipped "
          "with the package, used only where this database has no such run); HLR = full real training set "
          "− accuracy (lower is better); both in percentage points. LRS = (e^α − e^−1)/(e − e^−1), α = "
          f"{w:g}·IOR − {1 - w:g}·HLR with IOR and HLR as fractions; ARS the same map of the IORs with and without "
          "augmentation. LRS and ARS are shown ×100. A `-` means the reference run is missing: `random` at that "
          "IPC, `full` (`--method full --ipc <images per class>`), or the other augmentation setting.", ""]
    if scored:
        header, body = score_table(scored, method_order)
        text.append(plain_table(header, body))
        md.append(markdown_table(header, body))
        missing = sorted({m for s in scored for m in s.missing})
        if missing:
            text.append("   missing references (each line: what, and the command that makes it):")
            text += [f"     {m}" for m in missing]
            md += ["", "Missing references:", ""] + [f"- `{m}`" for m in missing]
    else:
        text.append("(no evaluated cells)")
        md.append("No evaluated cells.")
    cross: list[dict[str, Any]] = []
    for title, table in _cross_tables(shown_ok, full_method, roles, method_order, model_order, registry):
        text += ["", f"== cross-architecture accuracy % — {title} (rows: methods, columns: evaluation architectures)",
                 plain_table(table["header"], table["rows"])]
        md += ["", f"### Cross-architecture accuracy (%): {title}", "", markdown_table(table["header"], table["rows"])]
        cross.append(table)
    return ScoreReport("\n".join(text), "\n".join(md) + "\n", scored, cross)


__all__ = ["score_table", "cross_architecture_table", "score_report", "ScoreReport"]
