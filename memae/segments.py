"""Anomalous events as a person reads them: runs of flagged frames with start and end in frames and seconds.

A nightly run flags frames whose error exceeds a threshold calibrated on normal footage; an operator wants "camera
3, 02:14-02:19", not 120 booleans. Frames without a score (NaN) are never flagged, so they end a run.
`hysteresis_flags` is how alarms are raised: an event opens above a high threshold, stays open while the score
stays above a lower one, and counts only when it lasts long enough, so one noisy frame does not wake anyone and a
real event does not flicker into many.

    flags = hysteresis_flags(frame_errors, high=threshold, low=release, min_frames=8)
    for segment in anomalous_segments(flags, frame_errors, fps=25.0):
        print(segment.start_frame, segment.end_frame, segment.start_s, segment.end_s)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """Frames start_frame..end_frame (0-based, inclusive) flagged as anomalous; times in seconds, NaN without fps."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float  # the end of the last frame: (end_frame + 1) / fps
    peak_frame: int
    peak_value: float

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame + 1

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "num_frames": self.num_frames}


def flag_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) frame of every run of True values."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def hysteresis_flags(values: np.ndarray, high: float, low: float | None = None, min_frames: int = 1) -> np.ndarray:
    """Frames inside events that open where `values` exceed `high`, last while they exceed `low` (default: `high`)
    and span at least `min_frames` frames. An event may start below `high`: it reaches back over the frames before
    the opening one that exceed `low`, so its start is where the score rose, not where it crossed the alarm line."""
    values = np.asarray(values, dtype=np.float64)
    low = high if low is None else low
    if low > high:
        raise ValueError(f"the release threshold {low} is above the alarm threshold {high}")
    above_low = np.nan_to_num(values, nan=-np.inf) > low
    above_high = np.nan_to_num(values, nan=-np.inf) > high
    flags = np.zeros(values.shape, dtype=bool)
    for first, last in flag_runs(above_low):
        if last - first + 1 >= min_frames and above_high[first:last + 1].any():
            flags[first:last + 1] = True
    return flags


def anomalous_segments(
    flags: np.ndarray, values: np.ndarray, fps: float | None = None, min_frames: int = 1
) -> list[Segment]:
    """Runs of flagged frames, each with the frame and value where `values` peaks inside it.

    Args:
        flags: per-frame booleans (True = anomalous).
        values: per-frame scores the peak is read from (NaN where unscored); same length as `flags`.
        fps: frames per second for the times; None or 0 gives NaN times.
        min_frames: shorter runs are dropped (a single noisy frame is rarely an event).
    """
    flags = np.asarray(flags, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    if flags.shape != values.shape:
        raise ValueError(f"{flags.shape[0]} flags but {values.shape[0]} values")
    seconds = (lambda frame: frame / fps) if fps else (lambda frame: float("nan"))
    segments = []
    for first, last in flag_runs(flags & ~np.isnan(values)):
        if last - first + 1 < min_frames:
            continue
        peak = first + int(np.nanargmax(values[first : last + 1]))
        segments.append(Segment(first, last, seconds(first), seconds(last + 1), peak, float(values[peak])))
    return segments
