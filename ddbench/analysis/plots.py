"""The report's figures: one matplotlib figure per plot, drawn off-screen (Agg, no display) and saved atomically.

Shared by the accuracy plots of report_plots.py and the accuracy-per-second curves of report_curves.py, which
import it rather than each other."""
from __future__ import annotations

from pathlib import Path


def figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def finish(fig, ax, xlabel: str, title: str, target: Path) -> Path:
    """Labels, grid and legend shared by the accuracy plots, then an atomic save."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, target)


def save(fig, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(target)
    return target
