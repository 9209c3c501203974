"""What each night of a growing archive costs the scoring job's tables and its MLflow store.

    python benchmarks/bench_nightly.py                               # 10 nights of 20 six-minute videos at 25 fps
    python benchmarks/bench_nightly.py --nights 30 --videos 50 --dir /srv/scores/tmp-bench

Every night adds --videos finished videos of --frames frames to one model's output folder (per-video files and ledger
rows, as the scoring job writes them; the errors are random, the model does not run), then rebuilds the tables as
the job does at the end of every run (`pipelines.score.outputs.rebuild_outputs`, with the night's own videos as
`run_keys`, which is what an --incremental run with MLflow asks for). Printed per night: the seconds the rebuild took
and the frame files it wrote (frame_scores.parquet is a folder of per-video files; a night writes its own), the bytes
of the whole tables (frame_scores.parquet, video_summary.json, segments.parquet: what every night logged to MLflow
before), and the bytes of the night's own tables (what it logs now), with the running totals of each in the MLflow
store. After the last night the frame folder is deleted and rebuilt whole: what every night cost while
frame_scores.parquet was one file, rewritten from every per-video file.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.registry.source import ScoringSettings
from pipelines.score.ledger import Ledger, LedgerEntry
from pipelines.score.outputs import rebuild_outputs, write_video_scores
from pipelines.score.paths import video_path
from pipelines.score.threshold import Threshold

MODEL = "memae-cctv-v7"
SETTINGS = ScoringSettings(clip_len=16, height=256, width=256, channels=1, stride=1, error_rule="l1",
                           frame_rule="mean")
LINE = Threshold({"quantiles": {"0.5": 1.0, "0.95": 1.6, "0.99": 2.0}}, level=0.99, release_level=0.95,
                 min_event_frames=8, source="benchmark")


def night(ledger: Ledger, section, number: int, videos: int, frames: int, rng: np.random.Generator) -> set[str]:
    """Writes and records one night's videos; returns their keys."""
    keys = set()
    for camera in range(videos):
        video_id = f"cam{camera:02d}/night{number:03d}.mp4"
        path = video_path(ledger.folder(MODEL), "train", video_id, ".parquet")
        errors = rng.lognormal(0.0, 0.35, frames)
        write_video_scores(path, video_id, "train", errors, np.zeros(frames), np.full(frames, -1, np.int8))
        key = f"train/{video_id}"
        ledger.record(section, key, LedgerEntry(video_id, "train", f"/srv/cctv/{video_id}", frames, frames - 15, 25.0,
                                                str(path.relative_to(ledger.out)), "2026-12-02T03:00:00+00:00"))
        keys.add(key)
    return keys


def size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--videos", type=int, default=20, help="videos finished per night")
    parser.add_argument("--frames", type=int, default=9000, help="frames per video (9000: six minutes at 25 fps)")
    parser.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=args.dir))
    rng = np.random.default_rng(0)
    logged_before = logged_now = 0
    print(f"{args.videos} videos x {args.frames} frames a night; MLflow bytes per night: the whole tables (before) "
          "against the night's own (now)")
    print("night  frames in --out  rebuild s  files written  whole tables MB  night's tables MB  store before MB  "
          "store now MB")
    try:
        with Ledger(work) as ledger:
            section = ledger.open_section(MODEL, {}, {})
            for number in range(1, args.nights + 1):
                keys = night(ledger, section, number, args.videos, args.frames, rng)
                started = time.perf_counter()
                outputs = rebuild_outputs(work, section, LINE, SETTINGS, plot_videos=4, worst_frames=0,
                                          run_keys=(keys, work / f"night-{number}"))
                seconds = time.perf_counter() - started
                whole = sum(size(outputs.files[k]) for k in outputs.run_files)
                own = sum(size(path) for path in outputs.run_files.values())
                logged_before, logged_now = logged_before + whole, logged_now + own
                print(f"{number:5d}  {number * args.videos * args.frames:15,d}  {seconds:9.2f}  "
                      f"{outputs.rewritten:13d}  {whole / 1e6:15.2f}  {own / 1e6:17.2f}  {logged_before / 1e6:15.2f}  "
                      f"{logged_now / 1e6:12.2f}", flush=True)
                shutil.rmtree(work / f"night-{number}")
            shutil.rmtree(outputs.files["frame_scores"])
            started = time.perf_counter()
            outputs = rebuild_outputs(work, section, LINE, SETTINGS, plot_videos=4, worst_frames=0)
            print(f"the whole frame folder rebuilt ({outputs.rewritten} files, what every night cost while it was one "
                  f"file): {time.perf_counter() - started:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
