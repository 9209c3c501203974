"""Synthetic surveillance scenes with known anomalies, written in the layout of a real archive.

A fixed camera looks at a paved walkway across a lawn. Normal activity is people walking along the walkway at
walking pace, in both directions, nearer ones larger. Anomalies, as in UCSD Ped2, are things that move or look unlike
the training data: cyclists, carts, runners and skateboarders on the same walkway. Training videos hold only people
walking; every test video starts normal and then holds one or more anomalous events, one after another, with exact
per-frame labels and pixel masks.

Everything is drawn with numpy and is deterministic by seed: video i of a split depends only on (seed, split, i),
so asking for more videos never changes the ones you had. The default corpus renders and writes in a few seconds.

    python jobs/synth.py --layout ucsd-ped2 --out /tmp/synth-ped2 --seed 0

    from experiments.synthetic import SynthConfig, render_video
    video = render_video(SynthConfig(), "test", 0)
    video.frames.shape, video.labels.sum(), video.masks.shape   # (120, 160, 240, 3), ..., (120, 160, 240)

Videos (.avi, .mp4) are encoded with OpenCV (`opencv-python-headless`) as MPEG-4 part 2, which decord reads back;
image frames are written with Pillow, Avenue's labels with scipy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from memae.datasets.records import ranges_from_labels

LAYOUTS = ("ucsd-ped1", "ucsd-ped2", "avenue", "shanghaitech", "frames", "videos")
ANOMALY_KINDS = ("cyclist", "cart", "runner", "skater")

# Speed relative to walking pace and how the figure looks; chosen so that at 64x64 an anomaly still differs from
# walkers by several pixels of size or of displacement per frame.
_KINDS = {
    "walker": {"speed": 1.0, "stride": 1.0},
    "runner": {"speed": 3.5, "stride": 0.6},
    "cyclist": {"speed": 3.0, "stride": 0.0},
    "skater": {"speed": 2.5, "stride": 0.0},
    "cart": {"speed": 2.0, "stride": 0.0},
}
_SPLIT_CODE = {"train": 1, "test": 2}


@dataclass(frozen=True)
class SynthConfig:
    """What to render. Sizes are in pixels, `crowd` is the mean number of people in view."""

    height: int = 160
    width: int = 240
    frames: int = 120
    train_videos: int = 4
    test_videos: int = 4
    fps: float = 10.0
    seed: int = 0
    crowd: float = 4.0
    max_events: int = 3
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS

    def __post_init__(self) -> None:
        if self.height < 48 or self.width < 64:
            raise ValueError(f"frame size {self.height}x{self.width} is too small to draw people (minimum 48x64)")
        if self.frames < 20:
            raise ValueError(f"videos need at least 20 frames, not {self.frames}")
        unknown = set(self.anomaly_kinds) - set(ANOMALY_KINDS)
        if unknown or not self.anomaly_kinds:
            raise ValueError(f"anomaly kinds must be a non-empty subset of {ANOMALY_KINDS}, got {self.anomaly_kinds}")


@dataclass
class SynthVideo:
    """One rendered video: RGB frames, the pixel masks and 0/1 labels of its anomalies, and what happened when."""

    video_id: str
    split: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, H, W) bool, True on anomalous objects
    labels: np.ndarray  # (T,) int8, 1 where any anomalous object is in view
    events: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Agent:
    kind: str
    t0: float  # frame at which the agent is at x0
    x0: float
    direction: int  # +1 left to right, -1 right to left
    foot: float  # image row of the feet
    speed: float  # pixels per frame at scale 1
    phase: float
    colors: tuple[tuple[int, int, int], ...]
    anomalous: bool


class _Scene:
    """The static camera view shared by every video of a corpus: background, walkway, perspective."""

    def __init__(self, cfg: SynthConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        h, w = cfg.height, cfg.width
        self.h, self.w = h, w
        self.path_top, self.path_bottom = 0.42 * h, 0.9 * h  # the walkway's band of foot rows
        self.person_height = 0.2 * h  # at the nearest row
        self.walk = w / 140.0  # px/frame at scale 1: about 14 s to cross at 10 fps
        rows = np.arange(h, dtype=np.float32)[:, None]
        cols = np.arange(w, dtype=np.float32)[None, :]
        slope = 0.06 * h * (cols / w - 0.5)
        on_path = (rows >= self.path_top - 0.08 * h + slope) & (rows <= self.path_bottom + 0.02 * h + slope)
        texture = _smooth_noise(rng, h, w, 8) * 14.0 + _smooth_noise(rng, h, w, 2) * 5.0
        grass = np.stack([70 + texture, 105 + texture, 60 + texture], axis=-1)
        paving = 150 + 0.6 * texture - 10 * ((cols.astype(int) // max(4, w // 24)) % 2 == 0)
        paving = np.repeat(paving[..., None], 3, axis=-1)
        bg = np.where(on_path[..., None], paving, grass)
        for _ in range(3):  # lamp posts and bins on the lawn: fixed clutter the model must learn as normal
            px, top = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.25) * h
            bg[int(top) : int(top + 0.25 * h), int(px) : int(px + max(2, w // 80))] = 45
        self.background = np.clip(bg, 0, 255).astype(np.float32)

    def scale(self, foot: float) -> float:
        """Perspective: figures near the top (far away) are smaller."""
        return 0.55 + 0.45 * (foot - self.path_top) / (self.path_bottom - self.path_top)


def render_video(cfg: SynthConfig, split: str, index: int, scene: _Scene | None = None) -> SynthVideo:
    """Render video `index` of `split` ("train" or "test"); the same arguments always give the same pixels."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    scene = scene or _Scene(cfg)
    rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index])
    agents = _walkers(cfg, scene, rng)
    events = _anomalies(cfg, scene, rng) if split == "test" else []
    agents += [agent for agent, _ in events]
    agents.sort(key=lambda a: a.foot)  # far to near: nearer figures are drawn over farther ones
    t_total, h, w = cfg.frames, cfg.height, cfg.width
    frames = np.empty((t_total, h, w, 3), dtype=np.uint8)
    masks = np.zeros((t_total, h, w), dtype=bool)
    seen: dict[int, list[int]] = {id(agent): [] for agent, _ in events}
    for t in range(t_total):
        canvas = scene.background * float(1.0 + 0.015 * np.sin(2 * np.pi * (t + 7 * index) / 90.0))
        for agent in agents:
            if _draw(canvas, masks[t] if agent.anomalous else None, agent, t, scene) and agent.anomalous:
                seen[id(agent)].append(t)
        canvas += rng.normal(0.0, 2.0, size=(h, w, 1)).astype(np.float32)
        np.clip(canvas, 0, 255, out=canvas)
        frames[t] = canvas.astype(np.uint8)
    labels = masks.reshape(t_total, -1).any(axis=1).astype(np.int8)
    described = [
        {"kind": kind, "first_frame": seen[id(agent)][0], "last_frame": seen[id(agent)][-1]}
        for agent, kind in events
        if seen[id(agent)]
    ]
    return SynthVideo(f"{split}{index:03d}", split, frames, masks, labels, described)


