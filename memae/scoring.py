"""From reconstructions to per-frame anomaly scores.

Three steps, each with the official rule and an alternative:

1. Clip error: `clip_errors(x, recon, rule)`. "l1" is the official 2021 rule (mean |r| over C, T, H, W, in the
   [-1, 1] pixel space); "l2-time" the 2019 one (per pixel, the root of the summed squared error over time and
   channels, then the mean over pixels). "patch" is the largest mean |r| over spatial windows (a quarter of the
   frame's side, half overlapping), so that a small object in a wide frame is not averaged away by the rest of the
   frame. `error_maps` keeps the per-pixel errors for localisation.
2. Clip to frame: `frames_from_clips(...)`. "centre" is the official rule: clip j covers frames j..j+T-1 and
   scores frame j + T//2 only, so the first T//2 and last T//2 - 1 frames of a video get no score (NaN).
   "mean" scores every frame with the mean of the errors of all clips that cover it; "min" with the smallest of
   them, so that a normal frame next to an anomaly is judged by a clip that does not hold it: an alarm then starts
   and ends close to the anomaly instead of up to a clip length before and after it.
3. Normalisation: the paper's per-video normality p = 1 - (e - min) / (max - min) needs the whole video;
   `GlobalNormalizer` maps errors with bounds fixed in advance, for streaming or nightly use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ErrorRule = Literal["l1", "l2-time", "patch"]
FrameRule = Literal["centre", "mean", "min"]
ERROR_RULES: tuple[str, ...] = ("l1", "l2-time", "patch")
PATCH_FRACTION = 0.25  # the "patch" rule's window side, as a fraction of the frame's side
FRAME_RULES: tuple[str, ...] = ("centre", "mean", "min")
# Every frame scored, the first and last ones included: what an archive needs. "centre" reproduces the paper.
DEFAULT_FRAME_RULE: FrameRule = "mean"


def clip_errors(x: torch.Tensor, recon: torch.Tensor, rule: ErrorRule = "l1") -> torch.Tensor:
    """One reconstruction error per clip (N x C x T x H x W inputs, or N x C x H x W images)."""
    residual = (recon - x).float()
    if rule == "l1":
        return residual.abs().flatten(1).mean(dim=1)
    if rule == "l2-time":
        if residual.dim() != 5:
            raise ValueError("the 'l2-time' rule needs clips N x C x T x H x W")
        return residual.pow(2).sum(dim=(1, 2)).sqrt().flatten(1).mean(dim=1)
    if rule == "patch":
        return largest_window_mean(residual.abs().flatten(1, -3).mean(dim=1))
    raise ValueError(f"unknown error rule {rule!r}; choose one of {ERROR_RULES}")


def largest_window_mean(maps: torch.Tensor, fraction: float = PATCH_FRACTION) -> torch.Tensor:
    """The largest mean of each N x H x W map over windows of `fraction` of its sides, with half-window steps."""
    height, width = maps.shape[-2:]
    window = (max(1, round(height * fraction)), max(1, round(width * fraction)))
    step = (max(1, window[0] // 2), max(1, window[1] // 2))
    return F.avg_pool2d(maps.unsqueeze(1), window, step).flatten(1).amax(dim=1)


def error_maps(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared error averaged over channels: N x T x H x W for clips, N x H x W for images."""
    return (recon - x).float().pow(2).mean(dim=1)


