"""Decode one record into uint8 frames (T, H, W, C): a video decoder for video files, Pillow for frame images.

Video files go through one of the backends of `memae.datasets.decoders` ("decord", "opencv", "torchcodec"; the
`decoder=` argument, "auto" for the fastest installed, `DEFAULT_DECODER` when not given). Whatever the backend,
each call opens one reader, reads sequentially until the stream really ends, releases the reader, and compares the
count it decoded with what the file promised. A damaged input raises `VideoDecodeError(path, reason, detail)`: the
reason in plain words ("holds no frames", "not a video decord can read (corrupt or truncated)"), the decoder's own
text in `detail`; nothing is silently dropped.

decord and OpenCV both rescale a video whose frame size changes mid-stream to its first size without a word, and
expose no per-frame size; for frame images the change is seen, and reported as a note (or refused when the frames
are kept at their own size, which a change makes impossible).

decord resizes while decoding; OpenCV and torchcodec decode at full size and resize after (decoders.py says how).
Grayscale is ITU-R 601 luma for video and image frames alike: Pillow's "L" conversion of the colour frame (decord,
frame images) or the luma plane the encoder stored (OpenCV), within about a gray level of each other.

    from memae.datasets import open_dataset, decode, Preprocess
    record = open_dataset("avenue", "/data/Avenue Dataset", split="test")[0]
    frames = decode(record, Preprocess(size=(256, 256), color="gray"))   # (1439, 256, 256, 1) uint8
    frames = decode(record, Preprocess(size=(256, 256), color="gray"), decoder="opencv")
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from memae.datasets.listing import path_problem
from memae.datasets.records import Issue, VideoRecord

if TYPE_CHECKING:
    from memae.datasets.decoders import OpenVideo

log = logging.getLogger(__name__)

UNREADABLE_VIDEO = "not a video decord can read (corrupt or truncated)"
NO_FRAMES = "holds no frames"
DECODERS = ("decord", "opencv", "torchcodec")  # the registered video backends (decoders.BACKENDS)
DEFAULT_DECODER = "decord"  # what library callers get; ingest's --decoder defaults to "auto"
PEEKED_FRAMES = 16  # decoded by `RecordFrames.header` of a file that declares no frame count (the rest follow)


def unreadable(decoder: str) -> str:
    """The reason given for a file that `decoder` cannot open and that is not known to be empty."""
    return f"not a video {decoder} can read (corrupt or truncated)"


def decoder_status() -> dict[str, str | None]:
    """Each registered backend: None when it is usable here, else why not (its import error)."""
    from memae.datasets.decoders import unavailable

    return {name: unavailable(name) for name in DECODERS}


def resolve_decoder(name: str) -> str:
    """`name`, or for "auto" the first usable backend of `decoders.AUTO_ORDER` (the fastest measured first).

    Raises:
        ValueError: an unknown name, a backend that cannot be used here (with its reason), or "auto" with none.
    """
    from memae.datasets.decoders import AUTO_ORDER, unavailable

    if name == "auto":
        for candidate in AUTO_ORDER:
            if unavailable(candidate) is None:
                return candidate
        raise ValueError("no video decoder can be used here: " + "; ".join(f"{n}: {unavailable(n)}" for n in DECODERS))
    if name not in DECODERS:
        raise ValueError(f"decoder must be auto or one of {', '.join(DECODERS)}, not {name!r}")
    if (reason := unavailable(name)) is not None:
        raise ValueError(f"decoder {name} cannot be used here: {reason}")
    return name


class VideoDecodeError(RuntimeError):
    """A video or frame image that cannot be decoded; `path` names the file, `reason` says what is wrong in plain
    words, and `detail` keeps the decoder's own text (empty when there is none)."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


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


def decode(record: VideoRecord, prep: Preprocess, decoder: str = DEFAULT_DECODER) -> np.ndarray:
    """All frames of `record` as one (T, H, W, C) uint8 array. For long videos prefer `iter_frames`."""
    chunks = list(iter_frames(record, prep, decoder=decoder))
    if not chunks:
        raise VideoDecodeError(record.source, "no frames")
    return np.concatenate(chunks)


def iter_frames(
    record: VideoRecord,
    prep: Preprocess,
    chunk: int = 256,
    notes: list[Issue] | None = None,
    decoder: str = DEFAULT_DECODER,
) -> Iterator[np.ndarray]:
    """The frames of `record` in order, in (n<=chunk, H, W, C) uint8 pieces, so memory does not grow with length.

    Args:
        notes: where to add what is worth reporting but does not stop decoding (frame images whose size changes
            mid-video, rescaled to the stored size); logged as warnings when not given.
        decoder: the video backend ("auto" for the fastest installed); frame images always go through Pillow.

    Raises:
        VideoDecodeError: at the first frame that cannot be decoded, or at the end when fewer frames came out than
            the file declares (a truncated or damaged file).
    """
    with open_frames(record, prep, notes, decoder) as frames:
        yield from frames.chunks(chunk)


