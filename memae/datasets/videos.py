"""Any folder of video files, searched recursively: what a surveillance archive looks like. Unlabelled.

Expected tree: anything, for example::

    archive/
    ├── cam01/2024-05-01T08.mp4
    ├── cam01/2024-05-01T09.mp4
    └── cam02/night/0001.avi

Every file decord can read counts (by suffix: .avi .mp4 .mkv .mov ...). A video's id is its path under the root with
its suffix, with forward slashes (`cam02/night/0001.avi`): unique, and stable however the archive grows, so that a
nightly job recognises yesterday's videos. The split is taken from the path when a folder is named train/training or
test/testing, otherwise it is "train" (an unlabelled archive is what a model is fitted on and then scored on).

Links are not followed out of the root, nor into folders; a video-named link that leads nowhere, loops or leaves the
root is listed with that problem (`memae.datasets.listing`). A link to a video that is listed under its own path is
left out (one file, one video), and `unlisted_files` reports it with everything else that is not a video.

    from memae.datasets import open_dataset
    records = open_dataset("videos", "/srv/archive")
    records[0].video_id   # 'cam01/2024-05-01T08.mp4'
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from memae.datasets.listing import walk
from memae.datasets.records import VIDEO_SUFFIXES, VideoRecord, select_split

_SPLIT_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test"}


def read_videos(root: str | Path, split: str = "all") -> list[VideoRecord]:
    """Records of every video file under `root`, training split first, each split sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    files = _each_file_once([
        e.path for e in walk(root)
        if not e.is_folder and e.path.suffix.lower() in VIDEO_SUFFIXES and not e.path.name.startswith(".")
    ])
    splits = {p: _split_of(p.relative_to(root)) for p in files}
    files.sort(key=lambda p: (splits[p] != "train", p))
    wanted = select_split(split)
    return [VideoRecord(video_id(root, p), splits[p], p) for p in files if splits[p] in wanted]


def video_id(root: str | PurePath, path: str | PurePath) -> str:
    """The id of the video file at `path` in an archive at `root`: its relative path, suffix included, with '/'."""
    return PurePath(path).relative_to(root).as_posix()


def _each_file_once(paths: list[Path]) -> list[Path]:
    """`paths` without the links to a file that is listed under its own path or an earlier link's, so that a
    `latest.mp4` beside the recordings is not scored twice (`unlisted_files` reports it); a link that is the only
    way to its file stays."""
    first: dict[str, Path] = {}
    for path in sorted(paths, key=lambda p: (p.is_symlink(), p)):
        first.setdefault(os.path.realpath(path), path)
    kept = set(first.values())
    return [path for path in paths if path in kept]


def _split_of(relative: Path) -> str:
    for part in relative.parts[:-1]:
        if part.lower() in _SPLIT_NAMES:
            return _SPLIT_NAMES[part.lower()]
    return "train"