def _walkers(cfg: SynthConfig, scene: _Scene, rng: np.random.Generator) -> list[_Agent]:
    """People arriving at either end as a Poisson process, started one crossing early so the view is never empty."""
    crossing = (scene.w + 2 * scene.person_height) / scene.walk  # frames to cross the view at walking pace
    rate = cfg.crowd / crossing
    agents, t = [], -crossing
    while True:
        t += rng.exponential(1.0 / rate)
        if t >= cfg.frames:
            return agents
        agents.append(_new_agent("walker", t, scene, rng, anomalous=False))


def _anomalies(cfg: SynthConfig, scene: _Scene, rng: np.random.Generator) -> list[tuple[_Agent, str]]:
    """Up to max_events anomalous objects, one after another with normal frames between (several label ranges,
    as in UCSD Ped1); the first enters after 15-30% of the video, so every test video starts normal."""
    events = []
    t_enter = rng.uniform(0.15, 0.3) * cfg.frames
    while len(events) < cfg.max_events and t_enter < 0.85 * cfg.frames:
        kind = str(rng.choice(cfg.anomaly_kinds))
        agent = _new_agent(kind, t_enter, scene, rng, anomalous=True)
        events.append((agent, kind))
        crossing = (scene.w + 2 * scene.person_height) / (agent.speed * scene.scale(agent.foot))
        t_enter += crossing + rng.uniform(0.05, 0.2) * cfg.frames
    return events


def _new_agent(kind: str, t_enter: float, scene: _Scene, rng: np.random.Generator, anomalous: bool) -> _Agent:
    direction = 1 if rng.random() < 0.5 else -1
    margin = scene.person_height  # just out of view: the widest figure is 2 heights wide, so it shows at once
    x0 = -margin if direction == 1 else scene.w + margin
    foot = rng.uniform(scene.path_top + 0.05 * scene.h, scene.path_bottom)
    speed = scene.walk * _KINDS[kind]["speed"] * rng.uniform(0.85, 1.15)
    shirt = tuple(int(c) for c in rng.integers(20, 235, size=3))
    trousers = tuple(int(c) for c in rng.integers(15, 90, size=3))
    return _Agent(kind, t_enter, x0, direction, foot, speed, rng.uniform(0, 2 * np.pi), (shirt, trousers), anomalous)


