"""Thresholds without labels: the model's error distribution on normal clips, stored with the model.

Per-video min-max needs the whole video and always calls something the most anomalous frame, even in a quiet
night. A nightly run instead compares raw errors with quantiles of the errors the model made on normal training
clips: above the 99th percentile of normal is worth a look.

    calibration = calibrate_errors(errors_on_normal_clips, error_rule="l1")
    flagged = frame_errors > threshold(calibration, 0.99)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def calibrate_errors(errors: np.ndarray, error_rule: str) -> dict[str, Any]:
    """Summary of clip errors on normal data: quantiles keyed by their level as text (JSON-friendly)."""
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        raise ValueError("cannot calibrate on no clip errors")
    return {
        "error_rule": error_rule,
        "num_clips": int(errors.size),
        "mean": float(errors.mean()),
        "std": float(errors.std()),
        "max": float(errors.max()),
        "quantiles": {str(q): float(np.quantile(errors, q)) for q in QUANTILES},
    }


def threshold(calibration: Mapping[str, Any], level: float = 0.99) -> float:
    """The error above which a frame is flagged: the calibrated quantile at `level` (interpolated if needed)."""
    stored = {float(q): v for q, v in calibration["quantiles"].items()}
    if level in stored:
        return stored[level]
    levels = sorted(stored)
    if not levels[0] <= level <= levels[-1]:
        raise ValueError(f"threshold level {level} is outside the calibrated range {levels[0]}..{levels[-1]}")
    return float(np.interp(level, levels, [stored[q] for q in levels]))
