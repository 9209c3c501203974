"""What the scoring job reads: the videos of a raw archive or of ingested shards, sent to the model as frame blocks.

One Ray task takes one whole video (the fastest route measured for decoding, and a video is the unit of success):
it decodes sequentially at the model's size and colour (`memae.datasets.decode.open_frames`, as ingest does) or reads
the shard, and yields one row per block of consecutive frames, then one end row:

    key:    "split/video_id"
    start:  0-based video index of the block's first frame, which is also its first clip's start (-1 on the end row)
    frames: uint8 (n, H, W, C): exactly the frames of the block's clips, n = clip_len + (clips - 1) * stride
            (n = 0 on the end row)
    end:    "" on block rows; on the video's last row a `VideoEnd` as JSON: "done", "short" (fewer frames than a
            clip) or "failed" (why, and which file), with the frames and clips counted

The scoring actors cut the clips out of each block (`sliding_clips`, stride `settings.stride`). A block holds
`clips_per_block` clips (BLOCK_BATCHES model batches, bounded by BLOCK_BYTES) and repeats the clip_len - stride frames
it shares with the previous one, so each frame crosses the object store about once (1.12 times for 16-frame clips
at stride 1 in batches of 16), not once per clip covering it (16 times) as whole clips would.

A corrupt video therefore ends in a "failed" row instead of an exception, and every other video is still scored.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq

from memae.datasets import (
    Preprocess,
    VideoDecodeError,
    VideoRecord,
    detect_layout,
    open_dataset,
    unlisted_files,
)
from memae.datasets.decode import RecordFrames, declared_label_issue, open_frames
from memae.datasets.records import Issue
from pipelines.ingest.clips import clip_starts
from pipelines.ingest.manifest import Manifest
from pipelines.ingest.shards import LABEL, iter_shard
from pipelines.registry.source import ScoringSettings

BLOCK_BYTES = 16 << 20  # at most this many bytes of frames per block handed to the scoring actors
BLOCK_BATCHES = 8  # model batches of clips per block, when they fit BLOCK_BYTES

Status = Literal["done", "short", "failed", "deferred"]


@dataclass(frozen=True)
class VideoUnit:
    """One video to score: a record of a raw archive, or an ingested shard."""

    split: str
    video_id: str
    source: str  # the file or folder (raw), or the shard, for reports
    record: VideoRecord | None = None
    shard: str | None = None
    fps: float | None = None
    known_normal: bool = False

    @property
    def key(self) -> str:
        return f"{self.split}/{self.video_id}"

    def labels(self, num_frames: int) -> np.ndarray:
        """Per-frame labels, int8 0/1 and -1 where unknown."""
        if self.shard is not None:
            return pq.read_table(self.shard, columns=[LABEL]).column(LABEL).to_numpy().astype(np.int8)
        return self.record.frame_labels(num_frames)


@dataclass(frozen=True)
class VideoOutcome:
    """What became of one video: scored ("done"), too short for one clip ("short"), "failed" (which file, why), or
    "deferred" to a later run (why)."""

    status: Status
    split: str
    video_id: str
    file: str | None = None
    reason: str | None = None
    num_frames: int | None = None
    num_clips: int | None = None
    notes: tuple[str, ...] = ()  # worth saying, not a failure: another decoder read the video

    @property
    def key(self) -> str:
        return f"{self.split}/{self.video_id}"

    def problem(self) -> dict[str, Any]:
        """The failure as score_report.json lists it."""
        return {"split": self.split, "video_id": self.video_id, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class VideoEnd:
    """A video task's verdict, sent on the video's last row after its clips (JSON on the wire)."""

    status: Status
    num_frames: int
    num_clips: int
    fps: float | None = None
    file: str | None = None  # of a failure: the file that could not be read
    reason: str | None = None
    notes: tuple[str, ...] = ()  # what decoding said without failing (decode.RecordFrames: another decoder read it)

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> VideoEnd:
        fields = json.loads(text)
        return cls(**{**fields, "notes": tuple(fields.get("notes", ()))})


@dataclass
class Listing:
    """The videos found: those of the scored split, the normal ones for calibration, and unusable ones."""

    dataset: str
    evidence: str
    units: list[VideoUnit]
    normal: list[VideoUnit]
    problems: list[VideoOutcome]  # failed before any decoding
    stored_shape: tuple[int, int, int] | None = None  # (H, W, C) of shards
    unlisted: list[Issue] = field(default_factory=list)  # files under the root that are part of no video, and why


def list_archive(dataset: str, root: str | Path, split: str) -> Listing:
    """Videos of a raw archive (listing only: no decoding). Split "auto" picks the test split when there is one."""
    root = Path(root).resolve()
    name, evidence = detect_layout(root) if dataset == "auto" else (dataset, "given")
    records = open_dataset(name, root, "all", probe_videos=False)
    units, problems = [], []
    for record in records:
        if record.problems:
            problems += [_problem(record.split, record.video_id, issue.file, issue.reason) for issue in record.problems]
            continue
        units.append(VideoUnit(record.split, record.video_id, str(record.source), record=record, fps=record.fps,
                               known_normal=record.known_normal))
    chosen = _chosen_split(split, {u.split for u in units} | {p.split for p in problems})
    listing = Listing(
        name, evidence,
        [u for u in units if chosen == "all" or u.split == chosen],
        [u for u in units if u.split == "train" and u.known_normal],
        [p for p in problems if chosen == "all" or p.split == chosen],
        unlisted=unlisted_files(root, records),
    )
    if not listing.units and not listing.problems:
        raise ValueError(f"{root}: no videos of split {chosen!r} in this {name} archive")
    return listing


def list_shards(shards_dir: str | Path, split: str) -> Listing:
    """Ingested videos of a shard folder; train videos labelled all-normal serve calibration."""
    shards_dir = Path(shards_dir).resolve()
    manifest = Manifest.read(shards_dir)
    if manifest.frame_shape is None:
        raise ValueError(f"{shards_dir}: its videos were stored at different sizes; re-ingest with one --size")
    units = []
    for entry in manifest.select():
        normal = entry.split == "train" and bool(entry.labelled) and not entry.anomaly_ranges
        units.append(VideoUnit(entry.split, entry.video_id, str(shards_dir / entry.shard),
                               shard=str(shards_dir / entry.shard), fps=entry.fps, known_normal=normal))
    chosen = _chosen_split(split, {u.split for u in units})
    selected = [u for u in units if chosen == "all" or u.split == chosen]
    if not selected:
        raise ValueError(f"{shards_dir}: no ingested videos of split {chosen!r}")
    normal = [u for u in units if u.known_normal]
    return Listing(manifest.dataset, f"shards in {shards_dir}", selected, normal, [], manifest.frame_shape)


def _chosen_split(split: str, present: set[str]) -> str:
    if split != "auto":
        return split
    return "test" if "test" in present else "all"


def _problem(split: str, video_id: str, file: str, reason: str) -> VideoOutcome:
    return VideoOutcome("failed", split, video_id, file, reason)


# ---------------------------------------------------------------------------------------------------------------
# Decoding, frame blocks and clip cutting: Ray tasks and actors only (the scoring pipeline, pipelines/score/isolated.py)


def unit_frames(unit: VideoUnit, settings: ScoringSettings,
                notes: list[Issue] | None = None) -> tuple[Iterator[np.ndarray], float | None]:
    """(frame chunks (n, H, W, C) uint8 in order, fps). Raises VideoDecodeError for a video that cannot be read.

    A video file is opened once, here: its header (frame count, fps) comes from the reader that then decodes it, and
    an unreadable file fails before any frame is asked for. The reader closes when the chunks end or are dropped.
    `notes` gets what decoding says without failing (as `memae.datasets.iter_frames`).
    """
    if unit.shard is not None:
        return (frames for _, frames, _ in iter_shard(unit.shard)), unit.fps
    frames = open_frames(unit.record, Preprocess((settings.height, settings.width), settings.color), notes)
    try:
        record = frames.header()
        if (issue := declared_label_issue(record)) is not None:
            raise VideoDecodeError(issue.file, issue.reason)
    except BaseException:
        frames.close()
        raise
    return _chunks_then_close(frames), record.fps


def _chunks_then_close(frames: RecordFrames) -> Iterator[np.ndarray]:
    with frames:
        yield from frames.chunks(64)


def sliding_clips(chunks: Iterable[np.ndarray], clip_len: int, stride: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, clip) of every clip that fits, from frames arriving in chunks; holds at most a clip plus a chunk."""
    window: np.ndarray | None = None
    offset = start = 0  # video frame index of window[0]; first frame of the next clip
    for chunk in chunks:
        window = chunk if window is None else np.concatenate([window, chunk])
        while start + clip_len <= offset + len(window):
            yield start, window[start - offset : start - offset + clip_len]
            start += stride
        drop = min(start - offset, len(window))
        window, offset = window[drop:], offset + drop


