"""The sweep plot: the objective against each searched setting (the paper's Figure 7 for memory size)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator

from pipelines.common.figures import new_figure, save_figure


def sweep_plot(
    trials: Sequence[Mapping[str, float]], objective: str, settings: Sequence[str], path: str | os.PathLike
) -> Path:
    """The objective of each trial against each searched setting, one panel per setting: against memory size it is
    the paper's Figure 7 (robustness to the memory size). Positive settings spanning over a decade (alpha, the
    learning rate) get a log axis; where a value was tried more than once a line joins the means.

    Args:
        trials: one mapping per trial with the settings and the objective (trials without it are left out).
        objective: the key to plot, e.g. `val_auc_micro` or `holdout_error`.
        settings: the keys to plot against, e.g. `("mem_dim", "alpha")`.
        path: where the PNG goes.
    """
    measured = [t for t in trials if t.get(objective) is not None]
    figure = new_figure(figsize=(4.5 * len(settings), 3.6), dpi=100)
    axes = figure.subplots(1, len(settings), squeeze=False)[0]
    for ax, setting in zip(axes, settings, strict=True):
        x = np.array([t[setting] for t in measured], dtype=float)
        y = np.array([t[objective] for t in measured], dtype=float)
        ax.scatter(x, y, color="C0", zorder=3)
        values = np.unique(x)
        if len(values) < len(x):
            ax.plot(values, [y[x == v].mean() for v in values], color="C0", alpha=0.6, label="mean")
            ax.legend(fontsize=8)
        if len(x) and x.min() > 0 and x.max() / x.min() > 10:
            ax.set_xscale("log")
            if len(values) <= 8 and np.all(values == np.round(values)):  # memory sizes: label the sizes tried
                ax.set_xticks(values, [f"{v:g}" for v in values])
                ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(setting)
        ax.set_ylabel(objective)
        ax.set_title(f"{objective} vs {setting}")
        ax.grid(alpha=0.3)
    return save_figure(figure, path)
