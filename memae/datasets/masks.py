"""Pixel masks on demand: they are as large as the video, so records only say where they are."""

from __future__ import annotations

import numpy as np
from PIL import Image

from memae.datasets.label_files import load_npy
from memae.datasets.records import VideoRecord


def load_masks(record: VideoRecord) -> np.ndarray | None:
    """The record's pixel masks as (T, H, W) bool at the archive's resolution, or None when it has none."""
    ref = record.masks
    if ref is None:
        return None
    if ref.kind == "image-dir":
        return np.stack([np.asarray(Image.open(p).convert("L")) > 127 for p in ref.paths])
    if ref.kind == "npy":
        return load_npy(ref.paths[0]).astype(bool)
    if ref.kind == "avenue-mat":
        from memae.datasets.avenue import load_vol_label

        return np.stack([np.asarray(m) > 0 for m in load_vol_label(ref.paths[0])])
    raise ValueError(f"{record.video_id}: unknown mask kind {ref.kind!r}")