def _agent_x(agent: _Agent, t: int, scene: _Scene) -> float:
    return agent.x0 + agent.direction * agent.speed * scene.scale(agent.foot) * (t - agent.t0)


def _draw(canvas: np.ndarray, mask: np.ndarray | None, agent: _Agent, t: int, scene: _Scene) -> bool:
    """Draw `agent` as it is at frame t and mark its pixels in `mask` if given; True when any pixel was drawn."""
    if t < agent.t0:
        return False
    s = scene.scale(agent.foot)
    height = scene.person_height * s
    x = _agent_x(agent, t, scene)
    half_w = 1.0 * height  # the widest shape (a cart) fits in a box of twice its height
    left, right = int(np.floor(x - half_w)), int(np.ceil(x + half_w)) + 1
    top, bottom = int(np.floor(agent.foot - 1.15 * height)), int(np.ceil(agent.foot)) + 1
    left_c, right_c, top_c, bottom_c = max(left, 0), min(right, scene.w), max(top, 0), min(bottom, scene.h)
    if left_c >= right_c or top_c >= bottom_c:
        return False
    yy, xx = np.mgrid[top_c:bottom_c, left_c:right_c].astype(np.float32)
    # Local coordinates: u across (in the walking direction), v up from the feet, both in units of height.
    u = (xx - x) / height * agent.direction
    v = (agent.foot - yy) / height
    step = agent.direction * agent.speed * s * (t - agent.t0) / height
    shapes = _SHAPES[agent.kind](u, v, agent.phase + 7.0 * step * _KINDS[agent.kind]["stride"])
    box = canvas[top_c:bottom_c, left_c:right_c]
    drawn = False
    for region, color_index in shapes:
        color = agent.colors[color_index] if color_index < len(agent.colors) else _FIXED_COLORS[color_index]
        box[region] = color
        drawn = drawn or bool(region.any())
        if mask is not None:
            mask[top_c:bottom_c, left_c:right_c] |= region
    return drawn


_FIXED_COLORS = {2: (205, 170, 140), 3: (25, 25, 25), 4: (200, 40, 30), 5: (230, 230, 230)}  # skin, tyre, cart, board


def _segment(u: np.ndarray, v: np.ndarray, p: tuple[float, float], q: tuple[float, float], r: float) -> np.ndarray:
    """Pixels within r of the segment p-q: limbs, frames and handles."""
    pu, pv, du, dv = p[0], p[1], q[0] - p[0], q[1] - p[1]
    k = np.clip(((u - pu) * du + (v - pv) * dv) / max(du * du + dv * dv, 1e-9), 0.0, 1.0)
    return (u - pu - k * du) ** 2 + (v - pv - k * dv) ** 2 <= r * r


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _person(u: np.ndarray, v: np.ndarray, phase: float, lean: float = 0.0, legs: bool = True) -> list:
    swing = 0.16 * np.sin(phase) if legs else 0.03
    hip = (lean * 0.5, 0.48)
    return [
        (_segment(u, v, hip, (swing, 0.02), 0.055) | _segment(u, v, hip, (-swing, 0.02), 0.055), 1),
        (_ellipse(u, v, lean * 0.75, 0.66, 0.13, 0.2), 0),
        (_segment(u, v, (lean, 0.8), (lean - 0.8 * swing, 0.5), 0.04), 0),
        (_ellipse(u, v, lean * 1.1, 0.92, 0.085, 0.085), 2),
    ]


def _walker(u: np.ndarray, v: np.ndarray, phase: float) -> list:
    return _person(u, v, phase)


def _runner(u: np.ndarray, v: np.ndarray, phase: float) -> list:
    return _person(u, v, phase, lean=0.12)


def _skater(u: np.ndarray, v: np.ndarray, phase: float) -> list:
    board = (np.abs(u) <= 0.32) & (v >= 0.0) & (v <= 0.06)
    return [(board, 5), *_person(u, v - 0.06, phase, lean=0.05, legs=False)]


