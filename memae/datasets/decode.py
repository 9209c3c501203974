"""Decode one record into uint8 frames (T, H, W, C): decord for video files, Pillow for frame images.

decord has known leaks and a rare deadlock on files that over-report their frame count, so each call opens one
reader, reads sequentially until the stream really ends, releases the reader, and compares the count it decoded
with what the file promised. A damaged input raises `VideoDecodeError(path, reason)`; nothing is silently dropped.

Resizing happens inside decord while decoding, which beat decoding at full size and resizing afterwards with
Pillow (benchmarks/bench_ingest.py). Grayscale is Pillow's "L" conversion (ITU-R 601 luma) for video and image frames
alike, so a video and the same frames saved as images give the same gray levels.

    from memae.datasets import open_dataset, decode, Preprocess
    record = open_dataset("avenue", "/data/Avenue Dataset", split="test")[0]
    frames = decode(record, Preprocess(size=(256, 256), color="gray"))   # (1439, 256, 256, 1) uint8
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from memae.datasets.records import Issue, VideoRecord


class VideoDecodeError(RuntimeError):
    """A video or frame image that cannot be decoded; `path` names the file and `reason` says what is wrong."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Preprocess:
    """What every stored frame looks like: `size` as (height, width), or None to keep the archive's size."""

    size: tuple[int, int] | None = (256, 256)
    color: str = "gray"  # "gray" or "rgb"

    def __post_init__(self) -> None:
        if self.color not in ("gray", "rgb"):
            raise ValueError(f"color must be 'gray' or 'rgb', not {self.color!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (height, width) in pixels, not {self.size!r}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


def decode(record: VideoRecord, prep: Preprocess) -> np.ndarray:
    """All frames of `record` as one (T, H, W, C) uint8 array. For long videos prefer `iter_frames`."""
    chunks = list(iter_frames(record, prep))
    if not chunks:
        raise VideoDecodeError(record.source, "no frames")
    return np.concatenate(chunks)


def iter_frames(record: VideoRecord, prep: Preprocess, chunk: int = 256) -> Iterator[np.ndarray]:
    """The frames of `record` in order, in (n<=chunk, H, W, C) uint8 pieces, so memory does not grow with length.

    Raises:
        VideoDecodeError: at the first frame that cannot be decoded, or at the end when fewer frames came out than
            the file declares (a truncated or damaged file).
    """
    if record.is_video_file:
        yield from _iter_video(record.source, prep, chunk)
    else:
        if not record.frame_files:
            raise VideoDecodeError(record.source, "no frame images in this folder")
        yield from _iter_images(record.frame_files, prep, chunk)


def check_file(path: Path) -> None:
    """Fail early, with a reason, on files that are missing, unreadable, empty, or AVI files cut short."""
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "file is not readable (permissions)")
    size = path.stat().st_size
    if size == 0:
        raise VideoDecodeError(path, "file is empty")
    if path.suffix.lower() == ".avi":
        with open(path, "rb") as f:
            head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
            raise VideoDecodeError(path, "not an AVI file (no RIFF/AVI header)")
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if size < declared:
            raise VideoDecodeError(path, f"truncated: its header declares {declared} bytes, the file has {size}")


def _iter_video(path: Path, prep: Preprocess, chunk: int) -> Iterator[np.ndarray]:
    import decord

    check_file(path)
    resize = {"height": prep.size[0], "width": prep.size[1]} if prep.size else {}
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **resize)
    except Exception as exc:  # decord raises RuntimeError or its own DECORDError, with C++ traces attached
        raise VideoDecodeError(path, f"decord cannot open it: {_first_line(exc)}") from None
    try:
        declared = len(reader)
        decoded = 0
        while True:
            frames = _read_chunk(reader, path, chunk, decoded, prep.channels)
            if frames is None:
                break
            decoded += len(frames)
            yield frames
    finally:
        del reader
    if decoded == 0:
        raise VideoDecodeError(path, "no frames could be decoded")
    if decoded < declared:
        raise VideoDecodeError(path, f"truncated or damaged: decoded {decoded} of the {declared} frames it declares")


def _read_chunk(reader, path: Path, chunk: int, start: int, channels: int) -> np.ndarray | None:
    """Up to `chunk` frames read sequentially with next(), which stops where the stream really ends."""
    out = None
    n = 0
    while n < chunk:
        try:
            frame = reader.next().asnumpy()
        except StopIteration:
            break
        except Exception as exc:
            raise VideoDecodeError(path, f"decoding failed at frame {start + n}: {_first_line(exc)}") from None
        if out is None:
            out = np.empty((chunk, *frame.shape[:2], channels), dtype=np.uint8)
        out[n] = np.asarray(Image.fromarray(frame).convert("L"))[..., None] if channels == 1 else frame
        n += 1
    return None if out is None else out[:n]


def _iter_images(files: tuple[Path, ...], prep: Preprocess, chunk: int) -> Iterator[np.ndarray]:
    mode = "L" if prep.channels == 1 else "RGB"
    first_size = None
    for start in range(0, len(files), chunk):
        out = []
        for path in files[start : start + chunk]:
            image = _load_image(path, mode, prep.size)
            first_size = first_size or image.shape
            if image.shape != first_size:
                raise VideoDecodeError(path, f"frame of size {image.shape[:2]} in a video of {first_size[:2]}")
            out.append(image)
        yield np.stack(out)


def _load_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    check_file(path)
    try:
        with Image.open(path) as image:
            if size is not None:
                image.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale when much larger
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoDecodeError(path, f"cannot decode image: {exc}") from None
    return array[..., None] if array.ndim == 2 else array


def probe(record: VideoRecord) -> VideoRecord:
    """`record` with frame count and fps read from a video file's header; failures become problems."""
    if not record.is_video_file:
        return record
    import decord

    try:
        check_file(record.source)
        reader = decord.VideoReader(str(record.source), ctx=decord.cpu(0), num_threads=1)
        try:
            num_frames, fps = len(reader), float(reader.get_avg_fps())
        finally:
            del reader
    except VideoDecodeError as exc:
        return dataclasses.replace(record, problems=(*record.problems, Issue(exc.path, exc.reason)))
    except Exception as exc:
        issue = Issue(str(record.source), f"decord cannot open it: {_first_line(exc)}")
        return dataclasses.replace(record, problems=(*record.problems, issue))
    problems = record.problems
    if record.labels is not None and len(record.labels) != num_frames:
        problems = (*problems, label_length_issue(record, num_frames))
    return dataclasses.replace(record, num_frames=num_frames, fps=fps or record.fps, problems=problems)


def label_length_issue(record: VideoRecord, num_frames: int) -> Issue:
    """The report line for labels whose length is not the video's frame count."""
    where = record.label_source or record.source
    return Issue(str(where), f"{len(record.labels)} frame labels for {record.video_id}, which has {num_frames} frames")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
