"""ShanghaiTech Campus, read from the archive as distributed.

Expected tree (`--root` is the folder holding training/ and testing/)::

    shanghaitech/
    ├── training/videos/01_001.avi ... 13_007.avi     SS_VVV: scene, video
    └── testing/
        ├── frames/01_0014/000.jpg ...                SS_VVVV
        ├── test_frame_mask/01_0014.npy               per-frame 0/1, shape (T,)
        └── test_pixel_mask/01_0014.npy               pixel masks, shape (T, H, W)

Training videos are taken as normal; a test video without its frame-mask file is reported, not guessed.

    from memae.datasets import open_dataset
    records = open_dataset("shanghaitech", "/data/shanghaitech", split="all")
    [r.video_id for r in records][:2]   # ['01_001', '01_002']
"""

from __future__ import annotations

from pathlib import Path

from memae.datasets.frames import frame_folder_records
from memae.datasets.records import VIDEO_SUFFIXES, VideoRecord, select_split


def read_shanghaitech(root: str | Path, split: str = "all") -> list[VideoRecord]:
    """Records of ShanghaiTech: training videos (decoded with decord) and test frame folders."""
    root = Path(root)
    if not (root / "training" / "videos").is_dir() and not (root / "testing" / "frames").is_dir():
        raise FileNotFoundError(f"{root}: neither training/videos/ nor testing/frames/ exists (is this ShanghaiTech?)")
    records = []
    for wanted in select_split(split):
        if wanted == "train":
            videos_dir = root / "training" / "videos"
            files = sorted(videos_dir.iterdir()) if videos_dir.is_dir() else []
            records += [
                VideoRecord(p.stem, "train", p, known_normal=True)
                for p in files
                if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
            ]
        else:
            records += frame_folder_records(root / "testing", "test", labels_required=True)
    return records
