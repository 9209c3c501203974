"""Figures of a scoring run: per-video score curves, frame-level ROC, the worst frames with their error maps."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipelines.common.figures import new_figure, save_figure
from pipelines.score.outputs import Outputs
from pipelines.score.threshold import Threshold


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
    figure = new_figure(figsize=(4.8 * cols, 2.6 * rows), dpi=100)
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
    return save_figure(figure, path)


def roc_curves(labels: np.ndarray, scores: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """ROC curves of several scorings of the same frames, with their AUC in the legend.

    Args:
        labels: 0/1 per frame (frames labelled -1 or scored NaN are left out).
        scores: name -> per-frame scores (higher is more anomalous), aligned with `labels`.
        path: where the PNG goes.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = new_figure(figsize=(4.6, 4.4), dpi=100)
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
    return save_figure(figure, path)


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
    figure = new_figure(figsize=(1.9 * n + 0.8, 4.4), dpi=100)
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
    return save_figure(figure, path, tight_bbox=True)


def plot_outputs(out: Path, outputs: Outputs, threshold: Threshold,
                 worst: list[tuple[dict, np.ndarray, np.ndarray]]) -> list[Path]:
    """Score curves, ROC and the worst-frames grid as PNGs in OUT/plots; returns the paths written.

    Args:
        worst: (entry of `outputs.worst`, frame (H, W, C) uint8, error map (H, W)) for each frame to show.
    """
    folder = out / "plots"
    shutil.rmtree(folder, ignore_errors=True)
    paths = []
    if outputs.curves:
        # Calibrated: score_global, on which every camera's alarm line sits at 1; else the raw error.
        calibrated = threshold.calibration is not None
        curves = [{"title": c["key"], "values": c["score_global" if calibrated else "errors"], "labels": c["labels"],
                   "flags": c["flags"]} for c in outputs.curves]
        label = f"alarm line ({threshold.source})" if calibrated else None
        paths.append(score_curves(curves, folder / "score_curves.png", 1.0 if calibrated else None, label,
                                  "score_global" if calibrated else "frame error"))
    if outputs.roc is not None:
        paths.append(roc_curves(outputs.roc["labels"], outputs.roc["scores"], folder / "roc.png"))
    if worst:
        captions = [f"{w['key']} #{w['frame']}\nerror {w['error']:.4g}" for w, _, _ in worst]
        frames = np.stack([image for _, image, _ in worst])
        maps = np.stack([error_map for _, _, error_map in worst])
        paths.append(worst_frames_grid(frames, maps, captions, folder / "worst_frames.png"))
    return paths
