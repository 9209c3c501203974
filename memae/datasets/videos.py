"""Any folder of video files, searched recursively: what a surveillance archive looks like. Unlabelled.

Expected tree: anything, for example::

    archive/
    ├── cam01/2024-05-01T08.mp4
    ├── cam01/2024-05-01T09.mp4
    └── cam02/night/0001.avi

Every file decord can read counts (by suffix: .avi .mp4 .mkv .mov ...). A video's id is its file stem; when two
files of a split share a stem, their ids become their paths relative to the root (`cam01__0001`). The split is
taken from the path when a folder is named train/training or test/testing, otherwise it is "train" (an unlabelled
archive is what a model is fitted on and then scored on).

    from memae.datasets import open_dataset
    records = open_dataset("videos", "/srv/archive")
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from memae.datasets.records import VIDEO_SUFFIXES, VideoRecord, select_split

_SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test"}


def read_videos(root: str | Path, split: str = "all") -> list[VideoRecord]:
    """Records of every video file under `root`, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    splits = {p: _split_of(p.relative_to(root)) for p in files}
    files.sort(key=lambda p: (splits[p] != "train", p))
    stems = Counter((splits[p], p.stem) for p in files)
    wanted = select_split(split)
    records = []
    for path in files:
        if splits[path] not in wanted:
            continue
        rel = path.relative_to(root).with_suffix("")
        video_id = path.stem if stems[(splits[path], path.stem)] == 1 else "__".join(rel.parts)
        records.append(VideoRecord(video_id, splits[path], path))
    return records


def _split_of(relative: Path) -> str:
    for part in relative.parts[:-1]:
        if part.lower() in _SPLIT_NAMES:
            return _SPLIT_NAMES[part.lower()]
    return "train"
