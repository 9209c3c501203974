"""Pseudo-anomalies made from normal clips, so that a model can be chosen without a single anomaly label.

An archive's held-out normal videos say how well a model reconstructs unseen normal footage, but not whether it
still fails on the unusual. Two cheap edits of normal clips stand in for what surveillance anomalies look like:

- `speed_up`: every k-th frame of a longer window, so people move k times faster (runners, cyclists, carts);
- `paste_patch`: a patch cut from another place and time, slid across the clip (a foreign object moving through).

A model that separates held-out normal clips from their edited copies (`pseudo_anomaly_auc`) is a better detector
of what it has never seen; the score needs no labels, so model selection stays off the videos that are reported.

    rng = np.random.default_rng(0)
    windows = ...                                   # uint8 clips of 2T frames: N x 2T x H x W x C
    normal, edited = pseudo_anomaly_pairs(windows, clip_len=16, rng=rng)
    auc = pseudo_anomaly_auc(errors_of(normal), errors_of(edited))
"""

from __future__ import annotations

import numpy as np

SPEED_FACTOR = 2  # frames skipped by `speed_up`: walkers become runners
PATCH_FRACTION = 0.2  # side of a pasted patch, as a fraction of the frame's side


def speed_up(window: np.ndarray, clip_len: int, factor: int = SPEED_FACTOR) -> np.ndarray:
    """Every `factor`-th frame of a window of at least clip_len * factor frames (T x H x W x C)."""
    if len(window) < clip_len * factor:
        raise ValueError(f"speeding a {clip_len}-frame clip up {factor}x needs {clip_len * factor} frames, "
                         f"got {len(window)}")
    return window[: clip_len * factor : factor]


def paste_patch(clip: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
                fraction: float = PATCH_FRACTION) -> np.ndarray:
    """A copy of `clip` (T x H x W x C) with a patch of a `donor` frame sliding across it in a straight line.

    The patch comes from a random place of a random donor frame and travels between two random points, about a
    patch width per four frames, so it differs from the clip both in look and in motion.
    """
    frames, height, width = clip.shape[:3]
    ph, pw = max(2, round(height * fraction)), max(2, round(width * fraction))
    top, left = rng.integers(0, height - ph + 1), rng.integers(0, width - pw + 1)
    patch = donor[rng.integers(0, len(donor)), top:top + ph, left:left + pw]
    start = np.array([rng.integers(0, height - ph + 1), rng.integers(0, width - pw + 1)], dtype=np.float64)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-12
    step = direction * max(ph, pw) / 4
    edited = clip.copy()
    for t in range(frames):
        y, x = np.clip(np.round(start + t * step), 0, [height - ph, width - pw]).astype(int)
        edited[t, y:y + ph, x:x + pw] = patch
    return edited


def pseudo_anomaly_pairs(windows: np.ndarray, clip_len: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(normal, edited) uint8 clips from N windows of 2 * clip_len frames (N x 2T x H x W x C).

    Normal clips are each window's first clip_len frames. Half of the edited clips are sped up, the other half carry
    a patch pasted from another window (from the same window when there is only one).
    """
    windows = np.asarray(windows)
    if windows.ndim != 5 or windows.shape[1] < 2 * clip_len:
        raise ValueError(f"expected windows N x {2 * clip_len} x H x W x C, got shape {windows.shape}")
    normal = windows[:, :clip_len]
    edited = np.empty_like(normal)
    for i, window in enumerate(windows):
        if i % 2 == 0:
            edited[i] = speed_up(window, clip_len)
        else:
            donor = windows[(i + 1) % len(windows)] if len(windows) > 1 else window
            edited[i] = paste_patch(window[:clip_len], donor, rng)
    return normal, edited


def pseudo_anomaly_auc(normal_errors: np.ndarray, edited_errors: np.ndarray) -> float:
    """How well clip errors separate edited clips from normal ones: 1 perfectly, 0.5 not at all."""
    from sklearn.metrics import roc_auc_score  # where used: see memae/metrics.py

    normal_errors, edited_errors = np.asarray(normal_errors, float), np.asarray(edited_errors, float)
    labels = np.concatenate([np.zeros(len(normal_errors)), np.ones(len(edited_errors))])
    return float(roc_auc_score(labels, np.concatenate([normal_errors, edited_errors])))
