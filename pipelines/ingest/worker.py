"""One video's ingest, as a Ray task runs it: decode, store its shard row group by row group, describe the result.

Nothing here imports Ray: `ingest_video` is a plain function of a `VideoTask`, and never raises for bad input. A
video that cannot be ingested comes back as a "failed" manifest entry naming the file and the reason, so one bad
video never costs the others. A shard that cannot be written is not the video's fault but the output folder's (full,
read-only, gone): that raises `ShardWriteError`, and the job stops as failed rather than blaming every video.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memae.datasets import Preprocess, VideoDecodeError, VideoRecord
from memae.datasets.decode import (
    DEFAULT_DECODER,
    NO_FRAMES,
    RecordFrames,
    declared_label_issue,
    label_length_issue,
    open_frames,
)
from memae.datasets.records import Issue, ranges_from_labels
from memae.files import resolves_inside, safe_name
from pipelines.ingest.manifest import ManifestEntry, is_inside
from pipelines.ingest.shards import DEFAULT_ENCODING, SHARD_DIR, ShardWriter, frames_per_row_group

DECODE_CHUNK = 64  # frames decoded at a time when the stored size is not known in advance (--size native)


@dataclass(frozen=True)
class VideoTask:
    """Everything a worker needs to ingest one video; `shard` is relative to `out`."""

    record: VideoRecord
    prep: Preprocess
    out: Path
    shard: str
    dataset: str
    encoding: str = DEFAULT_ENCODING
    decoder: str = DEFAULT_DECODER  # a backend's name, resolved by the driver (never "auto")

    @classmethod
    def of(cls, record: VideoRecord, prep: Preprocess, out: Path, dataset: str, encoding: str,
           decoder: str = DEFAULT_DECODER) -> VideoTask:
        """The task for `record`, stored at shards/<split>/<safe video id>.parquet under `out`.

        Raises:
            ValueError: a shard path that would leave `out`, through its name or a link already in `out`.
        """
        shard = f"{SHARD_DIR}/{record.split}/{safe_name(record.video_id)}.parquet"
        if not is_inside(shard) or not resolves_inside(out / shard, out):
            raise ValueError(f"{record.video_id!r} of split {record.split!r} would be stored outside {out}: {shard}")
        record = dataclasses.replace(record, masks=None)  # masks: not stored
        return cls(record, prep, out, shard, dataset, encoding, decoder)


class ShardWriteError(RuntimeError):
    """The output folder would not take a shard: the job's failure, not the video's."""


def ingest_video(task: VideoTask) -> ManifestEntry:
    """Decode one video and write its shard; returns its manifest entry, status "done" or "failed".

    Raises:
        ShardWriteError: the shard could not be written.
    """
    started = time.perf_counter()
    _one_thread()
    record = task.record
    if record.problems:
        return ManifestEntry.failed(record, record.problems[0])
    notes: list[Issue] = []
    path = task.out / task.shard
    try:
        stamp = record.stamp()  # before decoding: a source that changes while it is read counts as changed next time
    except OSError:
        stamp = None  # opening it says why
    try:
        with open_frames(record, task.prep, notes, task.decoder) as frames:
            record = frames.header()  # frame count and fps, from the open reader; catches label mismatches early
            if (issue := declared_label_issue(record)) is not None:
                raise _LabelMismatch(issue)
            entry = _write_shard(record, frames, task, path, notes, started, stamp)
    except VideoDecodeError as exc:
        return ManifestEntry.failed(record, Issue(exc.path, exc.reason), exc.detail, tuple(notes))
    except _LabelMismatch as exc:
        return ManifestEntry.failed(record, exc.issue, notes=tuple(notes))
    except OSError as exc:  # decoding errors are VideoDecodeErrors: an OSError here is about writing the shard
        raise ShardWriteError(f"cannot write {path}: {exc}") from exc
    except Exception as exc:  # anything else about this one input: report it, never lose the other videos
        issue = Issue(str(record.source), "could not be ingested: an unexpected error (see detail)")
        return ManifestEntry.failed(record, issue, f"{type(exc).__name__}: {exc}", tuple(notes))
    return dataclasses.replace(entry, bytes=path.stat().st_size)


def _one_thread() -> None:
    """A worker decodes one video on one core: OpenCV's own thread pool (resizing, the gray LUT) only adds
    contention there; one thread cost about a tenth less CPU per frame (benchmarks/bench_ingest.py)."""
    try:
        import cv2
    except ImportError:
        return
    cv2.setNumThreads(1)


def _done_entry(record: VideoRecord, task: VideoTask, num_frames: int, shape: tuple[int, int, int],
                notes: list[Issue], seconds: float, stamp: tuple[int, int] | None) -> ManifestEntry:
    """The manifest entry of a video whose shard holds `num_frames` frames (its size in bytes comes once closed)."""
    labels = record.frame_labels(num_frames)
    return dataclasses.replace(
        ManifestEntry.pending(record),
        notes=(*record.notes, *notes),
        status="done",
        num_frames=num_frames,
        frame_shape=shape,
        shard=task.shard,
        encoding=task.encoding,
        labelled=bool((labels >= 0).all()),
        anomaly_ranges=tuple(ranges_from_labels(labels)),
        seconds=round(seconds, 3),
        source_stamp=stamp,
    )


class _LabelMismatch(Exception):
    """The archive's labels do not cover the decoded frames one for one."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.reason)
        self.issue = issue


