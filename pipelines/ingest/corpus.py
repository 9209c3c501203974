"""What an ingested corpus holds, from its manifest: frame size, channels, preprocessing, labelled videos.

Training, tuning and scoring all need to know whether the stored frames fit a model, and the validation and
scoring jobs need per-frame labels; this reads them once, the same way for all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memae.models import DOWNSAMPLING_3D
from pipelines.ingest.clips import read_video_labels
from pipelines.ingest.manifest import Manifest, ManifestEntry

log = logging.getLogger(__name__)
_told: set[Path] = set()  # folders whose id migration was already announced in this process


@dataclass(frozen=True)
class Corpus:
    """An ingested folder and its manifest."""

    path: Path
    manifest: Manifest

    @classmethod
    def open(cls, shards_dir: str | Path) -> Corpus:
        """The corpus at `shards_dir`; a manifest with ids of an earlier version is read under today's ids, which is
        said once (rerunning the ingest writes them)."""
        path = Path(shards_dir).resolve()
        manifest = Manifest.read(path)
        if manifest.migration_note() and path not in _told:
            _told.add(path)
            log.warning("%s: %s; rerun the ingest to record them", path, manifest.migration_note())
        return cls(path, manifest)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the stored frames.

        Raises:
            ValueError: when the videos were stored at different sizes (or none is ingested).
        """
        shape = self.manifest.frame_shape
        if shape is None:
            raise ValueError(f"{self.path}: no single frame size (videos stored at different sizes, or none "
                             "ingested); re-ingest with one --size")
        return shape

    @property
    def channels(self) -> int:
        return self.frame_shape[2]

    def check_fits(self, clip_len: int) -> None:
        """The 3D network halves T three times and H, W four times: refuse sizes it cannot reconstruct."""
        height, width, _ = self.frame_shape
        t, h, w = DOWNSAMPLING_3D
        if clip_len % t or height % h or width % w:
            raise ValueError(
                f"{self.path}: frames of {height}x{width} in clips of {clip_len} do not fit the network (clip length "
                f"a multiple of {t}, height and width of {h}); re-ingest with e.g. --size 64x64 or pick another preset"
            )

    def check_matches(self, other: Corpus) -> None:
        if self.frame_shape != other.frame_shape:
            raise ValueError(f"{self.path} stores frames {self.frame_shape} but {other.path} stores "
                             f"{other.frame_shape}: ingest both with the same --size and colour")

    def videos(self, split: str | None = None) -> list[ManifestEntry]:
        """Manifest entries of the ingested videos of a split."""
        return self.manifest.select(split)

    def labelled_videos(self, split: str = "test") -> tuple[dict[str, int], dict[str, np.ndarray]]:
        """(frames per video, per-frame labels) of the videos of `split` that carry labels."""
        entries = [v for v in self.manifest.select(split) if v.labelled]
        num_frames = {v.video_id: int(v.num_frames) for v in entries}
        labels = {v.video_id: read_video_labels(self.path, v.video_id, split) for v in entries}
        return num_frames, labels

    def model_preprocessing(self, clip_len: int, error_rule: str, frame_rule: str) -> dict[str, Any]:
        """What a registered model needs to score new footage the way it was trained."""
        height, width, channels = self.frame_shape
        return {
            "clip_len": clip_len, "height": height, "width": width, "channels": channels,
            "pixel_range": [-1.0, 1.0], "input_layout": "N x C x T x H x W float32",
            "error_rule": error_rule, "frame_rule": frame_rule,
            "ingest": self.manifest.preprocessing.to_json(),
        }