def frames_from_clips(
    clip_scores: np.ndarray,
    clip_starts: np.ndarray,
    num_frames: int,
    clip_len: int = 16,
    rule: FrameRule = "centre",
) -> np.ndarray:
    """Spreads the scores of one video's clips onto its frames; frames no clip scores are NaN.

    Args:
        clip_scores: one score per clip.
        clip_starts: the 0-based first frame of each clip (it covers start .. start + clip_len - 1).
        num_frames: frames in the video.
        clip_len: frames per clip.
        rule: "centre" (official: frame start + clip_len // 2 only), "mean" or "min" (every covered frame).
    """
    scores = np.asarray(clip_scores, dtype=np.float64)
    starts = np.asarray(clip_starts, dtype=np.int64)
    if scores.shape != starts.shape:
        raise ValueError(f"{scores.shape[0]} clip scores but {starts.shape[0]} clip starts")
    if len(starts) and (starts.min() < 0 or starts.max() + clip_len > num_frames):
        raise ValueError(f"clips of {clip_len} frames starting at {starts.min()}..{starts.max()} "
                         f"do not fit a video of {num_frames} frames")
    frame_scores = np.full(num_frames, np.nan)
    if rule == "centre":
        frame_scores[starts + clip_len // 2] = scores
        return frame_scores
    if rule == "mean":
        total = np.zeros(num_frames)
        count = np.zeros(num_frames)
        for offset in range(clip_len):
            np.add.at(total, starts + offset, scores)
            np.add.at(count, starts + offset, 1)
        covered = count > 0
        frame_scores[covered] = total[covered] / count[covered]
        return frame_scores
    if rule == "min":
        lowest = np.full(num_frames, np.inf)
        for offset in range(clip_len):
            np.minimum.at(lowest, starts + offset, scores)
        covered = np.isfinite(lowest)
        frame_scores[covered] = lowest[covered]
        return frame_scores
    raise ValueError(f"unknown frame rule {rule!r}; choose one of {FRAME_RULES}")


def normality(errors: np.ndarray) -> np.ndarray:
    """The paper's per-video regularity p = 1 - (e - min) / (max - min); NaNs stay NaN.

    A video whose scored frames all have the same error is entirely normal (p = 1) rather than a division by 0.
    """
    errors = np.asarray(errors, dtype=np.float64)
    if np.all(np.isnan(errors)):
        return errors.copy()
    low, high = np.nanmin(errors), np.nanmax(errors)
    if high - low <= 0:
        return np.where(np.isnan(errors), np.nan, 1.0)
    return 1.0 - (errors - low) / (high - low)


def anomaly_score(errors: np.ndarray) -> np.ndarray:
    """Per-video normalised anomaly score 1 - p in [0, 1]: higher is more anomalous."""
    return 1.0 - normality(errors)


@dataclass(frozen=True)
class GlobalNormalizer:
    """Maps raw errors to [0, 1] with bounds fixed in advance (e.g. from normal training clips).

    Unlike per-video min-max it scores a frame the moment it is seen, so it serves streaming and nightly
    runs. With `clip` (the default) values outside the bounds are clipped; without it they run past 0 and 1, so
    that "above 1" still means "above the upper bound" (the scoring job's `score_global`), and equal bounds map
    every scored error to 0. NaN (an unscored frame) stays NaN either way.
    """

    low: float
    high: float
    clip: bool = True

    @classmethod
    def fit(cls, errors: np.ndarray, low_quantile: float = 0.0, high_quantile: float = 1.0,
            clip: bool = True) -> GlobalNormalizer:
        """Bounds at two quantiles of the finite `errors` (min and max by default)."""
        errors = np.asarray(errors, dtype=np.float64)
        errors = errors[np.isfinite(errors)]
        if errors.size == 0:
            raise ValueError("cannot fit a normaliser on no scored errors")
        return cls(float(np.quantile(errors, low_quantile)), float(np.quantile(errors, high_quantile)), clip)

    def __call__(self, errors: np.ndarray) -> np.ndarray:
        errors = np.asarray(errors, dtype=np.float64)
        span = self.high - self.low
        if span <= 0:
            constant = (errors > self.high).astype(np.float64) if self.clip else np.zeros(errors.shape)
            return np.where(np.isnan(errors), np.nan, constant)
        scaled = (errors - self.low) / span
        return np.clip(scaled, 0.0, 1.0) if self.clip else scaled
