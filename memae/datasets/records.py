"""What every dataset reader yields: one `VideoRecord` per video, whatever the archive's layout.

Readers only list and parse ground truth; they never decode pixels (see `decode.py`), so listing a large archive is
cheap. Problems found while listing (a missing ground-truth file, labels of the wrong length) are attached to the
record instead of raised, so one bad video never hides the others.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from memae.files import safe_name

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".flv", ".wmv", ".ts", ".3gp",
                  ".mts", ".m2ts", ".asf", ".vob", ".mxf",  # camcorders, older recorders, broadcast
                  ".h264", ".264", ".h265", ".265", ".hevc")  # bare streams, as recorders export them (no frame count)


class Issue(NamedTuple):
    """Something wrong or worth saying about one file: what a report prints."""

    file: str
    reason: str


class MaskRef(NamedTuple):
    """Where a video's pixel masks live; `masks.load_masks` reads them on demand (they are large)."""

    kind: str  # "image-dir" (one binary image per frame), "avenue-mat" (cell array volLabel), "npy" (T,H,W)
    paths: tuple[Path, ...]


@dataclass(frozen=True, eq=False)
class VideoRecord:
    """One video of an archive.

    Attributes:
        video_id: the dataset's own name for the video (`Test001`, `01_0014`, a file's stem).
        split: "train" or "test".
        source: the video file, or the folder holding the frame images.
        frame_files: the frame images in playing order; empty for a video file.
        num_frames: frame count; None for a video file that was not probed (decoding counts them anyway).
        fps: frames per second when known.
        labels: per-frame 0/1 (int8), frame i of the video is label i; None when unknown.
        label_source: the file the labels were read from, for reports.
        masks: where the pixel masks are, when the archive has them.
        known_normal: the archive declares every frame normal (the training split of a benchmark).
        problems: reasons this video cannot be used as it is (missing or inconsistent ground truth, ...).
        notes: things worth reporting that do not stop its use (two ground truths that disagree, ...).
    """

    video_id: str
    split: str
    source: Path
    frame_files: tuple[Path, ...] = ()
    num_frames: int | None = None
    fps: float | None = None
    labels: np.ndarray | None = None
    label_source: Path | None = None
    masks: MaskRef | None = None
    known_normal: bool = False
    problems: tuple[Issue, ...] = field(default=())
    notes: tuple[Issue, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"{self.video_id}: split must be one of {SPLITS}, not {self.split!r}")

    @property
    def is_video_file(self) -> bool:
        """True for a container file (decoded with decord), False for a folder of frame images (Pillow)."""
        return not self.frame_files and self.source.suffix.lower() in VIDEO_SUFFIXES

    def stamp(self) -> tuple[int, int]:
        """(bytes, latest modification time in ns) of what the video is read from: its file, or its frame images and
        their folder. A rerun compares stamps to tell a video that changed since it was read from one that did not.

        Raises:
            OSError: a file that cannot be read.
        """
        if self.frame_files:
            stats = [os.stat(f) for f in self.frame_files]
            folder = os.stat(self.source)
            return sum(s.st_size for s in stats), max([folder.st_mtime_ns, *(s.st_mtime_ns for s in stats)])
        info = os.stat(self.source)
        return info.st_size, info.st_mtime_ns

    def frame_labels(self, num_frames: int) -> np.ndarray:
        """Per-frame labels for `num_frames` decoded frames: 0/1 where known, -1 where unknown."""
        if self.labels is not None:
            return self.labels.astype(np.int8)
        return np.full(num_frames, 0 if self.known_normal else -1, dtype=np.int8)


def refuse_duplicate_ids(records: list[VideoRecord]) -> list[VideoRecord]:
    """`records`, where videos of one split would share an id, or a file name on a case-insensitive filesystem, each
    carrying a problem that names the other files: no video is ever stored or scored under another one's name, and
    which one wins never depends on listing order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault((record.split, safe_name(record.video_id).casefold()), []).append(i)
    checked = list(records)
    for members in groups.values():
        for i in members if len(members) > 1 else ():
            record = records[i]
            others = [records[j] for j in members if j != i]
            same = all(o.video_id == record.video_id for o in others)
            names = ", ".join(str(o.source) for o in others)
            reason = (f"has the same id ({record.video_id!r}) as {names}" if same else
                      f"its id {record.video_id!r} differs only in case from that of {names} (their files would "
                      "collide on a case-insensitive filesystem)")
            issue = Issue(str(record.source), f"{reason}: rename one of them")
            checked[i] = dataclasses.replace(record, problems=(issue, *record.problems))
    return checked


def labels_from_ranges(ranges: list[tuple[int, int]], num_frames: int) -> np.ndarray:
    """0/1 labels from half-open, 0-based anomalous ranges [start, stop)."""
    labels = np.zeros(num_frames, dtype=np.int8)
    for start, stop in ranges:
        labels[start:stop] = 1
    return labels


def ranges_from_labels(labels: np.ndarray) -> list[tuple[int, int]]:
    """Half-open, 0-based [start, stop) runs of label 1; the inverse of `labels_from_ranges`."""
    padded = np.concatenate([[0], (np.asarray(labels) == 1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def sorted_images(folder: Path) -> tuple[Path, ...]:
    """Frame images of a folder in playing order (numeric when the stems are numbers), hidden files skipped."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return tuple(sorted(files, key=_natural_key))


def _natural_key(path: Path) -> tuple:
    stem = path.stem
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def select_split(split: str) -> tuple[str, ...]:
    """The splits a reader should list for `split` ("train", "test" or "all")."""
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    return (split,)
