"""Scoring clips with a model and turning clip errors into per-video frame scores and metrics.

One path serves validation during training, the batch-scoring job and notebooks, so a number means the same
wherever it is computed:

    scorer = VideoScorer(clip_len=16, frame_rule="centre")        # "centre" reproduces the paper
    for batch in clips:                                           # rows: video_id, start, clip
        scorer.add(batch["video_id"], batch["start"], model_clip_errors(model, x))
    frame_errors = scorer.frame_errors(num_frames)                # raw errors, NaN where unscored
    metrics = video_metrics(frame_errors, labels)                 # micro/macro AUC after per-video min-max
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from memae.calibration import calibrate_errors, unseen_video_exceedance
from memae.datasets.cameras import camera_of
from memae.metrics import FrameMetrics, frame_metrics
from memae.scoring import DEFAULT_FRAME_RULE, ErrorRule, FrameRule, anomaly_score, clip_errors, frames_from_clips
from memae.transforms import clips_to_tensor


@torch.no_grad()
def model_clip_errors(model: nn.Module, x: torch.Tensor, rule: ErrorRule = "l1") -> torch.Tensor:
    """Reconstruction error per clip of a [-1, 1] batch, as a CPU float tensor."""
    return clip_errors(x, model(x)["output"].to(x.dtype), rule).float().cpu()


def calibrate_model(
    model: nn.Module,
    clips: Iterable[np.ndarray],
    error_rule: ErrorRule = "l1",
    batch_size: int = 16,
    max_clips: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any] | None:
    """The model's error distribution on normal clips (uint8 T x H x W x C), for thresholds on unlabelled footage;
    None when `clips` yields none. See memae.calibration."""
    model.eval()
    errors: list[torch.Tensor] = []
    clips = iter(itertools.islice(clips, max_clips))
    while batch := list(itertools.islice(clips, batch_size)):
        errors.append(model_clip_errors(model, clips_to_tensor(np.stack(batch)).to(device), error_rule))
    return calibrate_errors(torch.cat(errors).numpy(), error_rule) if errors else None


def calibrate_frames(
    model: nn.Module,
    rows: Iterable[Mapping[str, Any]],
    num_frames: Mapping[str, int],
    clip_len: int,
    error_rule: ErrorRule = "l1",
    frame_rule: FrameRule = DEFAULT_FRAME_RULE,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    source: str = "",
) -> dict[str, Any] | None:
    """The model's per-frame error distribution on whole normal videos, per camera (memae.datasets.cameras), made
    exactly as the scoring job makes frame errors, and how often each video exceeds the lines the others set
    (`unseen_video_exceedance`); None when `rows` (video_id, start, uint8 clip) yields none."""
    model.eval()
    scorer = VideoScorer(clip_len, frame_rule)
    rows = iter(rows)
    while batch := list(itertools.islice(rows, batch_size)):
        x = clips_to_tensor(np.stack([row["clip"] for row in batch])).to(device)
        scorer.add([row["video_id"] for row in batch], [row["start"] for row in batch],
                    model_clip_errors(model, x, error_rule))
    frames = scorer.frame_errors(num_frames)
    if not frames:
        return None
    cameras: dict[str, list[np.ndarray]] = defaultdict(list)
    for video_id, errors in frames.items():
        cameras[camera_of(video_id)].append(errors)
    calibration = calibrate_errors(np.concatenate(list(frames.values())), error_rule, unit="frame", source=source,
                                   cameras={camera: np.concatenate(parts) for camera, parts in cameras.items()})
    exceedance = unseen_video_exceedance(frames)
    return {**calibration, "frame_rule": frame_rule, **({"unseen_video_exceedance": exceedance} if exceedance else {})}


def unique_clip_errors(starts: Iterable[int], errors: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """(starts, errors) of one video's clips sorted by start, each clip once.

    Clips arrive in any order, and a retried task or a resumed run delivers some twice; the first error to arrive
    for a start is kept, so a rerun never changes a number already reported.
    """
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    if len(starts) != len(errors):
        raise ValueError(f"{len(starts)} clip starts but {len(errors)} clip errors")
    starts, first = np.unique(starts, return_index=True)  # index of each start's first occurrence
    return starts, errors[first]


class VideoScorer:
    """Collects clip errors in any order and arrives at one error per frame for each video."""

    def __init__(self, clip_len: int, frame_rule: FrameRule = DEFAULT_FRAME_RULE) -> None:
        self.clip_len = clip_len
        self.frame_rule = frame_rule
        self._starts: dict[str, list[np.ndarray]] = defaultdict(list)
        self._errors: dict[str, list[np.ndarray]] = defaultdict(list)

    def add(self, video_ids: Sequence[str], starts: Iterable[int], errors: Iterable[float]) -> None:
        video_ids = np.asarray(video_ids)
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        errors = np.asarray(errors, dtype=np.float64).reshape(-1)
        if not len(video_ids) == len(starts) == len(errors):
            raise ValueError(f"{len(video_ids)} video ids, {len(starts)} starts and {len(errors)} errors")
        for vid in np.unique(video_ids):
            rows = video_ids == vid
            self._starts[str(vid)].append(starts[rows])
            self._errors[str(vid)].append(errors[rows])

    @property
    def video_ids(self) -> list[str]:
        return sorted(self._starts)

    def clip_errors(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(starts, errors) of one video's clips, sorted by start, duplicates (re-scored clips) dropped."""
        return unique_clip_errors(np.concatenate(self._starts[video_id]), np.concatenate(self._errors[video_id]))

    def frame_errors(self, num_frames: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Raw error per frame for every video seen; NaN where the frame rule gives no score."""
        out = {}
        for vid in self.video_ids:
            starts, errors = self.clip_errors(vid)
            out[vid] = frames_from_clips(errors, starts, num_frames[vid], self.clip_len, self.frame_rule)
        return out


def video_metrics(frame_errors: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> FrameMetrics:
    """The paper's protocol: min-max normalise each video's errors, then frame AUC over all labelled videos."""
    labelled = {vid: lab for vid, lab in labels.items() if vid in frame_errors and np.any(np.asarray(lab) >= 0)}
    scores = {vid: anomaly_score(frame_errors[vid]) for vid in labelled}
    return frame_metrics(labelled, scores)
