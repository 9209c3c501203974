"""CUHK Avenue, read from the archive as distributed.

Expected tree (`--root` is the folder holding training_videos/ and testing_videos/)::

    Avenue Dataset/
    ├── training_videos/01.avi ... 16.avi
    ├── testing_videos/01.avi ... 21.avi
    └── ground_truth_demo/testing_label_mask/1_label.mat ... 21_label.mat

Each label file holds a MATLAB cell array `volLabel` with one pixel mask per frame; a frame is anomalous when its
mask has any pixel set. Label file names are not zero-padded: `testing_videos/01.avi` goes with `1_label.mat`.
Training and test videos share ids (`01`), so a video is named by its split and id together. Two files of a split
with one id (`01.avi` and `01.mp4`) are both refused, naming each other.

    from memae.datasets import open_dataset
    records = open_dataset("avenue", "/data/Avenue Dataset", split="test")
    records[0].video_id, len(records[0].labels)   # ('01', 1439)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memae.datasets.label_files import check_mat_cells
from memae.datasets.records import VIDEO_SUFFIXES, Issue, MaskRef, VideoRecord, select_split

FPS = 25.0
LABEL_DIR = Path("ground_truth_demo") / "testing_label_mask"


def read_avenue(root: str | Path, split: str = "all") -> list[VideoRecord]:
    """Records of Avenue; test labels come from the masks in each `N_label.mat`."""
    root = Path(root)
    if not (root / "training_videos").is_dir() and not (root / "testing_videos").is_dir():
        raise FileNotFoundError(f"{root}: neither training_videos/ nor testing_videos/ exists (is this Avenue?)")
    records = []
    for wanted in select_split(split):
        folder = root / ("training_videos" if wanted == "train" else "testing_videos")
        files = sorted(folder.iterdir(), key=_key) if folder.is_dir() else []
        for path in files:
            if path.suffix.lower() not in VIDEO_SUFFIXES or path.name.startswith("."):
                continue
            if wanted == "train":
                records.append(VideoRecord(path.stem, "train", path, fps=FPS, known_normal=True))
            else:
                records.append(_test_record(path, root / LABEL_DIR))
    return records


def _key(path: Path) -> tuple:
    return (0, int(path.stem), path.stem) if path.stem.isdigit() else (1, 0, path.stem)


def _test_record(path: Path, label_dir: Path) -> VideoRecord:
    label_file = label_dir / f"{int(path.stem) if path.stem.isdigit() else path.stem}_label.mat"
    try:
        labels = np.array([mask.any() for mask in load_vol_label(label_file)], dtype=np.int8)
    except FileNotFoundError:
        return VideoRecord(path.stem, "test", path, fps=FPS, problems=(Issue(str(label_file), "label file not found"),))
    except (OSError, ValueError, KeyError) as exc:  # LabelFileError is a ValueError
        reason = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        return VideoRecord(path.stem, "test", path, fps=FPS, problems=(Issue(str(label_file), reason),))
    except MemoryError:  # a last resort: the header check bounds what a file can make loadmat allocate
        reason = "too large to load (damaged?)"
        return VideoRecord(path.stem, "test", path, fps=FPS, problems=(Issue(str(label_file), reason),))
    masks = MaskRef("avenue-mat", (label_file,))
    return VideoRecord(path.stem, "test", path, fps=FPS, labels=labels, label_source=label_file, masks=masks)


def load_vol_label(path: Path) -> list[np.ndarray]:
    """The per-frame masks of an Avenue label file (cell array `volLabel`), its header checked against its size first.

    Raises:
        FileNotFoundError, KeyError (no volLabel), LabelFileError (unreadable, or claims more than it holds).
    """
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(path)
    check_mat_cells(path, "volLabel")
    content = loadmat(path, variable_names=["volLabel"])
    cells = np.asarray(content["volLabel"], dtype=object).reshape(-1)
    if cells.size == 0:
        raise ValueError(f"'volLabel' in {path.name} is empty")
    return [np.asarray(cell) for cell in cells]
