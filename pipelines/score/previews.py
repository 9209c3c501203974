"""Short animated previews of alarms: the frames that were scored beside their per-pixel error maps, as animated WebP.

Each video with alarms to show is decoded again, once, in a Ray task of its own (pipelines/score/isolated.py, as for
the worst frames): at the model's size and colour (the frames the model saw), keeping only the frames around its
alarms. The driver's model then gives the error maps of the few clips that cover them, and each alarm becomes one
looping animation under a byte budget. A video that cannot be read again (corrupt, vanished, its decoder crashed)
gives a `Preview` that says why instead of an image, and the review page shows that reason on the alarm's card.

    requests = [VideoRequest(unit, unit.key, num_frames=240, fps=10.0, alarms=((40, 61),))]
    previews = render_previews(requests, source, settings, config)   # {"test/01": [Preview(image=b"RIFF...")]}
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from memae.scoring import error_maps
from memae.transforms import clips_to_tensor
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.actors import driver_model
from pipelines.score.config import ScoreConfig
from pipelines.score.data import VideoUnit, unit_frames
from pipelines.score.isolated import read_each

PREVIEW_FRAMES = 24  # frames per animation at most: a long alarm is shown sped up
PREVIEW_BYTES = 250_000  # an animation is encoded again, smaller, until it fits
CONTEXT_S = 0.5  # seconds shown before and after each alarm
DEFAULT_FPS = 10.0  # playback speed when the archive records no frame rate
MODEL_BATCH = 8  # clips per model call
QUALITIES = (70, 45, 25)  # WebP qualities tried in turn before frames are dropped
MARK = np.array([230, 40, 40], np.uint8)  # border of the frames inside the alarm (context frames have none)


@dataclass(frozen=True)
class VideoRequest:
    """The alarms of one video to animate, each as (start_frame, end_frame), inclusive."""

    unit: VideoUnit | None  # None: the video is not in this run's listing (it vanished)
    key: str
    num_frames: int
    fps: float | None
    alarms: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Preview:
    """An alarm's animation (animated WebP), or the reason there is none."""

    image: bytes | None
    reason: str | None = None
    size: tuple[int, int] = (0, 0)  # (width, height) in pixels
    speedup: int = 1  # every n-th frame is shown, at n times the frame interval (real time)

    @classmethod
    def unavailable(cls, reason: str) -> Preview:
        return cls(None, reason)


@dataclass(frozen=True)
class FramePlan:
    """Which frames an alarm's animation shows, and the clip each one's error map comes from."""

    alarm: tuple[int, int]
    shown: list[int]
    clip_of: dict[int, int]  # shown frame -> start of the clip whose error map it shows
    clip_len: int
    step: int

    @property
    def needed(self) -> set[int]:
        """The frames to decode: those of every clip used."""
        return {f for start in set(self.clip_of.values()) for f in range(start, start + self.clip_len)}


def render_previews(requests: list[VideoRequest], source: ModelSource, settings: ScoringSettings,
                    config: ScoreConfig, echo: Callable[[str], None] = print) -> dict[str, list[Preview]]:
    """{request key: one Preview per alarm}; never raises for a video. Decoding runs in Ray tasks (started if need
    be), the model in this process (on its GPU when it has one)."""
    previews = {r.key: _unavailable(r, "the video is no longer in the archive") for r in requests if r.unit is None}
    readable = [r for r in requests if r.unit is not None]
    if not readable:
        return previews
    plans = {r.key: [frame_plan(alarm, r.num_frames, r.fps, settings.clip_len) for alarm in r.alarms]
             for r in readable}
    fps = {r.key: r.fps for r in readable}
    model, device = driver_model(source)
    wanted = [(r.unit, set().union(*(plan.needed for plan in plans[r.key]))) for r in readable]
    for unit, frames, failure in read_each(wanted, read_frames, settings, config):
        if failure is not None:
            echo(f"review page: no preview of {unit.key}, it cannot be read again: {failure.file}: {failure.reason}")
            previews[unit.key] = [Preview.unavailable(failure.reason or "it cannot be read again")
                                  for _ in plans[unit.key]]
            continue
        previews[unit.key] = [_animated(plan, frames, model, device, fps[unit.key]) for plan in plans[unit.key]]
    return previews


def _animated(plan: FramePlan, frames: Mapping[int, np.ndarray], model: torch.nn.Module, device: torch.device,
              fps: float | None) -> Preview:
    try:
        return animate(plan, frames, model, device, fps)
    except Exception as exc:  # one alarm's preview, never the page
        return Preview.unavailable(f"{type(exc).__name__}: {exc}")


