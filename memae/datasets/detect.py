"""One entry point for every layout: `open_dataset(name, root, split)`, with `name="auto"` recognising the layout.

from memae.datasets import detect_layout, open_dataset
detect_layout("/data/shanghaitech")   # ('shanghaitech', 'found training/videos/ and testing/test_frame_mask/')
records = open_dataset("auto", "/data/shanghaitech", split="test")
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from memae.datasets.avenue import read_avenue
from memae.datasets.decode import probe
from memae.datasets.frames import read_frames
from memae.datasets.listing import check_sources, walk
from memae.datasets.records import VIDEO_SUFFIXES, VideoRecord, refuse_duplicate_ids
from memae.datasets.shanghaitech import read_shanghaitech
from memae.datasets.ucsd import read_ucsd
from memae.datasets.videos import read_videos

log = logging.getLogger(__name__)

READERS: dict[str, Callable[[Path, str], list[VideoRecord]]] = {
    "ucsd-ped1": lambda root, split: read_ucsd(root, "ped1", split),
    "ucsd-ped2": lambda root, split: read_ucsd(root, "ped2", split),
    "avenue": read_avenue,
    "shanghaitech": read_shanghaitech,
    "frames": read_frames,
    "videos": read_videos,
}
DATASETS = ("auto", *READERS)


def open_dataset(name: str, root: str | Path, split: str = "all", probe_videos: bool = True) -> list[VideoRecord]:
    """Records of the archive at `root` read as layout `name` ("auto" to recognise it), for split train/test/all.

    Whatever the layout, a video whose file is a link that leads nowhere, loops or leaves `root`, and videos that would
    share an id, are listed with that as a problem (see `listing.check_sources`, `records.refuse_duplicate_ids`).

    Args:
        probe_videos: open each video file to read its frame count and fps (frame folders are counted anyway).
            Ingest skips this: decoding counts frames, in parallel.
    """
    root = Path(root)
    if name == "auto":
        name, reason = detect_layout(root)
        log.info("dataset auto: chose %s (%s)", name, reason)
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    records = refuse_duplicate_ids(check_sources(READERS[name](root, split), root))
    return [probe(r) for r in records] if probe_videos else records


def detect_layout(root: str | Path) -> tuple[str, str]:
    """The layout of the archive at `root` and the evidence for it.

    Raises:
        FileNotFoundError: when `root` matches no known layout, saying what was looked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    for variant in ("ped1", "ped2"):
        for base in (root, root / f"UCSD{variant}"):
            if (base / "Test" / f"UCSD{variant}.m").is_file():
                return f"ucsd-{variant}", f"found {(base / 'Test' / f'UCSD{variant}.m').relative_to(root)}"
    ucsd = [v for v in ("ped1", "ped2") if v in root.name.lower() and (root / "Train").is_dir()]
    if ucsd:
        return f"ucsd-{ucsd[0]}", f"found Train/ in a folder named {root.name}"
    if (root / "training_videos").is_dir() or (root / "testing_videos").is_dir():
        return "avenue", "found training_videos/ or testing_videos/"
    if (root / "training" / "videos").is_dir():
        return "shanghaitech", "found training/videos/"
    if (root / "testing" / "frames").is_dir() and _shanghaitech_names(root / "testing" / "frames"):
        return "shanghaitech", "found testing/frames/ named like ShanghaiTech (01_0014)"
    if (root / "training" / "frames").is_dir() or (root / "testing" / "frames").is_dir():
        return "frames", "found training/frames/ or testing/frames/"
    if any(e.path.suffix.lower() in VIDEO_SUFFIXES and not e.is_folder for e in walk(root)):
        return "videos", "found video files (searched recursively)"
    raise FileNotFoundError(
        f"{root}: no known layout (looked for Test/UCSDped*.m, training_videos/, training/videos/, "
        f"{{training,testing}}/frames/, and video files with suffixes {' '.join(VIDEO_SUFFIXES)})"
    )


def _shanghaitech_names(frames_dir: Path) -> bool:
    names = [p.name for p in frames_dir.iterdir() if p.is_dir()]
    return bool(names) and all(re.fullmatch(r"\d\d_\d{4}", n) for n in names)