def clips_per_block(settings: ScoringSettings, batch_size: int) -> int:
    """Clips per frame block: BLOCK_BATCHES model batches, fewer (whole batches if one fits) to stay under BLOCK_BYTES.

    A block repeats the last clip_len - stride frames of the one before, so longer blocks send fewer frames twice:
    8 batches of 16 clips at stride 1 send 143 frames for 128 new ones (1.12 copies of each frame)."""
    frame_bytes = settings.height * settings.width * settings.channels
    fit = len(clip_starts(BLOCK_BYTES // frame_bytes, settings.clip_len, settings.stride))
    clips = min(BLOCK_BATCHES * batch_size, fit)
    return max(1, clips // batch_size * batch_size if clips >= batch_size else clips)


def frame_blocks(chunks: Iterable[np.ndarray], clip_len: int, stride: int,
                 clips: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, frames) of consecutive-frame blocks holding exactly the frames of up to `clips` clips each.

    Cutting `sliding_clips` from each block (starts offset by its first frame) gives the clips of the whole video,
    each once: a block starts at its first clip and ends with its last, so consecutive blocks share
    clip_len - stride frames (none when stride >= clip_len, and the frames between such blocks are never sent)."""
    size, step = clip_len + (clips - 1) * stride, clips * stride
    window: np.ndarray | None = None
    start = skip = 0  # video frame index of the next block (and of window[0]); frames to drop before it arrives
    for chunk in chunks:
        dropped = min(skip, len(chunk))
        chunk, skip = chunk[dropped:], skip - dropped
        window = chunk if window is None else np.concatenate([window, chunk])
        while len(window) >= size:
            yield start, window[:size]
            skip, window, start = max(0, step - len(window)), window[step:], start + step
    if window is not None and (count := len(clip_starts(len(window), clip_len, stride))):
        yield start, window[: clip_len + (count - 1) * stride]


def video_frame_blocks(row: dict, settings: ScoringSettings, batch_size: int) -> Iterator[dict]:
    """Ray Data task body: the frame blocks of one video, one row each, then its end row (see the module docstring)."""
    unit: VideoUnit = pickle.loads(row["unit"][0])
    frame_shape = (settings.height, settings.width, settings.channels)
    num_frames = num_clips = 0
    fps = unit.fps
    failure: tuple[str, str] | None = None  # (file, reason)
    notes: list[Issue] = []

    def counted(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal num_frames
        for chunk in chunks:
            if chunk.shape[1:] != frame_shape:
                raise VideoDecodeError(unit.source, f"frames of shape {chunk.shape[1:]}, expected {frame_shape}")
            num_frames += len(chunk)
            yield chunk

    try:
        chunks, fps = unit_frames(unit, settings, notes)
        clips = clips_per_block(settings, batch_size)
        for first, frames in frame_blocks(counted(chunks), settings.clip_len, settings.stride, clips):
            num_clips += len(clip_starts(len(frames), settings.clip_len, settings.stride))
            yield _block_row(unit.key, first, frames, "")
    except VideoDecodeError as exc:
        failure = exc.path, exc.reason
    except Exception as exc:  # anything else about this one input: report it, never lose the other videos
        failure = unit.source, f"{type(exc).__name__}: {exc}"
    status = "failed" if failure else "done" if num_clips else "short"
    file, reason = failure or (None, None)
    end = VideoEnd(status, num_frames, num_clips, fps or unit.fps, file, reason, tuple(n.reason for n in notes))
    yield _block_row(unit.key, -1, np.zeros((0, *frame_shape), np.uint8), end.encode())


def _block_row(key: str, first: int, frames: np.ndarray, end: str) -> dict:
    return {
        "key": np.array([key]),
        "start": np.array([first], dtype=np.int64),
        "frames": frames[None],
        "end": np.array([end]),
    }


def first_clips(unit: VideoUnit, settings: ScoringSettings, count: int) -> np.ndarray:
    """Up to `count` non-overlapping clips from the start of `unit`, (n, T, H, W, C) uint8, for calibration.

    Raises:
        VideoDecodeError: when the video cannot be read.
    """
    clips = []
    chunks, _ = unit_frames(unit, settings)
    for _, clip in sliding_clips(chunks, settings.clip_len, settings.clip_len):
        clips.append(clip.copy())
        if len(clips) == count:
            break
    shape = (settings.clip_len, settings.height, settings.width, settings.channels)
    return np.stack(clips) if clips else np.zeros((0, *shape), np.uint8)


def clips_at(unit: VideoUnit, settings: ScoringSettings, starts: set[int]) -> dict[int, np.ndarray]:
    """The clips of `unit` starting at `starts`, read again from its source in one pass.

    Raises:
        VideoDecodeError: when the video cannot be read.
    """
    found: dict[int, np.ndarray] = {}
    chunks, _ = unit_frames(unit, settings)
    for start, clip in sliding_clips(chunks, settings.clip_len, 1):
        if start in starts:
            found[start] = clip.copy()
            if len(found) == len(starts):
                break
    return found
