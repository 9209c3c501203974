"""Frame-level detection metrics in the paper's protocol, and the pixel-level AUROC of error maps.

The paper's number is the micro AUC: the frames of all test videos concatenated into one ROC. The macro AUC
(the mean over videos that contain both classes) is reported by later work and is kinder to datasets whose
videos differ in difficulty. Frames without a score (NaN, e.g. the ends of videos under the official
clip-centre rule) or without a label (-1) are left out of every metric.

The pixel-level AUROC pools every pixel of every scored frame into one ROC against ground-truth masks, as the
localisation benchmarks of later work do (Ped2, Avenue and ShanghaiTech ship masks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

# scikit-learn is imported by the functions that use it: it costs about 0.7 s of CPU to import, and every Ray worker
# that unpickles a training or scoring function imports this module without needing a metric.

# The pixel AUROC pools at most this many pixels (about 100 MB of working arrays), subsampling beyond it.
MAX_PIXELS = 2_000_000


@dataclass(frozen=True)
class FrameMetrics:
    auc_micro: float
    auc_macro: float  # NaN when no video holds both classes
    eer: float
    average_precision: float
    num_frames: int
    num_anomalous: int
    num_videos_macro: int

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def scored_frames(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops frames without a score or a label; raises if the two arrays disagree in length."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.shape[0]} labels but {scores.shape[0]} scores")
    keep = ~np.isnan(scores) & (labels >= 0)
    return labels[keep].astype(np.int64), scores[keep]


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """The error rate where false positives and false negatives are equally frequent (interpolated)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    crossing = int(np.argmax(fnr <= fpr))
    if crossing == 0:
        return float(fpr[0])
    # Linear interpolation between the two ROC points around the crossing.
    d_prev = fnr[crossing - 1] - fpr[crossing - 1]
    d_next = fpr[crossing] - fnr[crossing]
    t = d_prev / (d_prev + d_next) if d_prev + d_next > 0 else 0.0
    return float(fpr[crossing - 1] + t * (fpr[crossing] - fpr[crossing - 1]))


def frame_metrics(labels: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]) -> FrameMetrics:
    """Micro and macro AUC, EER and AP over videos, each given as per-frame labels (0/1/-1) and scores.

    Scores must grow with abnormality (e.g. `memae.scoring.anomaly_score`).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    missing = set(labels) ^ set(scores)
    if missing:
        raise ValueError(f"videos with labels but no scores or the reverse: {sorted(missing)[:5]}")
    per_video = {vid: scored_frames(labels[vid], scores[vid]) for vid in sorted(labels)}
    all_labels = np.concatenate([lab for lab, _ in per_video.values()]) if per_video else np.zeros(0, np.int64)
    all_scores = np.concatenate([sc for _, sc in per_video.values()]) if per_video else np.zeros(0)
    if all_labels.size == 0 or all_labels.min() == all_labels.max():
        raise ValueError("frame AUC needs both normal and anomalous scored frames")
    macro = [roc_auc_score(lab, sc) for lab, sc in per_video.values() if lab.size and lab.min() != lab.max()]
    return FrameMetrics(
        auc_micro=float(roc_auc_score(all_labels, all_scores)),
        auc_macro=float(np.mean(macro)) if macro else float("nan"),
        eer=equal_error_rate(all_labels, all_scores),
        average_precision=float(average_precision_score(all_labels, all_scores)),
        num_frames=int(all_labels.size),
        num_anomalous=int(all_labels.sum()),
        num_videos_macro=len(macro),
    )


def pixel_auc(
    masks: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray], max_pixels: int = MAX_PIXELS, seed: int = 0
) -> float:
    """Pixel-level AUROC over videos: every pixel of every scored frame of every video in one ROC.

    Args:
        masks: per video, frames x h x w ground truth (non-zero: anomalous), at any resolution.
        maps: per video, frames x H x W per-pixel errors (e.g. `memae.scoring.error_maps`); a frame with a NaN is
            unscored and left out.
        max_pixels: beyond this many scored pixels in all, a uniform random subset of this size (drawn with `seed`,
            so the same inputs give the same number) is used, so memory stays bounded.

    Pixels are compared at the masks' resolution: each mask pixel takes the error of the map pixel that holds its
    centre (nearest neighbour), so the ground truth is never resampled. NaN when the pixels hold one class only.
    """
    from sklearn.metrics import roc_auc_score

    missing = set(masks) ^ set(maps)
    if missing:
        raise ValueError(f"videos with masks but no error maps or the reverse: {sorted(missing)[:5]}")
    videos = []
    for vid in sorted(masks):
        mask, emap = np.asarray(masks[vid]), np.asarray(maps[vid])
        if mask.ndim != 3 or emap.ndim != 3 or len(mask) != len(emap):
            raise ValueError(f"{vid}: masks {mask.shape} and error maps {emap.shape} must both be frames x height x "
                             "width, with as many frames")
        videos.append((mask, emap, np.flatnonzero(~np.isnan(emap).any(axis=(1, 2)))))
    sizes = [len(scored) * mask.shape[1] * mask.shape[2] for mask, _, scored in videos]
    total = sum(sizes)
    if total > max_pixels:
        picks = np.sort(np.random.default_rng(seed).choice(total, size=max_pixels, replace=False))
    else:
        picks = np.arange(total)
    bounds = np.cumsum([0, *sizes])
    labels, scores = [], []
    for (mask, emap, scored), start, stop in zip(videos, bounds[:-1], bounds[1:], strict=True):
        local = picks[np.searchsorted(picks, start) : np.searchsorted(picks, stop)] - start
        frame, y, x = np.unravel_index(local, (len(scored), *mask.shape[1:]))
        frame = scored[frame]
        labels.append(mask[frame, y, x] != 0)
        scores.append(emap[frame, _nearest(y, mask.shape[1], emap.shape[1]), _nearest(x, mask.shape[2], emap.shape[2])])
    all_labels = np.concatenate(labels) if labels else np.zeros(0, bool)
    if all_labels.all() or not all_labels.any():
        return float("nan")
    return float(roc_auc_score(all_labels, np.concatenate(scores)))


def _nearest(index: np.ndarray, size: int, target: int) -> np.ndarray:
    """The pixel of a `target`-wide axis whose span holds the centre of pixel `index` of a `size`-wide one."""
    return np.minimum(((index + 0.5) * target / size).astype(np.int64), target - 1)
