"""Clips of T consecutive frames cut from ingested shards: a plain iterator of clips, and a Ray Dataset of frame blocks.

Shards store each frame once (see shards.py); clips are cut here, when reading, and never cross a video
boundary. Every clip of `iter_clips` is a dict::

    video_id: str        the dataset's own name for the video
    split:    str        "train" or "test"
    start:    int        0-based first frame; the clip covers frames start .. start + clip_len - 1
    clip:     uint8 ndarray (T, H, W, C)
    labels:   int8 ndarray (T,), 0/1 per frame, -1 where unknown

Clip starts are 0, stride, 2*stride, ... while a whole clip fits; a video shorter than clip_len gives none.
Avenue and frame-folder archives reuse ids across splits (train "01", test "01"): a video is (split, video_id).

Ray moves blocks of consecutive frames instead of clips (with stride 1 a clip row would carry each frame 16 times):
a row of `frame_block_dataset` is one block of one video, the same keys with `frames` (F, H, W, C) and `labels` (F,)
in place of `clip` and `start` its first frame. Consecutive blocks overlap by clip_len - stride frames, so each clip
lies whole in exactly one block, and `clips_from_block` cuts them where they are consumed.

    from pipelines.ingest.clips import clips_from_block, frame_block_dataset, iter_clips
    for clip in iter_clips("data/shards", clip_len=16, stride=4, split="test"):   # no Ray needed
        ...
    ds = frame_block_dataset("data/shards", clip_len=16, stride=1, split="train")  # streams, for Ray Train
    for block in ds.iter_rows():
        clips = clips_from_block(block["frames"], 16, 1)   # (n, 16, H, W, C), starting at block["start"] + i

Only `frame_block_dataset` imports Ray, and only when called.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.ingest.manifest import Manifest, ManifestEntry
from pipelines.ingest.shards import iter_shard, read_shard

if TYPE_CHECKING:
    import ray.data

BLOCK_BYTES = 8 << 20  # frames of one block of `frame_block_dataset`, about
MIN_BLOCK_CLIP_LENGTHS = 8  # a block spans at least 8 clip lengths: the overlap then adds at most 1/8 of its frames


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


def clips_from_block(frames: np.ndarray, clip_len: int, stride: int) -> np.ndarray:
    """The clips of a block of frames, (n, clip_len, H, W, C): clip i starts at frame i * stride of the block.

    A read-only view, no copy: cutting costs nothing, and the caller copies only what it keeps.
    """
    count = len(clip_starts(len(frames), clip_len, stride))
    step, *frame_strides = frames.strides
    return np.lib.stride_tricks.as_strided(
        frames, (count, clip_len, *frames.shape[1:]), (stride * step, step, *frame_strides), writeable=False
    )


def frames_per_block(frame_bytes: int, clip_len: int, block_bytes: int = BLOCK_BYTES) -> int:
    """About `block_bytes` of frames, and never fewer than MIN_BLOCK_CLIP_LENGTHS clips' worth, so that the frames
    two blocks share (clip_len - stride) stay a small part of what is moved."""
    return max(MIN_BLOCK_CLIP_LENGTHS * clip_len, block_bytes // max(1, frame_bytes))


def block_starts(
    lengths: list[int], clip_len: int, stride: int, block_frames: int, multiple_of: int = 1
) -> list[list[range]]:
    """The clip starts of each block of each video (a video of `lengths[i]` frames gets `result[i]`).

    A video's clips are split evenly into as few blocks of at most `block_frames` frames as hold them; then the
    videos with the fullest blocks get one more until the number of blocks is a multiple of `multiple_of` (the Ray
    Train workers: an equal split of the blocks then drops none), where clips allow.
    """
    per_block = max(1, (block_frames - clip_len) // stride + 1)
    starts = [clip_starts(n, clip_len, stride) for n in lengths]
    counts = [math.ceil(len(s) / per_block) for s in starts]
    while sum(counts) % multiple_of:
        splittable = [i for i, s in enumerate(starts) if len(s) > counts[i]]
        if not splittable:
            break
        fullest = max(splittable, key=lambda i: len(starts[i]) / counts[i])
        counts[fullest] += 1
    return [_split_evenly(s, count) for s, count in zip(starts, counts, strict=True)]


def block_units(
    shards_dir: str | Path,
    clip_len: int = 16,
    stride: int = 1,
    split: str | None = None,
    video_ids: Iterable[str] | None = None,
    block_frames: int | None = None,
    multiple_of: int = 1,
) -> list[dict]:
    """What each read task of `frame_block_dataset` reads: shard, video_id, split, and frames [first, stop)."""
    shards_dir = Path(shards_dir).resolve()
    entries = Manifest.read(shards_dir).select(split, video_ids)
    if block_frames is None:
        block_frames = frames_per_block(max((_frame_bytes(e) for e in entries), default=1), clip_len)
    plan = block_starts([e.num_frames for e in entries], clip_len, stride, block_frames, multiple_of)
    return [
        {"shard": str(shards_dir / entry.shard), "video_id": entry.video_id, "split": entry.split,
         "first": starts.start, "stop": starts[-1] + clip_len}
        for entry, blocks in zip(entries, plan, strict=True)
        for starts in blocks
    ]


def frame_block_dataset(
    shards_dir: str | Path,
    clip_len: int = 16,
    stride: int = 1,
    split: str | None = None,
    video_ids: Iterable[str] | None = None,
    *,
    block_frames: int | None = None,
    multiple_of: int = 1,
    num_cpus: float = 0.5,
) -> ray.data.Dataset:
    """The clips of `iter_clips` as a streaming Ray Dataset of frame blocks (rows as in the module docstring).

    Blocks hold `block_frames` frames at most (default: `frames_per_block`) and come in manifest and frame order;
    `multiple_of` is passed to `block_starts`. Each Ray task reads one block (only the row groups it needs), so
    nothing materialises the corpus; `num_cpus` per task is fractional so that reading can run beside training
    workers. Starts Ray (`pipelines.common.ray_runtime.init_ray`) if it is not running.
    """
    import ray

    from pipelines.common.ray_runtime import init_ray

    units = block_units(shards_dir, clip_len, stride, split, video_ids, block_frames, multiple_of)
    if not units:
        raise ValueError(f"{shards_dir}: no clips of {clip_len} frames in the selected videos (split={split})")
    init_ray()
    items = ray.data.from_items(units, override_num_blocks=len(units))
    return items.map_batches(read_block, batch_size=1, num_cpus=num_cpus)


def read_block(unit: dict) -> dict:
    """Ray task body: frames [first, stop) of one shard as a one-row batch (a unit of `block_units`, each value in a
    one-element array)."""
    first, stop = int(unit["first"][0]), int(unit["stop"][0])
    pieces = list(iter_shard(Path(str(unit["shard"][0])), first, stop))
    frames = np.concatenate([p[1] for p in pieces])
    if len(frames) != stop - first:
        raise ValueError(f"{unit['shard'][0]}: frames {first}..{stop} asked for, {len(frames)} stored")
    return {
        "video_id": unit["video_id"],
        "split": unit["split"],
        "start": np.array([first], dtype=np.int64),
        "frames": frames[None],
        "labels": np.concatenate([p[2] for p in pieces])[None],
    }


def _split_evenly(starts: range, parts: int) -> list[range]:
    return [starts[i * len(starts) // parts : (i + 1) * len(starts) // parts] for i in range(parts)]


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
        # Frames before the next start are no longer needed; with stride > clip_len it may lie beyond those read.
        keep = min(len(frames), max(0, start - offset))
        frames, labels, offset = frames[keep:], labels[keep:], offset + keep


def _frame_bytes(entry: ManifestEntry) -> int:
    return int(np.prod(entry.frame_shape))


def _shard_path(shards_dir: str | Path, video_id: str, split: str | None) -> Path:
    entries = Manifest.read(shards_dir).select(split, [video_id])
    if len(entries) > 1:
        raise ValueError(f"video {video_id!r} is in splits {[e.split for e in entries]}: pass split=")
    return Path(shards_dir) / entries[0].shard
