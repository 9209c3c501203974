"""Figures for reports, drawn with matplotlib's Agg canvas: no display, no pyplot state, safe in jobs and tests.

Each function takes plain arrays and a path, writes one PNG and returns the path.

    reconstruction_panel(inputs, {"AE": ae_out, "MemAE": memae_out}, "figure4.png", title="normal class 5")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator


def reconstruction_panel(
    inputs: np.ndarray,
    reconstructions: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str = "",
    column_labels: Sequence[str] | None = None,
) -> Path:
    """The paper's Figure 4: a row of inputs, then one row of reconstructions per model.

    Args:
        inputs: uint8 N x H x W x C images (C = 1 is drawn grey).
        reconstructions: row name -> uint8 images of the same shape as `inputs`.
        path: where the PNG goes; parent folders are created.
        title: figure title.
        column_labels: one caption per input, e.g. its class.
    """
    rows = {"Input": inputs, **reconstructions}
    for name, images in rows.items():
        if images.shape != inputs.shape:
            raise ValueError(f"row {name!r} has shape {images.shape}, inputs have {inputs.shape}")
    n = len(inputs)
    figure = Figure(figsize=(1.2 * n + 1.2, 1.25 * len(rows) + 0.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), n, squeeze=False)
    for row, (name, images) in enumerate(rows.items()):
        for col in range(n):
            ax = axes[row, col]
            image = images[col]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=10)
            if row == 0 and column_labels is not None:
                ax.set_title(column_labels[col], fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


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
    figure = Figure(figsize=(5 * panels, 3.6), dpi=100)
    FigureCanvasAgg(figure)
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
    return _save(figure, path)


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
    figure = Figure(figsize=(4.5 * len(settings), 3.6), dpi=100)
    FigureCanvasAgg(figure)
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
    return _save(figure, path)


def score_curves(
    curves: Sequence[Mapping],
    path: str | os.PathLike,
    threshold: float | None = None,
    threshold_label: str | None = None,
    value_label: str = "frame score",
    columns: int = 3,
) -> Path:
    """Per-video frame scores, one panel each, with the ground-truth anomalous frames shaded and the threshold drawn.

    Args:
        curves: one mapping per video: `title`, `values` (per frame, NaN where unscored), optionally `labels`
            (0/1/-1 per frame, runs of 1 are shaded) and `flags` (per-frame booleans, drawn as a rug).
        path: where the PNG goes.
        threshold: a horizontal line at this value (same units as `values`).
        threshold_label: its legend entry.
        value_label: the legend entry of the curves.
        columns: panels per row.
    """
    from memae.segments import flag_runs

    rows = max(1, -(-len(curves) // columns))
    cols = min(columns, max(1, len(curves)))
    figure = Figure(figsize=(4.8 * cols, 2.6 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, curve in zip(axes, curves, strict=False):
        values = np.asarray(curve["values"], dtype=float)
        frames = np.arange(len(values))
        ax.plot(frames, values, color="C0", linewidth=1.0, label=value_label)
        labels = curve.get("labels")
        for i, (first, last) in enumerate(flag_runs(np.asarray(labels) == 1) if labels is not None else []):
            ax.axvspan(first - 0.5, last + 0.5, color="C3", alpha=0.2, label="ground truth" if i == 0 else None)
        flags = curve.get("flags")
        if flags is not None and np.any(flags):
            ax.plot(frames[np.asarray(flags, dtype=bool)], np.zeros(int(np.sum(flags))), "|", color="C1",
                    transform=ax.get_xaxis_transform(), markersize=8, label="flagged")
        if threshold is not None:
            ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label=threshold_label or "threshold")
        ax.set_title(str(curve.get("title", "")), fontsize=9)
        ax.set_xlabel("frame", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    if curves:
        axes[0].legend(fontsize=7, loc="upper left")
    return _save(figure, path)


def roc_curves(labels: np.ndarray, scores: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """ROC curves of several scorings of the same frames, with their AUC in the legend.

    Args:
        labels: 0/1 per frame (frames labelled -1 or scored NaN are left out).
        scores: name -> per-frame scores (higher is more anomalous), aligned with `labels`.
        path: where the PNG goes.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = Figure(figsize=(4.6, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    labels = np.asarray(labels)
    for name, values in scores.items():
        values = np.asarray(values, dtype=float)
        keep = ~np.isnan(values) & (labels >= 0)
        fpr, tpr, _ = roc_curve(labels[keep], values[keep])
        ax.plot(fpr, tpr, label=f"{name}: AUC {roc_auc_score(labels[keep], values[keep]):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("frame-level ROC")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(figure, path)


def worst_frames_grid(
    frames: np.ndarray, error_maps: np.ndarray, captions: Sequence[str], path: str | os.PathLike
) -> Path:
    """The most anomalous frames (top row) above their per-pixel error maps (bottom row, one colour scale).

    Args:
        frames: uint8 N x H x W x C (C = 1 is drawn grey).
        error_maps: N x H x W per-pixel errors.
        captions: one title per frame (video, frame index, error).
        path: where the PNG goes.
    """
    n = len(frames)
    figure = Figure(figsize=(1.9 * n + 0.8, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, n, squeeze=False)
    top = float(np.nanmax(error_maps)) if np.isfinite(error_maps).any() else 1.0
    image = None
    for col in range(n):
        frame = frames[col]
        axes[0, col].imshow(frame[..., 0] if frame.shape[-1] == 1 else frame, cmap="gray", vmin=0, vmax=255)
        axes[0, col].set_title(captions[col], fontsize=7)
        image = axes[1, col].imshow(error_maps[col], cmap="inferno", vmin=0.0, vmax=top or 1.0)
        for row in range(2):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].set_ylabel("frame", fontsize=9)
    axes[1, 0].set_ylabel("error map", fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes[1, :].tolist(), fraction=0.03, pad=0.01)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    """Lays the figure out and writes it as PNG at `path`, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    return path