def _write_shard(
    record: VideoRecord, frames: RecordFrames, task: VideoTask, path: Path, notes: list[Issue], started: float,
    stamp: tuple[int, int] | None,
) -> ManifestEntry:
    """Streams the decoded frames into the shard at `path` and seals it with the video's entry, which it returns."""
    size = task.prep.size
    # decoded a row group at a time when the size is known, so a row group is written from the decoder's own array
    chunk = frames_per_row_group((*size, task.prep.channels)) if size else DECODE_CHUNK
    chunks = frames.chunks(chunk)
    first = next(chunks, None)
    if first is None:
        raise VideoDecodeError(record.source, NO_FRAMES)
    meta = {  # after the first chunk: the decoder is the one that read it (another stands in for one that failed)
        "dataset": task.dataset, "video_id": record.video_id, "split": record.split, "source": str(record.source),
        "preprocessing": dataclasses.asdict(task.prep), "decoder": frames.decoder,
    }
    shape = first.shape[1:]
    rows = frames_per_row_group(shape)
    labels = record.labels
    with ShardWriter(path, shape, meta, task.encoding) as writer:
        pending: list[np.ndarray] = []
        for piece in itertools.chain([first], chunks):
            pending.append(piece)
            if sum(len(c) for c in pending) >= rows:
                _flush(writer, pending, labels, record)
                pending = []
        if pending:
            _flush(writer, pending, labels, record)
        if labels is not None and len(labels) != writer.num_frames:
            raise _LabelMismatch(label_length_issue(record, writer.num_frames))
        entry = _done_entry(record, task, writer.num_frames, shape, notes, time.perf_counter() - started, stamp)
        writer.seal(dataclasses.replace(entry, seconds=None).to_json())  # no timing: same video, same bytes
    return entry


def _flush(writer: ShardWriter, pending: list[np.ndarray], labels: np.ndarray | None, record: VideoRecord) -> None:
    """Writes the pending chunks as one row group, with their labels (unknown or all-normal when there are none)."""
    frames = np.concatenate(pending) if len(pending) > 1 else pending[0]
    start = writer.num_frames
    if labels is None:
        chunk_labels = np.full(len(frames), 0 if record.known_normal else -1, dtype=np.int8)
    elif len(labels) < start + len(frames):
        raise _LabelMismatch(label_length_issue(record, start + len(frames)))
    else:
        chunk_labels = labels[start : start + len(frames)]
    writer.write(frames, chunk_labels)
