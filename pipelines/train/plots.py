"""Training curves: loss, memory usage and validation per epoch, logged with every training run."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelines.common.figures import new_figure, save_figure


def training_curves(history: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    """Per-epoch training loss, memory usage and (when present) validation AUC, one panel each.

    Args:
        history: one mapping per epoch with `epoch`, `train_loss`, `train_reconstruction`, and optionally the
            memory diagnostics (`mem_*`) and `val_auc_micro` / `val_auc_macro`.
        path: where the PNG goes.
    """
    epochs = [h["epoch"] for h in history]
    has_memory = any("mem_active_query_fraction" in h for h in history)
    has_val = any("val_auc_micro" in h for h in history)
    panels = 1 + has_memory + has_val
    figure = new_figure(figsize=(5 * panels, 3.6), dpi=100)
    axes = figure.subplots(1, panels, squeeze=False)[0]

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(h["epoch"], h[key]) for h in history if key in h]
        return [p[0] for p in points], [p[1] for p in points]

    ax = axes[0]
    for key, label in (("train_loss", "total"), ("train_reconstruction", "reconstruction (MSE)")):
        ax.plot(*series(key), marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    if has_memory:
        ax = axes[1]
        ax.plot(*series("mem_active_query_fraction"), marker="o", color="C0", label="active queries (fraction)")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of queries")
        twin = ax.twinx()
        twin.plot(*series("mem_distinct_slots"), marker="s", color="C1", label="distinct slots used")
        twin.plot(*series("mem_mean_active_slots_when_active"), marker="^", color="C2", label="slots per active query")
        twin.set_ylabel("slots")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
        ax.set_title("memory usage")
    if has_val:
        ax = axes[-1]
        for key, label in (("val_auc_micro", "frame AUC (micro)"), ("val_auc_macro", "frame AUC (macro)")):
            ax.plot(*series(key), marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_title("validation")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
        ax.grid(alpha=0.3)
    return save_figure(figure, path)
