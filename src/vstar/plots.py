"""The cycle plot: held-out accuracy, the control's, and the yield per cycle with and without the hint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_SERIES = (
    ("heldout_accuracy", "held-out accuracy", "o-"),
    ("control_heldout_accuracy", "control (seed data only)", "s--"),
    ("yield", "yield: accepted / clips (direct + hinted)", "^:"),
    ("direct_yield", "direct yield: accepted without the hint", "v:"),
)


def plot_cycles(
    history: Sequence[dict[str, Any]],
    path: str | Path,
    series: Sequence[tuple[str, str, str]] = DEFAULT_SERIES,
    title: str = "Video-STaR cycles",
    ylim: tuple[float, float] | None = (0, 1.02),
    legend_loc: str = "lower right",
) -> Path:
    """Write a PNG of the per-cycle metrics in `history` (entries of `metrics.json`).

    Args:
        history: one entry per cycle, with `cycle` and the series' keys.
        path: the PNG.
        series: `(key, legend, matplotlib style)` of each line (default: the Video-STaR loop's).
        title: the plot's title.
        ylim: the y range (None: matplotlib's).
        legend_loc: where the legend goes (matplotlib's `loc`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    cycles = [c["cycle"] for c in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label, style in series:
        points = [(c, h[key]) for c, h in zip(cycles, history) if h.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("cycle")
    ax.set_ylabel("fraction")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xticks(cycles)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
