"""Frame folders, as many research repositories lay out UCSD, Avenue or ShanghaiTech after extracting frames.

Expected tree (`--root` is the folder holding training/ and testing/)::

    ped2/
    ├── training/frames/01/000.jpg ... 119.jpg      one folder of images per video
    └── testing/
        ├── frames/01/000.jpg ...
        ├── test_frame_mask/01.npy                  optional: per-frame 0/1 labels, shape (T,)
        └── test_pixel_mask/01.npy                  optional: pixel masks, shape (T, H, W)

Labels follow ShanghaiTech's convention; they are optional, but once `test_frame_mask/` exists every test video
needs its file there. Training videos are taken as normal. Frames play in numeric order of their names.

    from memae.datasets import open_dataset
    records = open_dataset("frames", "/data/ped2", split="test")
    records[0].video_id, records[0].num_frames   # ('01', 180)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memae.datasets.label_files import LabelFileError, load_npy, npy_header
from memae.datasets.records import Issue, MaskRef, VideoRecord, select_split, sorted_images

FOLDERS = {"train": "training", "test": "testing"}


def read_frames(root: str | Path, split: str = "all") -> list[VideoRecord]:
    """Records of every frame folder under `root`/{training,testing}/frames, sorted by id."""
    root = Path(root)
    if not any((root / FOLDERS[s] / "frames").is_dir() for s in FOLDERS):
        raise FileNotFoundError(f"{root}: neither training/frames/ nor testing/frames/ exists (is this a frames root?)")
    records = []
    for wanted in select_split(split):
        labels_required = (root / FOLDERS[wanted] / "test_frame_mask").is_dir()
        records += frame_folder_records(root / FOLDERS[wanted], wanted, labels_required=labels_required)
    return records


def frame_folder_records(
    split_dir: Path, split: str, labels_required: bool, fps: float | None = None
) -> list[VideoRecord]:
    """One record per `split_dir`/frames/<video>/; test labels and masks from test_frame_mask/ and test_pixel_mask/.

    Args:
        split_dir: the training/ or testing/ folder.
        split: "train" or "test".
        labels_required: a test video without its label file is a problem (else it is simply unlabelled).
        fps: frame rate to record, when the archive documents it.
    """
    frames_dir = split_dir / "frames"
    if not frames_dir.is_dir():
        return []
    folders = sorted((p for p in frames_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_key)
    records = []
    for folder in folders:
        files = sorted_images(folder)
        problems: list[Issue] = [] if files else [Issue(str(folder), "no frame images in this folder")]
        labels = masks = None
        if split == "test":
            labels = _labels(
                split_dir / "test_frame_mask" / f"{folder.name}.npy", len(files), labels_required, problems
            )
            masks = _mask_ref(split_dir / "test_pixel_mask" / f"{folder.name}.npy", len(files), problems)
        records.append(
            VideoRecord(
                folder.name,
                split,
                folder,
                files,
                len(files),
                fps,
                labels=labels,
                label_source=split_dir / "test_frame_mask" / f"{folder.name}.npy" if labels is not None else None,
                masks=masks,
                known_normal=split == "train",
                problems=tuple(problems),
            )
        )
    return records


def _key(path: Path) -> tuple:
    return (0, int(path.name), path.name) if path.name.isdigit() else (1, 0, path.name)


def _labels(path: Path, num_frames: int, required: bool, problems: list[Issue]) -> np.ndarray | None:
    if not path.is_file():
        if required:
            problems.append(Issue(str(path), "ground-truth file not found"))
        return None
    try:
        shape, _ = npy_header(path)  # the header first: a forged one must not make listing allocate terabytes
        count = int(np.prod(shape, dtype=object))
        if count != num_frames:
            problems.append(Issue(str(path), f"has {count} labels for a video of {num_frames} frames"))
            return None
        labels = load_npy(path).reshape(-1)
    except (OSError, ValueError) as exc:  # LabelFileError is a ValueError
        problems.append(Issue(str(path), f"cannot read labels: {exc}"))
        return None
    if not np.isin(labels, (0, 1)).all():
        problems.append(Issue(str(path), "labels must be 0 or 1"))
        return None
    return labels.astype(np.int8)


def _mask_ref(path: Path, num_frames: int, problems: list[Issue]) -> MaskRef | None:
    if not path.is_file():
        return None
    try:
        shape, _ = npy_header(path)
    except (OSError, LabelFileError) as exc:
        problems.append(Issue(str(path), f"cannot read pixel masks: {exc}"))
        return None
    if len(shape) != 3 or shape[0] != num_frames:
        problems.append(Issue(str(path), f"pixel masks of shape {shape} for a video of {num_frames} frames"))
        return None
    return MaskRef("npy", (path,))