class RecordFrames:
    """One record, opened once: its header (`header()`), then its frames (`chunks()`); a context manager.

    Reading the header from the reader that then decodes saves opening a video twice, about a tenth of the CPU of
    ingesting a short video (benchmarks/bench_ingest.py). A video the chosen backend cannot open, or fails on within
    its first chunk, is read by the next installed one (`decoders.AUTO_ORDER`) with a note saying so: decord refuses
    some files other decoders read whole (an MPEG-TS of a single H.264 group of pictures with B-frames), and a
    readable video is not to be reported damaged. `decoder` names the backend that reads it. A failure after the
    first chunk came out is the file's: reported, never decoded a second time; when every backend fails, the chosen
    one's failure is raised.
    """

    def __init__(self, record: VideoRecord, prep: Preprocess, notes: list[Issue] | None, decoder: str) -> None:
        from memae.datasets.decoders import AUTO_ORDER, BACKENDS, unavailable

        self.record, self.prep, self.notes = record, prep, notes
        self.decoder = resolve_decoder(decoder) if record.is_video_file else "pillow"
        self.video: OpenVideo | None = None
        self._others = [n for n in AUTO_ORDER if n != self.decoder and unavailable(n) is None]
        self._failure: tuple[str, VideoDecodeError] | None = None  # the chosen backend's, while another stands in
        self._pieces: Iterator[np.ndarray] | None = None  # the video's chunks, once asked for (or peeked at)
        if record.is_video_file:
            check_file(record.source)
            try:
                self.video = BACKENDS[self.decoder].open(record.source, prep.size, prep.channels)
            except VideoDecodeError as exc:
                self._fall_back(exc)

    def _fall_back(self, failure: VideoDecodeError) -> None:
        """Opens the next installed backend after `failure`, before any chunk came out; raises the chosen backend's
        failure when none is left that opens the file."""
        from memae.datasets.decoders import BACKENDS

        self._failure = self._failure or (self.decoder, failure)
        self.close()
        while self._others:
            name = self._others.pop(0)
            try:
                self.video = BACKENDS[name].open(self.record.source, self.prep.size, self.prep.channels)
            except VideoDecodeError:
                continue
            self.decoder = name
            return
        raise self._failure[1]

    def header(self) -> VideoRecord:
        """The record with the frame count and fps its video file's header declares; frame folders as they are.

        A file that declares no frame count (a bare H.264 stream, `.h264`) gets None, the count decoding finds, once
        its first frames are decoded here: an empty file is refused now, not after the caller has begun.

        Raises:
            VideoDecodeError: the file holds no frames.
        """
        if self.video is None:
            return self.record
        if not self.video.declared and self._pieces is None:
            pieces = self._readable_chunks(PEEKED_FRAMES)
            self._pieces = itertools.chain([next(pieces)], pieces)
        return dataclasses.replace(self.record, num_frames=self.video.declared or None,
                                   fps=self.video.fps or self.record.fps)

    def chunks(self, chunk: int = 256) -> Iterator[np.ndarray]:
        """The frames in order, as `iter_frames` gives them (read once: the reader is not rewound)."""
        if self.video is not None:
            self._pieces = self._pieces or self._readable_chunks(chunk)
            yield from self._pieces
        elif not self.record.frame_files:
            raise VideoDecodeError(self.record.source, "no frame images in this folder")
        else:
            yield from _iter_images(self.record.frame_files, self.prep, chunk, self.notes)

    def _readable_chunks(self, chunk: int) -> Iterator[np.ndarray]:
        """The video's chunks from the first backend that decodes its first chunk (`_fall_back`)."""
        while True:
            pieces = _video_chunks(self.record.source, self.video, chunk, self.decoder)
            try:
                first = next(pieces)
            except VideoDecodeError as exc:
                self._fall_back(exc)
                continue
            break
        if self._failure is not None:
            chosen, failure = self._failure
            _note(self.notes, Issue(str(self.record.source), f"read with {self.decoder}, as {chosen} failed: "
                                                             f"{failure.reason}"))
        yield first
        yield from pieces

    def close(self) -> None:
        if self.video is not None:
            self.video.close()
            self.video = None

    def __enter__(self) -> RecordFrames:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_frames(
    record: VideoRecord, prep: Preprocess, notes: list[Issue] | None = None, decoder: str = DEFAULT_DECODER
) -> RecordFrames:
    """`record` opened for reading its header and frames (arguments as `iter_frames`'s); use it with `with`.

    Raises:
        VideoDecodeError: a video file that cannot be opened.
    """
    return RecordFrames(record, prep, notes, decoder)


def check_file(path: Path) -> None:
    """Fail early, with a reason, on files that are missing, links that lead nowhere, folders, unreadable or empty
    files, and AVI files cut short."""
    problem = path_problem(path)
    if problem is not None:
        raise VideoDecodeError(path, problem)
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


def _video_chunks(path: Path, video: OpenVideo, chunk: int, decoder: str) -> Iterator[np.ndarray]:
    decoded = 0
    for frames in video.chunks(chunk):
        decoded += len(frames)
        yield frames
    declared = video.declared
    if path.suffix.lower() == ".avi":  # decord counts only the frames it can index: a damaged AVI looks whole to it
        declared = max(declared, _avi_frames(path) or 0)
    if decoded == 0:
        raise VideoDecodeError(path, NO_FRAMES, f"{decoder} declared {declared} frames and decoded none")
    if decoded < declared:
        raise VideoDecodeError(path, f"truncated or damaged: decoded {decoded} of the {declared} frames it declares")