def _cyclist(u: np.ndarray, v: np.ndarray, phase: float) -> list:
    wheel_r = 0.24
    wheels = np.zeros_like(u, dtype=bool)
    for cu in (-0.42, 0.42):
        d = np.sqrt((u - cu) ** 2 + (v - wheel_r) ** 2)
        wheels |= np.abs(d - wheel_r) <= 0.045
    frame = _segment(u, v, (-0.42, wheel_r), (0.0, 0.5), 0.035) | _segment(u, v, (0.0, 0.5), (0.42, wheel_r), 0.035)
    frame |= _segment(u, v, (0.0, 0.5), (0.3, 0.62), 0.035)
    rider = [
        (_segment(u, v, (-0.05, 0.62), (0.08 * np.sin(phase), 0.3), 0.055), 1),
        (_ellipse(u, v, 0.05, 0.8, 0.13, 0.19), 0),
        (_ellipse(u, v, 0.12, 1.05, 0.085, 0.085), 2),
    ]
    return [(wheels, 3), (frame, 4), *rider]


def _cart(u: np.ndarray, v: np.ndarray, phase: float) -> list:
    body = (np.abs(u) <= 0.95) & (v >= 0.15) & (v <= 0.7)
    cab = (u >= -0.2) & (u <= 0.75) & (v > 0.7) & (v <= 1.0)
    wheels = _ellipse(u, v, -0.6, 0.12, 0.13, 0.12) | _ellipse(u, v, 0.6, 0.12, 0.13, 0.12)
    return [(body, 4), (cab, 5), (wheels, 3)]


_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], list]] = {
    "walker": _walker,
    "runner": _runner,
    "skater": _skater,
    "cyclist": _cyclist,
    "cart": _cart,
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean value noise with features about `cell` pixels wide: texture for lawn and paving."""
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    rows = np.arange(h, dtype=np.float32) / cell
    cols = np.arange(w, dtype=np.float32) / cell
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


# ---------------------------------------------------------------------------------------------------------------
# Writing a corpus in the layout of a real archive.


@dataclass(frozen=True)
class WrittenVideo:
    """What `write_corpus` wrote for one video: its id in the layout, split, labels, the files and its anomalous
    events (kind, first and last frame in view), so results can be broken down by kind of anomaly."""

    video_id: str
    split: str
    index: int
    labels: np.ndarray
    paths: tuple[Path, ...]
    events: tuple[dict, ...] = ()


def write_corpus(layout: str, out: str | Path, cfg: SynthConfig | None = None) -> list[WrittenVideo]:
    """Render `cfg`'s videos and write them under `out` as the archive `layout` lays them out.

    Videos are rendered and written one at a time, so memory does not grow with the corpus.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    cfg = cfg or SynthConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = _Scene(cfg)
    writer = _WRITERS[layout]
    written = []
    for split, count in (("train", cfg.train_videos), ("test", cfg.test_videos)):
        for index in range(count):
            video = render_video(cfg, split, index, scene)
            video_id, paths = writer(out, video, index, cfg)
            written.append(WrittenVideo(video_id, split, index, video.labels, tuple(paths), tuple(video.events)))
    tests = [v for v in written if v.split == "test"]
    if layout.startswith("ucsd") and tests:
        _write_ucsd_m(out, layout, tests)
    return written


def _gray(frames: np.ndarray) -> np.ndarray:
    return (frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114 + 0.5).astype(np.uint8)


def _write_images(folder: Path, frames: np.ndarray, names: list[str], **save_kw) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame, name in zip(frames, names, strict=True):
        path = folder / name
        Image.fromarray(frame).save(path, **save_kw)
        paths.append(path)
    return paths


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Encode RGB frames (T,H,W,3) as MPEG-4 part 2 (.avi as XVID, .mp4 as mp4v), readable by decord."""
    try:
        import cv2
    except ImportError as exc:
        raise RuntimeError("writing videos needs OpenCV: pip install opencv-python-headless") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("XVID" if path.suffix.lower() == ".avi" else "mp4v"))
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (width, height), True)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open a video writer for {path}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()
    return path


def _ucsd(out: Path, video: SynthVideo, index: int, cfg: SynthConfig, layout: str) -> tuple[str, list[Path]]:
    names = [f"{i + 1:03d}.tif" for i in range(len(video.frames))]
    if video.split == "train":
        video_id = f"Train{index + 1:03d}"
        return video_id, _write_images(out / "Train" / video_id, _gray(video.frames), names)
    video_id = f"Test{index + 1:03d}"
    paths = _write_images(out / "Test" / video_id, _gray(video.frames), names)
    if layout == "ucsd-ped2" or index % 2 == 0:  # like the real Ped1, only some test videos have pixel masks
        bmp_names = [f"{i + 1:03d}.bmp" for i in range(len(video.frames))]
        _write_images(out / "Test" / f"{video_id}_gt", video.masks.astype(np.uint8) * 255, bmp_names)
    return video_id, paths


def _write_ucsd_m(out: Path, layout: str, tests: list[WrittenVideo]) -> None:
    """The frame-level ground truth as UCSD ships it: 1-based inclusive MATLAB ranges, one line per test video."""
    name = "UCSDped1.m" if layout == "ucsd-ped1" else "UCSDped2.m"
    lines = ["TestVideoFile = {};"]
    for video in tests:
        ranges = ", ".join(f"{a + 1}:{b}" for a, b in ranges_from_labels(video.labels))
        lines.append(f"% {video.video_id}")
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{ranges}];")
    lines.append(f"NumOfTestFiles = {len(tests)};")
    (out / "Test" / name).write_text("\n".join(lines) + "\n")


def _avenue(out: Path, video: SynthVideo, index: int, cfg: SynthConfig) -> tuple[str, list[Path]]:
    video_id = f"{index + 1:02d}"
    folder = "training_videos" if video.split == "train" else "testing_videos"
    path = write_video(out / folder / f"{video_id}.avi", video.frames, cfg.fps)
    if video.split == "test":
        vol = np.empty((1, len(video.masks)), dtype=object)
        for i, mask in enumerate(video.masks):
            vol[0, i] = mask.astype(np.uint8)
        label_dir = out / "ground_truth_demo" / "testing_label_mask"
        label_dir.mkdir(parents=True, exist_ok=True)
        _write_mat(label_dir / f"{index + 1}_label.mat", {"volLabel": vol})
    return video_id, [path]


def _write_mat(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB 5 file as Avenue ships its labels, with a fixed header so that one seed gives identical bytes.

    scipy stamps the creation time into the 116-byte text header; a reproducible corpus must not differ by the second.
    """
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, arrays, do_compression=True)
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by memae's synthetic corpus".ljust(116)
    path.write_bytes(bytes(data))


