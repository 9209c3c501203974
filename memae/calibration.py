"""Thresholds without labels: the model's error distribution on normal footage it was not trained on.

Per-video min-max needs the whole video and always calls something the most anomalous frame, even in a quiet
night. A nightly run instead compares raw frame errors with quantiles of the errors the model made on normal video:
above the 99th percentile of normal is worth a look, and on unseen normal video about 1% of frames should be.

That promise only holds when the quantiles come from video the model has not fitted: on its own training clips the
errors are smaller than on tomorrow's footage, and a threshold taken there fires far more often than it says. So
the training job holds out some normal videos and calibrates on their frame errors (`unit` "frame"), per camera
where the archive has several, since a wide street errs more than a corridor. It also holds only when those
videos are like tomorrow's: `unseen_video_exceedance` checks that without a label, each held-out video against
the line the others set.

    calibration = calibrate_errors(frame_errors_of_held_out_videos, "patch", unit="frame",
                                   source="3 held-out normal videos", cameras={"cam1": ..., "cam2": ...})
    flagged = frame_errors > threshold(calibration, 0.99, camera="cam1")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

QUANTILES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
ALARM_LEVELS = tuple(q for q in QUANTILES if q >= 0.9)  # the levels an alarm line is drawn at
DEFAULT_ALARM_LEVEL = 0.99  # the scoring job's default: about 1% of normal frames above the line
MIN_CAMERA_VALUES = 100  # fewer normal frames of a camera than this: its own quantiles are noise; use the pooled ones


def calibrate_errors(errors: np.ndarray, error_rule: str, unit: str = "clip", source: str = "",
                     cameras: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Summary of errors on normal data: quantiles keyed by their level as text (JSON-friendly).

    Args:
        errors: the pooled errors (clip errors for unit "clip", frame errors for unit "frame").
        error_rule: the rule that made them (memae.scoring.ERROR_RULES); a threshold only fits the same rule.
        unit: "frame" when they are per-frame errors, as the scoring job flags them.
        source: what normal footage they came from, for reports.
        cameras: the same errors split by camera; each with at least MIN_CAMERA_VALUES values gets its own quantiles.
    """
    summary = {"error_rule": error_rule, "unit": unit, "source": source, **_summary(errors)}
    summary["num_clips"] = summary["num_values"]  # the name registered models before frame calibration carried
    own = {camera: _summary(values) for camera, values in (cameras or {}).items()
           if np.isfinite(np.asarray(values, dtype=np.float64)).sum() >= MIN_CAMERA_VALUES}
    if own:
        summary["cameras"] = own
    return summary


def _summary(errors: np.ndarray) -> dict[str, Any]:
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        raise ValueError("cannot calibrate on no errors")
    return {
        "num_values": int(errors.size),
        "mean": float(errors.mean()),
        "std": float(errors.std()),
        "max": float(errors.max()),
        "quantiles": {str(q): float(np.quantile(errors, q)) for q in QUANTILES},
    }


def threshold(calibration: Mapping[str, Any], level: float = DEFAULT_ALARM_LEVEL,
              camera: str | None = None) -> float:
    """The error above which a frame is flagged: the calibrated quantile at `level` (interpolated if needed), of
    `camera` when it was calibrated on its own, else of all cameras pooled."""
    own = (calibration.get("cameras") or {}).get(camera) if camera is not None else None
    stored = {float(q): v for q, v in (own or calibration)["quantiles"].items()}
    if level in stored:
        return stored[level]
    levels = sorted(stored)
    if not levels[0] <= level <= levels[-1]:
        raise ValueError(f"threshold level {level} is outside the calibrated range {levels[0]}..{levels[-1]}")
    return float(np.interp(level, levels, [stored[q] for q in levels]))


def unseen_video_exceedance(frame_errors: Mapping[str, np.ndarray], levels: tuple[float, ...] = ALARM_LEVELS,
                            groups: int | None = None) -> dict[str, float] | None:
    """The share of a calibration video's frames above the line the *other* calibration videos set, averaged over
    the videos, per level (keys as in `quantiles`); None with fewer than two videos that have scored frames.

    This is what the line promises to tomorrow's footage, measured without a label: 1 - level when normal videos
    are alike, far more when their errors differ from video to video (a busy day against a quiet one) and too
    few of them set the line. Lines of single cameras are not told apart: the pooled line is the one checked.

    Args:
        groups: with many videos (an archive), deal them round-robin into this many groups and check each group
            against the line of the others: as many quantiles as groups, not as videos.
    """
    videos = _scored_frames(frame_errors.values())
    if len(videos) < 2:
        return None
    count = len(videos) if groups is None else max(2, min(groups, len(videos)))
    shares = []  # per video: its frames above each level's line of the videos outside its group
    for first in range(count):
        members = range(first, len(videos), count)
        others = np.concatenate([errors for i, errors in enumerate(videos) if i % count != first])
        lines = np.quantile(others, levels)
        shares += [(videos[i][:, None] > lines).mean(0) for i in members]
    return {str(level): float(share) for level, share in zip(levels, np.mean(shares, axis=0), strict=True)}


def later_video_exceedance(frame_errors: list[np.ndarray], levels: tuple[float, ...] = ALARM_LEVELS,
                           newest: float = 0.1) -> dict[str, float] | None:
    """The share of the newest videos' frames above the line the older ones set, averaged over those videos, per
    level; `frame_errors` in the order the videos were recorded or scored. None with fewer than two videos that have
    scored frames.

    What a line drawn on an archive promises to tomorrow's footage, measured without a label and without letting
    later footage set the line: drift (a season, a camera knocked aside) shows here first.
    """
    videos = _scored_frames(frame_errors)
    if len(videos) < 2:
        return None
    count = min(len(videos) - 1, max(1, round(newest * len(videos))))
    lines = np.quantile(np.concatenate(videos[:-count]), levels)
    shares = np.mean([(errors[:, None] > lines).mean(0) for errors in videos[-count:]], axis=0)
    return {str(level): float(share) for level, share in zip(levels, shares, strict=True)}


def _scored_frames(frame_errors: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Each video's finite frame errors, leaving out videos without any."""
    videos = [np.asarray(errors, dtype=np.float64) for errors in frame_errors]
    return [errors[np.isfinite(errors)] for errors in videos if np.isfinite(errors).any()]
