"""Object-store traffic of the scoring pipeline: bytes its decoding tasks hand the scoring actors per video frame.

    python benchmarks/bench_transfer.py                       # 2 videos x 300 frames; 64x64 and 256x256 grey
    python benchmarks/bench_transfer.py --sizes 64x64 --strides 1 4

Before (issue 14) a decoding task sent every sliding-window clip, (T, H, W, C) uint8, so at stride 1 each frame
travelled once per clip covering it; it now sends blocks of consecutive frames (pipelines/score/data.py
`video_frame_blocks`) and the actors cut the clips. Both task bodies run here, without Ray, on the same .mp4 files
(jobs/synth.py's scenes), and every array of every row they yield is counted (`nbytes`): what Ray Data would put in
the object store; the seconds each body took (decoding included) come beside. The old body survives only here, as
`clip_rows`, for the "before" column.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from experiments.synthetic import SynthConfig, render_video, write_video
from pipelines.registry.source import ScoringSettings
from pipelines.score.data import VideoEnd, list_archive, sliding_clips, unit_frames, video_frame_blocks

CLIP_BATCH_BYTES = 16 << 20  # the old task's batch bound


def clip_rows(row: dict, settings: ScoringSettings, batch_size: int) -> Iterator[dict]:
    """The decoding task body before issue 14 (failure handling left out): batches of whole clips, then the end row."""
    unit = pickle.loads(row["unit"][0])
    clip_shape = (settings.clip_len, settings.height, settings.width, settings.channels)
    per_batch = max(1, CLIP_BATCH_BYTES // int(np.prod(clip_shape)))
    chunks, fps = unit_frames(unit, settings)
    starts, clips = [], []
    for start, clip in sliding_clips(chunks, settings.clip_len, settings.stride):
        starts.append(start)
        clips.append(clip)
        if len(clips) == per_batch:
            yield _clip_batch(unit.key, starts, clips)
            starts, clips = [], []
    if clips:
        yield _clip_batch(unit.key, starts, clips)
    end = VideoEnd("done", 0, 0, fps)
    yield {"key": np.array([unit.key]), "start": np.array([-1], dtype=np.int64),
           "clip": np.zeros((1, *clip_shape), dtype=np.uint8), "end": np.array([end.encode()])}


def _clip_batch(key: str, starts: list[int], clips: list[np.ndarray]) -> dict:
    return {"key": np.array([key] * len(starts)), "start": np.array(starts, dtype=np.int64),
            "clip": np.stack(clips), "end": np.array([""] * len(starts))}


def traffic(task: Callable[..., Iterator[dict]], units: list, settings: ScoringSettings,
            batch_size: int) -> tuple[int, float]:
    """(bytes of every array the task yields over all `units`, seconds it took)."""
    start, sent = time.perf_counter(), 0
    for unit in units:
        for batch in task({"unit": [pickle.dumps(unit)]}, settings, batch_size):
            sent += sum(array.nbytes for array in batch.values())
    return sent, time.perf_counter() - start


def write_archive(folder: Path, videos: int, frames: int) -> None:
    cfg = SynthConfig(height=240, width=320, frames=frames, seed=0)
    for i in range(videos):
        write_video(folder / f"cam{i:02d}.mp4", render_video(cfg, "train", i).frames, cfg.fps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2, help="videos in the archive")
    parser.add_argument("--frames", type=int, default=300, help="frames per video")
    parser.add_argument("--sizes", nargs="+", default=["64x64", "256x256"], help="frame sizes decoded to (grey)")
    parser.add_argument("--strides", nargs="+", type=int, default=[1, 2, 4, 16], help="clip strides")
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16, help="clips per model call (sizes the frame blocks)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        write_archive(Path(work), args.videos, args.frames)
        units = list_archive("videos", work, "all").units
        frames = args.videos * args.frames
        print(f"{args.videos} videos x {args.frames} frames, clips of {args.clip_len}, batches of {args.batch_size}")
        print(f"{'size':>9} {'stride':>6} {'frame B':>8} {'before B/frame':>15} {'after B/frame':>14} {'ratio':>7} "
              f"{'after/frame':>11} {'before s':>8} {'after s':>8}")
        for size in args.sizes:
            height, width = (int(v) for v in size.split("x"))
            for stride in args.strides:
                settings = ScoringSettings(args.clip_len, height, width, 1, stride, "l1", "mean")
                before, before_s = traffic(clip_rows, units, settings, args.batch_size)
                after, after_s = traffic(video_frame_blocks, units, settings, args.batch_size)
                copies = after / frames / (height * width)
                print(f"{size:>9} {stride:>6} {height * width:>8} {before / frames:>15.0f} {after / frames:>14.0f} "
                      f"{before / after:>6.1f}x {copies:>10.3f}x {before_s:>8.2f} {after_s:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