def frame_plan(alarm: tuple[int, int], num_frames: int, fps: float | None, clip_len: int) -> FramePlan:
    """The alarm with CONTEXT_S around it, every `step`-th frame so that at most PREVIEW_FRAMES are shown; each
    shown frame takes its error map from the clip centred on it, reused for the next frames it covers."""
    start, end = alarm
    context = round(CONTEXT_S * (fps or DEFAULT_FPS))
    first, last = max(0, start - context), min(num_frames - 1, end + context)
    step = max(1, math.ceil((last - first + 1) / PREVIEW_FRAMES))
    shown = list(range(first, last + 1, step))
    clip_of: dict[int, int] = {}
    current: int | None = None
    for frame in shown:
        if current is None or not current <= frame < current + clip_len:
            current = max(0, min(frame - clip_len // 2, num_frames - clip_len))
        clip_of[frame] = current
    return FramePlan(alarm, shown, clip_of, clip_len, step)


def read_frames(unit: VideoUnit, settings: ScoringSettings, needed: set[int]) -> dict[int, np.ndarray]:
    """The `needed` frames of a video, decoded in one sequential pass that stops after the last of them (runs in a
    Ray task). Raises ValueError when the video now ends before them."""
    chunks, _ = unit_frames(unit, settings)
    found: dict[int, np.ndarray] = {}
    offset, last = 0, max(needed)
    for chunk in chunks:
        for i in range(len(chunk)):
            if offset + i in needed:
                found[offset + i] = chunk[i].copy()
        offset += len(chunk)
        if offset > last:
            break
    if len(found) < len(needed):
        raise ValueError(f"it now ends after {offset} frames, before frame {last}")
    return found


@torch.inference_mode()
def animate(plan: FramePlan, frames: Mapping[int, np.ndarray], model: torch.nn.Module, device: torch.device,
            fps: float | None) -> Preview:
    """The alarm's animation: each shown frame beside its error map, one colour scale for the whole alarm."""
    starts = sorted(set(plan.clip_of.values()))
    maps: dict[int, np.ndarray] = {}  # clip start -> (T, H, W) per-pixel errors
    for i in range(0, len(starts), MODEL_BATCH):
        batch = starts[i : i + MODEL_BATCH]
        clips = np.stack([np.stack([frames[s + t] for t in range(plan.clip_len)]) for s in batch])
        x = clips_to_tensor(clips).to(device)
        errors = error_maps(x, model(x)["output"].to(x.dtype)).cpu().numpy()
        maps.update(zip(batch, errors, strict=True))
    shown_maps = [maps[plan.clip_of[f]][f - plan.clip_of[f]] for f in plan.shown]
    top = float(np.quantile(np.stack(shown_maps), 0.995)) or 1.0
    start, end = plan.alarm
    images = [side_by_side(frames[f], error_map, top, start <= f <= end)
              for f, error_map in zip(plan.shown, shown_maps, strict=True)]
    image, dropped = encode_animation(images, 1000.0 * plan.step / (fps or DEFAULT_FPS))
    return Preview(image, size=(images[0].shape[1], images[0].shape[0]), speedup=plan.step * dropped)


def side_by_side(frame: np.ndarray, error_map: np.ndarray, top: float, inside: bool) -> np.ndarray:
    """The frame (RGB, a red border inside the alarm) and its error map in the inferno colours, 2 px apart."""
    rgb = np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame.copy()
    if inside:
        b = max(1, round(min(rgb.shape[:2]) / 40))  # about 1/40 of the frame, whatever its size
        rgb[:b], rgb[-b:], rgb[:, :b], rgb[:, -b:] = MARK, MARK, MARK, MARK
    levels = np.clip(np.nan_to_num(error_map / top) * 255, 0, 255).astype(np.uint8)
    gap = np.full((rgb.shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, _inferno()[levels]], axis=1)


def encode_animation(images: list[np.ndarray], interval_ms: float, budget: int = PREVIEW_BYTES) -> tuple[bytes, int]:
    """(a looping animated WebP of the RGB `images` under `budget` bytes, the factor of frames dropped to fit it).

    Lower qualities are tried first, then every other frame is dropped (and shown twice as long), until it fits.
    """
    step = 1
    while True:
        kept = images[::step]
        for quality in QUALITIES:
            data = _webp([Image.fromarray(image) for image in kept], interval_ms * step, quality)
            if len(data) <= budget or len(kept) == 1:
                return data, step
        step *= 2


def _webp(images: list[Image.Image], interval_ms: float, quality: int) -> bytes:
    buffer = io.BytesIO()
    images[0].save(buffer, format="WEBP", save_all=True, append_images=images[1:], duration=max(20, round(interval_ms)),
                   loop=0, quality=quality, method=4)
    return buffer.getvalue()


@functools.cache
def _inferno() -> np.ndarray:
    """The inferno colour map as a (256, 3) uint8 lookup table."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _unavailable(request: VideoRequest, reason: str) -> list[Preview]:
    return [Preview.unavailable(reason) for _ in request.alarms]
