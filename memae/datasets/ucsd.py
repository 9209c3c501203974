"""UCSD Anomaly Detection Dataset, Ped1 and Ped2, read from the archive as distributed.

Expected tree (`--root` is `UCSDped1`/`UCSDped2`, or the folder above them)::

    UCSD_Anomaly_Dataset.v1p2/
    └── UCSDped2/
        ├── Train/
        │   ├── Train001/001.tif ... 120.tif        grayscale frames, 10 fps
        │   └── ...
        └── Test/
            ├── Test001/001.tif ... 180.tif
            ├── Test001_gt/001.bmp ... 180.bmp      pixel masks (all of Ped2, only some of Ped1)
            ├── ...
            └── UCSDped2.m                          frame ranges: TestVideoFile{end+1}.gt_frame = [61:180];

The `.m` file's i-th entry belongs to the i-th test video; its ranges are 1-based and inclusive, and Ped1 has
entries with several ranges (`[1:15, 45:113]`). They become 0-based labels: frame i of the video has label i. Where
a video also has pixel masks, the frames they mark are compared with the `.m` ranges and any disagreement is noted
(the `.m` labels are kept: they are the published frame-level ground truth).

    from memae.datasets import open_dataset
    records = open_dataset("ucsd-ped2", "/data/UCSD_Anomaly_Dataset.v1p2", split="test")
    records[0].video_id, records[0].num_frames, records[0].labels.sum()   # ('Test001', 180, ...)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from memae.datasets.label_files import read_small_text
from memae.datasets.records import Issue, MaskRef, VideoRecord, labels_from_ranges, select_split, sorted_images

FPS = 10.0
_ENTRY = re.compile(r"TestVideoFile\s*\{\s*(end\s*\+\s*1|\d+)\s*\}\s*\.\s*gt_frame\s*=\s*\[([^\]]*)\]")
_FOLDER = re.compile(r"^(Train|Test)(\d+)$")


def parse_gt_m(path: str | Path) -> list[list[tuple[int, int]]]:
    """Frame ranges of each test video from `UCSDped1.m` / `UCSDped2.m`, as 0-based half-open [start, stop).

    Raises:
        ValueError: naming the file and the entry that cannot be read, or a file too large to be one (LabelFileError).
    """
    path = Path(path)
    text = "\n".join(line.split("%", 1)[0] for line in read_small_text(path).splitlines())
    entries: list[list[tuple[int, int]] | None] = []
    for match in _ENTRY.finditer(text):
        index = len(entries) if match.group(1).replace(" ", "") == "end+1" else int(match.group(1)) - 1
        while len(entries) <= index:
            entries.append(None)
        entries[index] = _parse_ranges(match.group(2), path, index)
    if not entries:
        raise ValueError(f"{path}: no 'TestVideoFile{{...}}.gt_frame = [...]' entries found")
    missing = [i + 1 for i, e in enumerate(entries) if e is None]
    if missing:
        raise ValueError(f"{path}: entries {missing} are never assigned")
    return entries  # type: ignore[return-value]


def _parse_ranges(body: str, path: Path, index: int) -> list[tuple[int, int]]:
    ranges = []
    for token in filter(None, re.split(r"[\s,;]+", body.strip())):
        parts = token.split(":")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{path}: entry {index + 1}: cannot read {token!r} as a frame range") from None
        if len(numbers) == 1:
            first, last, step = numbers[0], numbers[0], 1
        elif len(numbers) == 2:
            first, last, step = numbers[0], numbers[1], 1
        elif len(numbers) == 3:
            first, step, last = numbers
        else:
            raise ValueError(f"{path}: entry {index + 1}: cannot read {token!r} as a frame range")
        if first < 1 or last < first or step < 1:
            raise ValueError(f"{path}: entry {index + 1}: {token!r} is not a 1-based increasing range")
        if step == 1:
            ranges.append((first - 1, last))
        else:
            ranges.extend((f - 1, f) for f in range(first, last + 1, step))
    return ranges


def find_root(root: str | Path, variant: str) -> Path:
    """The folder holding Train/ and Test/: `root` itself, or its UCSDped1/UCSDped2 child."""
    root = Path(root)
    if (root / "Train").is_dir() or (root / "Test").is_dir():
        return root
    child = root / f"UCSD{variant}"
    if (child / "Train").is_dir() or (child / "Test").is_dir():
        return child
    raise FileNotFoundError(f"{root}: no Train/ or Test/ folder here nor in {child.name}/ (is this a UCSD archive?)")


def read_ucsd(root: str | Path, variant: str = "ped2", split: str = "all") -> list[VideoRecord]:
    """Records of UCSD `variant` ("ped1" or "ped2"), sorted by id, training videos first."""
    if variant not in ("ped1", "ped2"):
        raise ValueError(f"UCSD variant must be 'ped1' or 'ped2', not {variant!r}")
    base = find_root(root, variant)
    records = []
    for wanted in select_split(split):
        folder = base / ("Train" if wanted == "train" else "Test")
        videos = _video_folders(folder, "Train" if wanted == "train" else "Test")
        if wanted == "train":
            records += [_train_record(vid, path) for vid, path in videos]
        else:
            records += _test_records(videos, folder / f"UCSD{variant}.m")
    return records


def _video_folders(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _FOLDER.match(path.name)
        if path.is_dir() and match and match.group(1) == prefix:
            found.append((int(match.group(2)), path.name, path))
    return [(name, path) for _, name, path in sorted(found)]


def _train_record(video_id: str, folder: Path) -> VideoRecord:
    frames = sorted_images(folder)
    problems = () if frames else (Issue(str(folder), "no frame images in this folder"),)
    return VideoRecord(video_id, "train", folder, frames, len(frames), FPS, known_normal=True, problems=problems)


def _test_records(videos: list[tuple[str, Path]], m_file: Path) -> list[VideoRecord]:
    entries: list[list[tuple[int, int]]] | None = None
    m_problem = None
    if not m_file.is_file():
        m_problem = Issue(str(m_file), "ground-truth file not found")
    else:
        try:
            entries = parse_gt_m(m_file)
        except (ValueError, OSError) as exc:
            m_problem = Issue(str(m_file), str(exc))
    records = []
    for position, (video_id, folder) in enumerate(videos):
        frames = sorted_images(folder)
        problems: list[Issue] = [] if frames else [Issue(str(folder), "no frame images in this folder")]
        notes: list[Issue] = []
        labels = None
        if entries is not None and position < len(entries):
            labels = _labels_from_entry(entries[position], len(frames), m_file, video_id, problems)
        elif entries is not None:
            problems.append(Issue(str(m_file), f"no entry for {video_id} (the file lists {len(entries)} videos)"))
        masks, mask_labels = _masks(folder.parent / f"{video_id}_gt", len(frames), notes)
        if labels is None and mask_labels is not None and m_problem is not None:
            labels = mask_labels
            notes.append(Issue(str(m_file), f"{m_problem.reason}; {video_id} labels taken from its pixel masks"))
        elif labels is None and m_problem is not None:
            problems.append(m_problem)
        elif labels is not None and mask_labels is not None:
            _compare(labels, mask_labels, m_file, folder.parent / f"{video_id}_gt", notes)
        records.append(
            VideoRecord(
                video_id,
                "test",
                folder,
                frames,
                len(frames),
                FPS,
                labels=labels,
                label_source=(m_file if m_problem is None else masks.paths[0].parent) if labels is not None else None,
                masks=masks,
                problems=tuple(problems),
                notes=tuple(notes),
            )
        )
    return records


def _labels_from_entry(
    ranges: list[tuple[int, int]], num_frames: int, m_file: Path, video_id: str, problems: list[Issue]
) -> np.ndarray | None:
    beyond = [(a + 1, b) for a, b in ranges if b > num_frames]
    if beyond:
        shown = ", ".join(f"{a}:{b}" for a, b in beyond)
        problems.append(Issue(str(m_file), f"{video_id}: gt_frame [{shown}] goes past its {num_frames} frames"))
        return None
    return labels_from_ranges(ranges, num_frames)


def _masks(gt_folder: Path, num_frames: int, notes: list[Issue]) -> tuple[MaskRef | None, np.ndarray | None]:
    """The pixel-mask folder as a MaskRef and the frame labels it implies, or (None, None) without usable masks."""
    if not gt_folder.is_dir():
        return None, None
    files = sorted_images(gt_folder)
    if len(files) != num_frames:
        notes.append(Issue(str(gt_folder), f"{len(files)} mask images for {num_frames} frames; masks ignored"))
        return None, None
    try:
        labels = np.array([_any_pixel(f) for f in files], dtype=np.int8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        notes.append(Issue(str(gt_folder), f"a mask image cannot be decoded ({exc}); masks ignored"))
        return None, None
    return MaskRef("image-dir", files), labels


def _any_pixel(path: Path) -> bool:
    with Image.open(path) as image:
        return bool(np.asarray(image.convert("L")).max() > 127)


def _compare(labels: np.ndarray, mask_labels: np.ndarray, m_file: Path, gt_folder: Path, notes: list[Issue]) -> None:
    differ = np.flatnonzero(labels != mask_labels)
    if differ.size:
        notes.append(
            Issue(
                str(gt_folder),
                f"pixel masks and {m_file.name} disagree on {differ.size} frame(s), first at frame {differ[0]} "
                f"(masks say {mask_labels[differ[0]]}, {m_file.name} says {labels[differ[0]]}); using {m_file.name}",
            )
        )
