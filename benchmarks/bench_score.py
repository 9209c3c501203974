"""Scoring benchmark: the Ray Data pipeline against a bare PyTorch loop over the same clips, and end to end from video.

    python benchmarks/bench_score.py                         # 6 videos x 300 frames, cpu-small (16x64x64 grey)
    python benchmarks/bench_score.py --preset paper --videos 2 --frames 48 --rounds 1

1. The corpus (jobs/synth.py's scenes as .mp4 files) is ingested once at the model's frame size.
2. Bare loop: in a fresh process, every clip (stride 1) of the shards read into memory first, then batches through
   the model with as many torch threads as the scoring actor gets.
3. Ray Data: `pipelines.score.actors.score_batches` over the same shards: read into frame blocks in Ray tasks, cut
   into clips and scored by the actor pool, gathered by this driver; timed from the first batch requested to the last
   received (Ray already started; the actor's start and model load included). Object-store bytes per frame of the
   blocks against whole clips: benchmarks/bench_transfer.py.
4. End to end: `pipelines.score.run.score` on the raw .mp4 files (decode, clip, score, write per-video files, rebuild
   tables, plots): frames per second of wall clock, Ray already started.

Bare loop and pipeline alternate for --rounds rounds. Each figure is given per wall-clock second (best round: on a
machine shared with other work the wall figures fall, by 3x here within a minute) and per CPU second (median round):
the bare loop's CPU time is its process's; the pipeline's is that of this process and every process it started
(the Ray daemons, decoding tasks and actors), read from /proc, so it charges the pipeline for all its overheads.
Target: the pipeline within 10% of the bare loop.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from experiments.synthetic import SynthConfig, render_video, write_video
from memae.checkpoint import save_checkpoint
from memae.evaluation import model_clip_errors
from memae.presets import get_preset
from memae.transforms import clips_to_tensor
from pipelines.common.ray_runtime import init_ray
from pipelines.ingest.clips import iter_clips
from pipelines.ingest.run import IngestConfig, ingest
from pipelines.registry.source import load_model_source, scoring_settings
from pipelines.score.actors import actor_plan, score_batches
from pipelines.score.config import ScoreConfig
from pipelines.score.data import list_shards
from pipelines.score.run import score

TICKS = os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def tree_cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of `root` and all its descendants, by pid."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)  # ppid, cpu
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        tree[pid] = stats.get(pid, (0, 0.0))[1]
        frontier += [child for child, (parent, _) in stats.items() if parent == pid]
    return tree


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `tree_cpu_seconds` snapshots (processes started in between count whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def bare_loop(shards: Path, checkpoint: Path, batch: int, threads: int) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second) of model calls alone on `threads` torch threads, in a fresh
    process (spawned, no Ray threads beside it) that first reads every clip of the shards into memory."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_bare_loop, (str(shards), str(checkpoint), batch, threads))


def _bare_loop(shards: str, checkpoint: str, batch: int, threads: int) -> tuple[float, float]:
    source = load_model_source(checkpoint)
    clips = np.stack([c["clip"] for c in iter_clips(shards, source.clip_len, 1)])
    model = source.build()
    torch.set_num_threads(threads)
    model_clip_errors(model, clips_to_tensor(clips[:batch]))  # warm-up: first-call allocations
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(clips), batch):
        model_clip_errors(model, clips_to_tensor(clips[i : i + batch]))
    return len(clips) / (time.perf_counter() - wall), len(clips) / (time.process_time() - cpu)


def ray_pipeline(listing, source, settings, config, expected: int) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second of the whole process tree) of `score_batches`. CPU time is read
    at each arrival of results: Ray ends the actor when the dataset is done, and a dead worker's time is lost."""
    before, start = tree_cpu_seconds(os.getpid()), time.perf_counter()
    received, after = 0, before
    for batch in score_batches(listing.units, source, settings, config, echo=lambda _: None):
        assert np.isfinite(batch["error"][batch["start"] >= 0]).all()
        received += int((batch["start"] >= 0).sum())
        after = tree_cpu_seconds(os.getpid())
    wall = time.perf_counter() - start
    assert received == expected, f"the pipeline scored {received} clips, expected {expected}"
    return received / wall, received / cpu_used(before, after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-small", help="model preset (random weights): clip length, size")
    parser.add_argument("--videos", type=int, default=6, help="videos in the corpus")
    parser.add_argument("--frames", type=int, default=300, help="frames per video")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per model call")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of bare loop and pipeline")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "memae-bench-score")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    preset = get_preset(args.preset)
    shutil.rmtree(args.work, ignore_errors=True)
    archive, shards = args.work / "archive", args.work / "shards"
    synth = SynthConfig(height=120, width=160, frames=args.frames, seed=0)
    for i in range(args.videos):
        write_video(archive / f"cam{i:02d}.mp4", render_video(synth, "train", i).frames, synth.fps)
    checkpoint = args.work / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, preset.model.build(), preset.model, config={"preset": preset.name})

    init_ray(args.num_cpus)
    assert ingest(IngestConfig(root=archive, out=shards, dataset="videos", size=preset.frame_size),
                  echo=lambda _: None).ok
    config = ScoreConfig(model=str(checkpoint), shards=str(shards), out=str(args.work / "out-shards"),
                         batch_size=args.batch_size, mlflow=False, num_cpus=args.num_cpus)
    source = load_model_source(config.model)
    listing = list_shards(shards, "all")
    settings = scoring_settings(source, config, listing.stored_shape)
    plan = actor_plan(config)
    threads = plan.threads
    clips = sum(1 for _ in iter_clips(shards, preset.clip_len, 1))
    print(f"{clips} clips of {preset.clip_len}x{preset.height}x{preset.width} ({args.preset}, random weights), "
          f"batch {args.batch_size}; {os.cpu_count()} cores; actor: {plan.actors} x {plan.cpus} CPUs, "
          f"{threads} torch threads")

    figures: dict[str, float | str] = {"clips": clips, "threads": threads, "preset": args.preset}
    bare, ray = [], []
    for round_ in range(1, args.rounds + 1):
        bare.append(bare_loop(shards, checkpoint, args.batch_size, threads))
        print(f"round {round_}: bare loop {bare[-1][0]:7.1f} clips/s, {bare[-1][1]:7.1f} per CPU-s   (load {load()})")
        ray.append(ray_pipeline(listing, source, settings, config, clips))
        print(f"round {round_}: Ray Data  {ray[-1][0]:7.1f} clips/s, {ray[-1][1]:7.1f} per CPU-s   (load {load()})")
    figures["bare_clips_per_s"] = max(b[0] for b in bare)
    figures["ray_clips_per_s"] = max(r[0] for r in ray)
    figures["bare_clips_per_cpu_s"] = float(np.median([b[1] for b in bare]))
    figures["ray_clips_per_cpu_s"] = float(np.median([r[1] for r in ray]))
    figures["ray_vs_bare_wall"] = figures["ray_clips_per_s"] / figures["bare_clips_per_s"]
    figures["ray_vs_bare_cpu"] = figures["ray_clips_per_cpu_s"] / figures["bare_clips_per_cpu_s"]
    print(f"pipeline / bare: {figures['ray_vs_bare_wall']:.3f} per wall second (best rounds, the actor's start "
          f"included), {figures['ray_vs_bare_cpu']:.3f} per CPU second (median rounds); target >= 0.9")

    raw = ScoreConfig(model=str(checkpoint), dataset="videos", root=str(archive), out=str(args.work / "out-raw"),
                      batch_size=args.batch_size, mlflow=False, num_cpus=args.num_cpus)
    start = time.perf_counter()
    result = score(raw, echo=lambda _: None)
    seconds = time.perf_counter() - start
    frames = result.report["frames_scored"]
    figures["end_to_end_frames_per_s"] = frames / seconds
    print(f"end to end from .mp4: {frames / seconds:.1f} frames/s ({frames} frames, {result.report['clips_scored']} "
          f"clips in {seconds:.1f}s; load {load()})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
