"""The video decoders behind `memae.datasets.decode`: decord, OpenCV and torchcodec, one small interface.

A backend opens one file (`Backend.open`) and returns an `OpenVideo`: the frame count and rate its header declares,
and the frames in order, in (n<=chunk, H, W, C) uint8 pieces already at the stored size and colour. What every
backend shares stays in decode.py: the checks before opening (`check_file`), the frame-count check after reading,
and the errors (`VideoDecodeError` naming the file, the reason in plain words, the decoder's own text as detail).
A backend's library is imported only when it is used; `decoder_status()` says which are usable here and why not.

    from memae.datasets.decode import decode, decoder_status, resolve_decoder
    decoder_status()                 # {'decord': None, 'opencv': None, 'torchcodec': 'cannot import ...'}
    frames = decode(record, Preprocess((256, 256), "gray"), decoder=resolve_decoder("auto"))

- "opencv": OpenCV's FFmpeg, one decoding thread per video. Gray frames are the video's own luma plane, read without
  any colour conversion and expanded from limited range (16-235) when the file is limited-range; the first frame,
  also decoded to colour, decides the range and vouches for the plane (a format whose plane does not match, 10-bit
  video for one, is decoded to colour instead). The luma an encoder stores is the ITU-R 601 weighting, so this is
  Pillow's "L" of the colour frame within about one gray level. OpenCV's capture cannot resize while decoding: each
  frame is halved with a box filter while it is at least twice the stored size, then resized bilinearly.
- "decord": resizes while decoding (FFmpeg's swscale), gray by Pillow's "L" of each RGB frame; known native leaks
  and a rare deadlock on files that over-report their frame count (one reader per file, released, counts checked).
- "torchcodec": PyTorch's FFmpeg decoder, one thread, in batches; it needs FFmpeg's shared libraries on the system
  and a torchcodec build that matches torch (the PyPI wheel is built for CUDA torch). Gray and resizing as OpenCV's
  colour path. Not exercised where it cannot be imported (the tests skip it and say why).

`AUTO_ORDER` is the order `auto` tries, fastest first on CPU (benchmarks/bench_decode.py, README "Decoders and shard
encoding"): on H.264 640x480 to 256x256 gray, OpenCV's luma path took about half the CPU time of decord.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

AUTO_ORDER = ("opencv", "torchcodec", "decord")  # what `auto` picks first: the fastest measured on CPU
LUMA_TOLERANCE = 3.0  # mean gray levels a first frame's luma plane may differ from its colour decode, to be used
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class OpenVideo(Protocol):
    """One open video file: what its header declares, and its frames in order."""

    declared: int  # frame count the header declares (may be an estimate; checked against what was decoded)
    fps: float

    def chunks(self, chunk: int) -> Iterator[np.ndarray]:
        """(n<=chunk, H, W, C) uint8 pieces at the size and colour it was opened for, in order, until the end.

        Raises:
            VideoDecodeError: at a frame the decoder refuses.
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    """A registered decoder: its name, the module it needs, and how it opens a file."""

    name: str
    module: str  # imported to tell whether the backend is usable here
    open: Callable[[Path, tuple[int, int] | None, int], OpenVideo]  # (path, size, channels); raises VideoDecodeError
    resizes_while_decoding: bool


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` (H, W) or (H, W, C) resized to `size` (height, width): halved with a box filter while at least twice
    the target on both sides (OpenCV's fast integer path), then bilinear. 0.05 ms from 480x640 to 256x256 where
    OpenCV's area resampling costs 0.45 ms, within a gray level of a Lanczos resize on the synthetic corpus."""
    import cv2

    height, width = size
    h, w = image.shape[:2]
    while h >= 2 * height and w >= 2 * width:
        image = cv2.resize(image[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    if (h, w) != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image


def finish_rgb(frame: np.ndarray, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """An RGB (H, W, 3) frame at the stored size and colour, (H', W', channels); gray is ITU-R 601 luma."""
    import cv2

    if channels == 1:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    frame = fit(frame, size)
    return frame.reshape(*frame.shape[:2], channels)


def fit(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`image` at `size` (`shrink`), or as it is when `size` is None."""
    return image if size is None else shrink(image, size)


# ---- decord --------------------------------------------------------------------------------------------------------


class _DecordVideo:
    def __init__(self, path: Path, size: tuple[int, int] | None = None, channels: int = 3) -> None:
        self.path, self.channels = path, channels
        self.reader = _decord_reader(path, size)  # resizes while decoding
        self.declared, self.fps = len(self.reader), float(self.reader.get_avg_fps())

    def chunks(self, chunk: int) -> Iterator[np.ndarray]:
        from PIL import Image

        from memae.datasets.decode import VideoDecodeError, first_line

        channels = self.channels
        start = 0
        while True:
            out, n = None, 0
            while n < chunk:
                try:
                    frame = self.reader.next().asnumpy()
                except StopIteration:
                    break
                except Exception as exc:
                    reason = f"decoding failed at frame {start + n} (corrupt data)"
                    raise VideoDecodeError(self.path, reason, first_line(exc)) from None
                if out is None:
                    out = np.empty((chunk, *frame.shape[:2], channels), dtype=np.uint8)
                out[n] = np.asarray(Image.fromarray(frame).convert("L"))[..., None] if channels == 1 else frame
                n += 1
            if out is None:
                return
            start += n
            yield out[:n]

    def close(self) -> None:
        del self.reader  # decord leaks when readers pile up: one per file, released at once


def _decord_reader(path: Path, size: tuple[int, int] | None):
    import decord

    from memae.datasets.decode import open_error

    resize = {"height": size[0], "width": size[1]} if size else {}
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **resize)
    except Exception as exc:  # decord raises RuntimeError or its own DECORDError, with C++ traces attached
        raise open_error(path, exc, "decord") from None


# ---- OpenCV --------------------------------------------------------------------------------------------------------


class _OpenCVVideo:
    def __init__(self, path: Path, size: tuple[int, int] | None = None, channels: int = 3) -> None:
        import cv2

        self.path, self.size, self.channels = path, size, channels
        self.capture = _capture(path, convert=True)
        self.luma = False  # reading the raw luma plane
        self.declared = max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def chunks(self, chunk: int) -> Iterator[np.ndarray]:
        import cv2

        size, channels = self.size, self.channels
        lut, first = self._switch_to_luma() if channels == 1 else (None, None)
        convert = cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB
        while True:
            out, n = None, 0
            while n < chunk:
                if first is not None:
                    frame, first = first, None
                else:
                    ok, frame = self._read()  # False at the end, and where the stream is damaged: counted
                    if not ok:
                        break
                if lut is None:
                    frame = fit(cv2.cvtColor(frame, convert), size)
                else:  # the luma plane, (H, W): resized, then mapped to full range (cheaper at the smaller size)
                    frame = fit(frame, size)
                    frame = frame if lut is _IDENTITY else cv2.LUT(frame, lut)
                if out is None:
                    out = np.empty((chunk, *frame.shape[:2], channels), dtype=np.uint8)
                out[n] = frame.reshape(out.shape[1:])
                n += 1
            if out is None:
                return
            yield out[:n]

    def _read(self) -> tuple[bool, np.ndarray]:
        if not self.luma:
            return self.capture.read()
        with _quiet_opencv():
            return self.capture.read()

    def _switch_to_luma(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(LUT from the luma plane to gray, the first frame's plane), or (None, None) to decode to colour.

        The colour capture decodes the first frame as the reference; a second capture, opened for the raw plane, reads
        the same frame and, when it matches, replaces the first and carries on from there.
        """
        import cv2

        ok, colour = self.capture.read()
        if not ok:
            return None, None  # no frame at all: the colour path finds none either, and that is reported
        raw = _capture(self.path, convert=False)
        with _quiet_opencv():
            ok, plane = raw.read()
        lut = _plane_to_gray(plane, cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)) if ok else None
        self.capture.release()
        if lut is None:
            raw.release()
            self.capture = _capture(self.path, convert=True)  # from frame 0 again, in colour
            return None, None
        self.capture, self.luma = raw, True
        return lut, plane

    def close(self) -> None:
        self.capture.release()


_IDENTITY = np.arange(256, dtype=np.uint8)


def _plane_to_gray(plane: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """The LUT (limited-to-full range, or none) that takes a raw plane closest to the colour decode's gray, None when
    neither comes within LUMA_TOLERANCE (not a luma plane: 10-bit video, a packed format)."""
    import cv2

    if plane.ndim != 2 or plane.shape != reference.shape or plane.dtype != np.uint8:
        return None
    reference = reference.astype(np.float32)
    scored = [(float(np.abs(cv2.LUT(plane, lut) - reference).mean()), lut) for lut in (_LIMITED_TO_FULL, _IDENTITY)]
    error, lut = min(scored, key=lambda pair: pair[0])
    return lut if error <= LUMA_TOLERANCE else None


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV warns on every raw-plane frame it returns ("will be treated as 8UC1"): errors only, meanwhile."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _capture(path: Path, convert: bool):
    import cv2

    from memae.datasets.decode import open_error

    one_thread = [cv2.CAP_PROP_N_THREADS, 1]
    if convert:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, one_thread)
    else:
        with _quiet_opencv():  # it warns that the raw plane is at our own risk: _plane_to_gray checks it
            capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [*one_thread, cv2.CAP_PROP_CONVERT_RGB, 0])
    if not capture.isOpened():
        raise open_error(path, _OpenCVRefused(path), "opencv")
    return capture


class _OpenCVRefused(RuntimeError):
    """OpenCV says nothing about why it cannot open a file: this says what can be known."""

    def __init__(self, path: Path) -> None:
        empty = mp4_without_tracks(path)
        text = "OpenCV's FFmpeg backend could not open it"
        super().__init__(f"{text}; its MP4 movie box lists no track" if empty else text)
        self.no_video_stream = empty


def mp4_without_tracks(path: str | Path) -> bool:
    """True for an MP4/MOV file whose movie box (moov) holds no track, as a recorder stopped at once leaves it."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, 2)
            return _boxes_without(f, 0, end, b"moov", b"trak")
    except (OSError, struct.error, ValueError):
        return False


def _boxes_without(f, start: int, end: int, parent: bytes, child: bytes) -> bool:
    """Whether the first `parent` box between `start` and `end` holds no `child` box (False when there is none)."""
    at = start
    while at + 8 <= end:
        f.seek(at)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            return False  # not ISO media, or cut short: not for this check to say
        if kind == parent:
            inner = at + header
            while inner + 8 <= at + size:
                f.seek(inner)
                inner_size, inner_kind = struct.unpack(">I4s", f.read(8))
                if inner_kind == child:
                    return False
                if inner_size < 8:
                    return False
                inner += inner_size
            return True
        at += size
    return False


# ---- torchcodec ----------------------------------------------------------------------------------------------------


class _TorchcodecVideo:
    def __init__(self, path: Path, size: tuple[int, int] | None = None, channels: int = 3) -> None:
        from torchcodec.decoders import VideoDecoder

        from memae.datasets.decode import open_error

        self.path, self.size, self.channels = path, size, channels
        try:
            self.decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1,
                                        seek_mode="approximate")
        except Exception as exc:
            raise open_error(path, exc, "torchcodec") from None
        meta = self.decoder.metadata
        self.declared, self.fps = int(meta.num_frames or 0), float(meta.average_fps or 0.0)

    def chunks(self, chunk: int) -> Iterator[np.ndarray]:
        from memae.datasets.decode import VideoDecodeError, first_line

        for start in range(0, self.declared, chunk):
            try:
                batch = self.decoder.get_frames_in_range(start, min(self.declared, start + chunk)).data.numpy()
            except Exception as exc:
                raise VideoDecodeError(self.path, f"decoding failed at frame {start} (corrupt data)",
                                       first_line(exc)) from None
            if len(batch) == 0:
                return
            yield np.stack([finish_rgb(frame, self.size, self.channels) for frame in batch])

    def close(self) -> None:
        del self.decoder


BACKENDS = {
    "decord": Backend("decord", "decord", _DecordVideo, resizes_while_decoding=True),
    "opencv": Backend("opencv", "cv2", _OpenCVVideo, resizes_while_decoding=False),
    "torchcodec": Backend("torchcodec", "torchcodec.decoders", _TorchcodecVideo, resizes_while_decoding=False),
}


@cache
def unavailable(name: str) -> str | None:
    """Why backend `name` cannot be used here (its import fails, with the error's first line), None when it can."""
    from memae.datasets.decode import first_line

    try:
        importlib.import_module(BACKENDS[name].module)
    except Exception as exc:  # torchcodec raises OSError or RuntimeError when its native libraries do not load
        return f"cannot import {BACKENDS[name].module}: {first_line(exc)}"
    return None