def _shanghaitech(out: Path, video: SynthVideo, index: int, cfg: SynthConfig) -> tuple[str, list[Path]]:
    if video.split == "train":
        video_id = f"01_{index + 1:03d}"
        return video_id, [write_video(out / "training" / "videos" / f"{video_id}.avi", video.frames, cfg.fps)]
    video_id = f"01_{index + 1:04d}"
    return video_id, _frames_with_npy_labels(out / "testing", video_id, video)


def _frames(out: Path, video: SynthVideo, index: int, cfg: SynthConfig) -> tuple[str, list[Path]]:
    video_id = f"{index + 1:02d}"
    if video.split == "train":
        names = [f"{i:03d}.jpg" for i in range(len(video.frames))]
        return video_id, _write_images(out / "training" / "frames" / video_id, video.frames, names, quality=95)
    return video_id, _frames_with_npy_labels(out / "testing", video_id, video)


def _frames_with_npy_labels(testing: Path, video_id: str, video: SynthVideo) -> list[Path]:
    """ShanghaiTech's test layout: frames/<id>/NNN.jpg, test_frame_mask/<id>.npy, test_pixel_mask/<id>.npy."""
    names = [f"{i:03d}.jpg" for i in range(len(video.frames))]
    paths = _write_images(testing / "frames" / video_id, video.frames, names, quality=95)
    for folder, array in (("test_frame_mask", video.labels), ("test_pixel_mask", video.masks.astype(np.uint8))):
        (testing / folder).mkdir(parents=True, exist_ok=True)
        np.save(testing / folder / f"{video_id}.npy", array)
    return paths


def _videos(out: Path, video: SynthVideo, index: int, cfg: SynthConfig) -> tuple[str, list[Path]]:
    name = f"{video.split}/{index + 1:02d}.mp4"  # the reader's id: the path under the archive's root
    return name, [write_video(out / name, video.frames, cfg.fps)]


_WRITERS: dict[str, Callable[[Path, SynthVideo, int, SynthConfig], tuple[str, list[Path]]]] = {
    "ucsd-ped1": lambda out, video, index, cfg: _ucsd(out, video, index, cfg, "ucsd-ped1"),
    "ucsd-ped2": lambda out, video, index, cfg: _ucsd(out, video, index, cfg, "ucsd-ped2"),
    "avenue": _avenue,
    "shanghaitech": _shanghaitech,
    "frames": _frames,
    "videos": _videos,
}