def _iter_images(
    files: tuple[Path, ...], prep: Preprocess, chunk: int, notes: list[Issue] | None
) -> Iterator[np.ndarray]:
    mode = "L" if prep.channels == 1 else "RGB"
    first_size, changed = None, False
    for start in range(0, len(files), chunk):
        out = []
        for index, path in enumerate(files[start : start + chunk], start):
            image, size = _load_image(path, mode, prep.size)
            first_size = first_size or size
            if size != first_size and not changed:
                change = f"frame size changes from {_hxw(first_size)} to {_hxw(size)} at frame {index}"
                if prep.size is None:
                    raise VideoDecodeError(path, f"{change}: frames kept at their own size cannot be stored together; "
                                                 "give a frame size to rescale them")
                _note(notes, Issue(str(path), f"{change}; rescaled to {_hxw(prep.size)} like the others"))
                changed = True  # said once per video
            out.append(image)
        yield np.stack(out)


def _load_image(path: Path, mode: str, size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The image at `path` as (H, W, C) uint8 in `mode`, resized to `size`; and its own (height, width)."""
    check_file(path)
    try:
        with Image.open(path) as image:
            own = (image.height, image.width)
            if size is not None:
                image.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale when much larger
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image)
    except Image.DecompressionBombError as exc:
        raise VideoDecodeError(path, "cannot decode image: larger than any frame should be", str(exc)) from None
    except (OSError, ValueError) as exc:
        raise VideoDecodeError(path, "cannot decode image (corrupt, truncated or not an image)", str(exc)) from None
    return (array[..., None] if array.ndim == 2 else array), own


def _hxw(size: tuple[int, ...]) -> str:
    return f"{size[0]}x{size[1]}"


def _note(notes: list[Issue] | None, issue: Issue) -> None:
    if notes is None:
        log.warning("%s: %s", issue.file, issue.reason)
    else:
        notes.append(issue)


def read_header(record: VideoRecord, decoder: str = DEFAULT_DECODER) -> VideoRecord:
    """`record` with the frame count and fps its video file's header declares; frame folders come back unchanged.

    Raises:
        VideoDecodeError: the file cannot be opened, or holds no frames.
    """
    if not record.is_video_file:
        return record
    with open_frames(record, Preprocess(None, "rgb"), [], decoder) as frames:  # notes: decoding repeats them
        return frames.header()


def probe(record: VideoRecord, decoder: str = DEFAULT_DECODER) -> VideoRecord:
    """`record` with frame count and fps read from a video file's header; failures become problems."""
    if not record.is_video_file:
        return record
    try:
        probed = read_header(record, decoder)
    except VideoDecodeError as exc:
        return dataclasses.replace(record, problems=(*record.problems, Issue(exc.path, exc.reason)))
    if (issue := declared_label_issue(probed)) is not None:
        return dataclasses.replace(probed, problems=(*probed.problems, issue))
    return probed


def declared_label_issue(record: VideoRecord) -> Issue | None:
    """The report line when a record's labels do not match the frame count its header declares (`header()`,
    `read_header`), None when they do or either is unknown."""
    if record.labels is None or record.num_frames is None or len(record.labels) == record.num_frames:
        return None
    return label_length_issue(record, record.num_frames)


def label_length_issue(record: VideoRecord, num_frames: int) -> Issue:
    """The report line for labels whose length is not the video's frame count."""
    where = record.label_source or record.source
    return Issue(str(where), f"{len(record.labels)} frame labels for {record.video_id}, which has {num_frames} frames")


def open_error(path: str | Path, exc: BaseException, decoder: str = "decord") -> VideoDecodeError:
    """A decoder's refusal to open a file, in plain words; its own text kept as the detail.

    decord says the same of an AVI recorded with no frames and of a damaged one ("cannot find video stream", "Cannot
    create buffer source"): the frame count in an AVI's header tells them apart. Other containers without a video
    stream hold no frames: decord says "cannot find video stream"; OpenCV says nothing, and an MP4 whose movie box
    lists no track is recognised from its boxes (decoders.mp4_without_tracks).
    """
    if Path(path).suffix.lower() == ".avi":
        empty = _avi_frames(path) == 0
    else:
        empty = "cannot find video stream" in str(exc) or bool(getattr(exc, "no_video_stream", False))
    return VideoDecodeError(path, NO_FRAMES if empty else unreadable(decoder), first_line(exc))


def _avi_frames(path: str | Path) -> int | None:
    """The total frame count in an AVI file's main header (avih), None when there is no such header."""
    try:
        with open(path, "rb") as f:
            head = f.read(52)
    except OSError:
        return None
    if len(head) < 52 or head[:4] != b"RIFF" or head[12:16] != b"LIST" or head[24:28] != b"avih":
        return None
    return struct.unpack("<I", head[48:52])[0]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (decord attaches C++ traces), at most 200 characters."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
