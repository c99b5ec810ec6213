"""The report's pictures: accuracy against IPC, budget runs against the reference, and the image grids copied
beside report.md (the accuracy-per-second curves are report_curves.py's).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .plots import figure, finish
from .report_cells import Section, shipped_name, variant_name

# --------------------------------------------------------------------------------------------------
# Plots (matplotlib's object API with the Agg canvas: no global backend state, no display needed)
# --------------------------------------------------------------------------------------------------


def plot_accuracy_vs_ipc(sec: Section, target: Path) -> Path:
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    for v in sec.variants:
        xs, ys, es = [], [], []
        for ipc in sec.ipcs:
            c = sec.cell(v, ipc)
            if c is not None and c.mean is not None:
                xs.append(ipc)
                ys.append(c.mean)
                es.append(c.std or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=variant_name(v))
    if sec.ipcs and max(sec.ipcs) / min(sec.ipcs) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(sec.ipcs)
    ax.set_xticklabels([str(i) for i in sec.ipcs])
    return finish(fig, ax, "images per class (IPC)", f"{sec.dataset}, protocol {sec.protocol}: accuracy vs IPC", target)


def plot_budget_vs_reference(sec: Section, target: Path) -> Path | None:
    """Budget runs at the images per class each produced, against the reference's accuracy-vs-IPC curve.

    A budget buys images; whether they are worth more than real ones is a question at equal count, so the x
    axis is images per class and the reference method (random real) is the line every point is read against."""
    budgets = sec.budgets
    if not budgets:
        return None
    fig = figure()
    ax = fig.add_subplot(1, 1, 1)
    for name, style in ((sec.reference, "--"), (shipped_name(str(sec.reference)), ":")):
        ref = [(ipc, c) for ipc in sec.ipcs if (c := sec.cells.get((name, None, ipc))) and c.mean is not None]
        if ref:
            ax.errorbar([i for i, _ in ref], [c.mean for _, c in ref], yerr=[c.std or 0.0 for _, c in ref],
                        color="0.3", linestyle=style, marker="s", capsize=3, label=f"{name}, reference")
    for method, budget in [v for v in sec.variants if v[1] is not None]:
        runs = [r for (m, b, _), c in sec.cells.items() if (m, b) == (method, budget) for r in c.ok if r.accuracies]
        if runs:
            ax.plot([r.ipc for r in runs], [sum(r.accuracies) / len(r.accuracies) for r in runs], "o",
                    label=f"{variant_name((method, budget))}, one point per run")
    ax.set_xscale("log")
    return finish(fig, ax, "images per class (IPC; a budget run's: the IPC it produced)",
                   f"{sec.dataset}, protocol {sec.protocol}: budget runs at equal count", target)


# --------------------------------------------------------------------------------------------------
# Image grids
# --------------------------------------------------------------------------------------------------


def copy_grids(sec: Section, report_dir: Path, folder: str) -> None:
    """For each method and IPC, the image grid of its lowest-seed ok run (saved as runs/<run_id>/grid.png)."""
    for (method, budget, ipc), cell in sec.cells.items():
        for r in sorted(cell.ok, key=lambda r: (r.seed or 0)):
            src = Path(r.artifact).parent / "grid.png" if r.artifact else None
            if src is None or not src.is_file():
                continue
            name = f"{method}{'' if budget is None else f'-b{budget:g}'}-ipc{ipc}.png"
            dst = report_dir / folder / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            cell.grid = dst.relative_to(report_dir)
            break
