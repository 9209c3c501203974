"""Figures written with matplotlib's Agg canvas: no display, no pyplot state, safe in jobs, workers and tests.

Each stage draws its own figures (`pipelines/train/plots.py`, `pipelines/score/plots.py`, ...) with these two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A Figure with its own Agg canvas (kwargs as for `Figure`, e.g. figsize and dpi).

    matplotlib is imported here, when a figure is drawn: importing it costs about half a second of CPU, which every
    Ray worker that unpickles a training or scoring function would otherwise pay.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, tight_bbox: bool = False) -> Path:
    """Lays the figure out and writes it as PNG at `path`, creating parent folders; returns the path.

    `tight_bbox` crops to the drawn content (image grids); otherwise the layout engine fits the panels.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight_bbox:
        figure.savefig(path, bbox_inches="tight")
    else:
        figure.tight_layout()
        figure.savefig(path)
    return path
