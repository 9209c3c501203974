"""The paper's Figure 4: inputs above their reconstructions by each model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipelines.common.figures import new_figure, save_figure


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
    figure = new_figure(figsize=(1.2 * n + 1.2, 1.25 * len(rows) + 0.4), dpi=100)
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
    return save_figure(figure, path, tight_bbox=True)
