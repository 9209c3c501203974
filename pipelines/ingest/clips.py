"""Clips of T consecutive frames cut from ingested shards, as a Ray Dataset or a plain iterator.

Shards store each frame once (see shards.py); clips are cut here, when reading, and never cross a video
boundary. Every clip is a dict::

    video_id: str        the dataset's own name for the video
    split:    str        "train" or "test"
    start:    int        0-based first frame; the clip covers frames start .. start + clip_len - 1
    clip:     uint8 ndarray (T, H, W, C)
    labels:   int8 ndarray (T,), 0/1 per frame, -1 where unknown

Clip starts are 0, stride, 2*stride, ... while a whole clip fits; a video shorter than clip_len gives none.
Avenue and frame-folder archives reuse ids across splits (train "01", test "01"): a video is (split, video_id).

    from pipelines.ingest.clips import clip_dataset, iter_clips
    for clip in iter_clips("data/shards", clip_len=16, stride=4, split="test"):   # no Ray needed
        ...
    ds = clip_dataset("data/shards", clip_len=16, stride=1, split="train")        # streams, for Ray Train
    ds.iter_torch_batches(batch_size=8)

Only `clip_dataset` imports Ray, and only when called.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.ingest.manifest import Manifest, ManifestEntry
from pipelines.ingest.shards import iter_shard, read_shard

if TYPE_CHECKING:
    import ray.data

CLIP_TASK_BYTES = 64 << 20  # clips cut by one Ray task
CLIP_BATCH_BYTES = 16 << 20  # clips handed to Ray Data at a time


def clip_starts(num_frames: int, clip_len: int, stride: int) -> range:
    """First frames of the clips of a video: every `stride` frames while a whole clip fits."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be positive, got {clip_len} and {stride}")
    return range(0, max(0, num_frames - clip_len + 1), stride)


def iter_clips(
    shards_dir: str | Path,
    clip_len: int = 16,
    stride: int = 1,
    split: str | None = None,
    video_ids: Iterable[str] | None = None,
) -> Iterator[dict]:
    """Clips of every selected video, in manifest order; memory holds one row group and one clip at a time."""
    shards_dir = Path(shards_dir)
    for entry in Manifest.read(shards_dir).select(split, video_ids):
        starts = clip_starts(entry.num_frames, clip_len, stride)
        yield from _cut(shards_dir / entry.shard, entry.video_id, entry.split, clip_len, starts)


def read_video_frames(shards_dir: str | Path, video_id: str, split: str | None = None) -> np.ndarray:
    """All stored frames of one video, (T, H, W, C) uint8."""
    return read_shard(_shard_path(shards_dir, video_id, split))[0]


def read_video_labels(shards_dir: str | Path, video_id: str, split: str | None = None) -> np.ndarray:
    """Per-frame labels of one video, (T,) int8: 0/1, -1 where unknown."""
    return read_shard(_shard_path(shards_dir, video_id, split))[1]


def clip_dataset(
    shards_dir: str | Path,
    clip_len: int = 16,
    stride: int = 1,
    split: str | None = None,
    video_ids: Iterable[str] | None = None,
    *,
    num_cpus: float = 0.5,
) -> ray.data.Dataset:
    """The clips of `iter_clips` as a streaming Ray Dataset (rows as in the module docstring).

    Each Ray task reads one stretch of one video (only the row groups it needs) and cuts its clips, so nothing
    materialises the corpus. `num_cpus` per task is fractional so that cutting can run beside training workers.
    Starts Ray (`pipelines.common.ray_runtime.init_ray`) if it is not running.
    """
    import ray

    from pipelines.common.ray_runtime import init_ray

    shards_dir = Path(shards_dir).resolve()
    units = []
    for entry in Manifest.read(shards_dir).select(split, video_ids):
        starts = clip_starts(entry.num_frames, clip_len, stride)
        per_task = max(1, CLIP_TASK_BYTES // _clip_bytes(entry, clip_len))
        for i in range(0, len(starts), per_task):
            part = starts[i : i + per_task]
            units.append(
                {
                    "shard": str(shards_dir / entry.shard),
                    "video_id": entry.video_id,
                    "split": entry.split,
                    "first": part.start,
                    "stop": part.stop,
                    "batch": max(1, CLIP_BATCH_BYTES // _clip_bytes(entry, clip_len)),
                }
            )
    if not units:
        raise ValueError(f"{shards_dir}: no clips of {clip_len} frames in the selected videos (split={split})")
    init_ray()
    items = ray.data.from_items(units, override_num_blocks=len(units))
    return items.map_batches(
        _cut_unit, fn_kwargs={"clip_len": clip_len, "stride": stride}, batch_size=1, num_cpus=num_cpus
    )


def _cut_unit(unit: dict, clip_len: int, stride: int) -> Iterator[dict]:
    """Ray task body: the clips of one stretch of one video, in batches of about CLIP_BATCH_BYTES."""
    video_id, split = str(unit["video_id"][0]), str(unit["split"][0])
    starts = range(int(unit["first"][0]), int(unit["stop"][0]), stride)
    batch_size = int(unit["batch"][0])
    batch: list[dict] = []
    for clip in _cut(Path(str(unit["shard"][0])), video_id, split, clip_len, starts):
        batch.append(clip)
        if len(batch) == batch_size:
            yield _stack(batch)
            batch = []
    if batch:
        yield _stack(batch)


def _stack(clips: list[dict]) -> dict:
    return {
        "video_id": np.array([c["video_id"] for c in clips]),
        "split": np.array([c["split"] for c in clips]),
        "start": np.array([c["start"] for c in clips], dtype=np.int64),
        "clip": np.stack([c["clip"] for c in clips]),
        "labels": np.stack([c["labels"] for c in clips]),
    }


def _cut(shard: Path, video_id: str, split: str, clip_len: int, starts: range) -> Iterator[dict]:
    """Clips at `starts` of one shard, reading only the row groups the range covers."""
    if not starts:
        return
    frames = labels = None
    offset = 0  # video frame index of frames[0]
    pending = iter(starts)
    start = next(pending, None)
    for first, new_frames, new_labels in iter_shard(shard, starts[0], starts[-1] + clip_len):
        if frames is None:
            frames, labels, offset = new_frames, new_labels, first
        else:
            frames = np.concatenate([frames, new_frames])
            labels = np.concatenate([labels, new_labels])
        while start is not None and start + clip_len <= offset + len(frames):
            i = start - offset
            yield {
                "video_id": video_id,
                "split": split,
                "start": start,
                "clip": frames[i : i + clip_len].copy(),
                "labels": labels[i : i + clip_len].copy(),
            }
            start = next(pending, None)
        if start is None:
            return
        keep = max(0, start - offset)  # frames before the next start are no longer needed
        frames, labels, offset = frames[keep:], labels[keep:], offset + keep


def _clip_bytes(entry: ManifestEntry, clip_len: int) -> int:
    return clip_len * int(np.prod(entry.frame_shape))


def _shard_path(shards_dir: str | Path, video_id: str, split: str | None) -> Path:
    entries = Manifest.read(shards_dir).select(split, [video_id])
    if len(entries) > 1:
        raise ValueError(f"video {video_id!r} is in splits {[e.split for e in entries]}: pass split=")
    return Path(shards_dir) / entries[0].shard
