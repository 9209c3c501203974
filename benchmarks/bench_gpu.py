"""GPU figures in one run (under 8 minutes on one H200): decode, training, scoring, bf16 against fp32.

    python benchmarks/bench_gpu.py                   # on a GPU machine: the paper preset (16x256x256 grey)
    python benchmarks/bench_gpu.py --device cpu --preset cpu-small --videos 2 --frames 64 --train-steps 20
                                                     # a dry run of every step on a CPU-only machine

1. Corpus: --videos synthetic scenes as H.264 640x480 (.mp4; MPEG-4 part 2 when PyAV is missing), each linked
   --copies times, so the figures are about many files without rendering many.
2. Decode: frames/s (per wall second, per CPU second) of every installed decoder backend, decoding to the preset's
   size in grey as ingest does, in this process.
3. Ingest into shards at the preset's size (jobs/ingest.py's function): frames/s, Ray already started.
4. Training: `pipelines.train.run.train` for --train-steps (at most --train-minutes), DDP with one worker per
   visible GPU, bf16 autocast; clips/s from the run's last epoch that trained (all workers together).
5. Scoring: `pipelines.score.actors.score_batches` (the scoring job's pipeline: Ray tasks read shards or decode the
   .mp4 files and hand blocks of frames to one actor per GPU), clips/s from the first batch asked for to the last
   received, for shards in fp32 and bf16 and for raw video in bf16.
6. bf16 against fp32 on the labelled synthetic test videos: the largest relative difference of a clip error and the
   frame AUC of each (the target: within 0.005).

While each step runs a thread samples `nvidia-smi` (every 0.5 s): the peak memory used and the mean utilisation of
the GPUs are printed beside its figure. Targets on one H200: scoring >= 5,000 clips/s from shards and >= 3,000 from
raw video, training >= 1,000 clips/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_decode import corpus, decode_with, rate  # noqa: E402
from bench_score import ray_pipeline  # noqa: E402

from experiments.synthetic import SynthConfig, write_corpus  # noqa: E402
from memae.datasets.decode import decoder_status  # noqa: E402
from memae.metrics import frame_metrics  # noqa: E402
from memae.presets import get_preset  # noqa: E402
from memae.scoring import frames_from_clips  # noqa: E402
from pipelines.common.ray_runtime import init_ray  # noqa: E402
from pipelines.ingest.manifest import Manifest  # noqa: E402
from pipelines.ingest.run import IngestConfig, ingest  # noqa: E402
from pipelines.registry.source import ScoringSettings, load_model_source, scoring_settings  # noqa: E402
from pipelines.score.actors import run_precision, score_batches  # noqa: E402
from pipelines.score.config import ScoreConfig  # noqa: E402
from pipelines.score.data import list_archive, list_shards  # noqa: E402
from pipelines.train.config import TrainConfig  # noqa: E402
from pipelines.train.run import train  # noqa: E402


class GpuSampler:
    """Peak memory (MiB, summed over GPUs) and mean utilisation (%) from `nvidia-smi`, sampled in a thread."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.memory: list[float] = []
        self.utilisation: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return  # no nvidia-smi: nothing to report
            rows = [[float(v) for v in line.split(",")] for line in text.strip().splitlines() if line.strip()]
            if rows:
                self.memory.append(sum(r[0] for r in rows))
                self.utilisation.append(float(np.mean([r[1] for r in rows])))
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.memory:
            return "GPU: not sampled"
        return f"GPU: peak {max(self.memory):.0f} MiB, mean utilisation {np.mean(self.utilisation):.0f}%"


@contextmanager
def step(name: str, figures: dict) -> Iterator[GpuSampler]:
    """Times one step, samples the GPUs meanwhile and prints both."""
    started = time.perf_counter()
    with GpuSampler() as sampler:
        yield sampler
    seconds = time.perf_counter() - started
    figures.setdefault("gpu", {})[name] = sampler.summary()
    print(f"  [{name}: {seconds:.1f} s; {sampler.summary()}]", flush=True)


def linked_copies(files: list[Path], copies: int, folder: Path) -> Path:
    """`folder` holding every file `copies` times (hard links: same bytes, many videos)."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for path in files:
            link = folder / f"{path.stem}-{copy:02d}{path.suffix}"
            if not link.exists():
                os.link(path, link)
    return folder


def decode_rates(files: list[Path], size: tuple[int, int], figures: dict) -> None:
    for name, why in decoder_status().items():
        if why is not None:
            print(f"  {name:12s} not installed ({why})")
            continue
        wall, cpu = rate(files, decode_with(name, size, "gray"))
        figures.setdefault("decode_frames_per_s", {})[name] = {"wall": wall, "cpu": cpu}
        print(f"  {name:12s} {wall:8.0f} frames/s, {cpu:8.0f} per CPU second (to {size[0]}x{size[1]} grey)")


def in_precision(settings: ScoringSettings, config: ScoreConfig) -> ScoringSettings:
    """`settings` with the arithmetic the scoring job would settle on for `config` (bf16 only on GPU actors)."""
    return replace(settings, precision=run_precision(config, print))


def scored_errors(listing, source, settings, config: ScoreConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Clip errors by video key: (starts, errors) in clip order."""
    found: dict[str, list[tuple[int, float]]] = {}
    for batch in score_batches(listing.units, source, settings, config, echo=lambda _: None):
        for key, start, error in zip(batch["key"], batch["start"], batch["error"], strict=True):
            if start >= 0:
                found.setdefault(str(key), []).append((int(start), float(error)))
    return {k: (np.array([s for s, _ in v]), np.array([e for _, e in v])) for k, v in
            ((k, sorted(v)) for k, v in found.items())}


def frame_auc(errors: dict, listing, clip_len: int) -> float:
    """Archive-wide frame AUC (raw errors pooled over videos, every frame the mean of its clips)."""
    scores, labels = {}, {}
    for unit in listing.units:
        starts, clip_errors = errors[unit.key]
        num_frames = int(starts.max()) + clip_len
        scores[unit.key] = frames_from_clips(clip_errors, starts, num_frames, clip_len, "mean")
        labels[unit.key] = unit.labels(num_frames)
    return frame_metrics(labels, scores).auc_micro


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", help="model preset: clip length, frame size, width")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run without GPUs")
    parser.add_argument("--videos", type=int, default=8, help="distinct H.264 640x480 videos rendered")
    parser.add_argument("--frames", type=int, default=300, help="frames per video")
    parser.add_argument("--copies", type=int, default=4, help="times each video is linked into the archive")
    parser.add_argument("--train-steps", type=int, default=400, help="training budget in optimizer steps")
    parser.add_argument("--train-minutes", type=float, default=2.0, help="at most this long training (Ray's start "
                        "included)")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per model call when scoring")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "memae-bench-gpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    use_gpu = args.device == "cuda"
    if use_gpu and not torch.cuda.is_available():
        print("no GPU visible to torch: run on a GPU machine, or pass --device cpu for a dry run", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count() if use_gpu else 0
    preset = get_preset(args.preset)
    size = preset.frame_size
    figures: dict = {"preset": args.preset, "device": args.device, "gpus": gpus, "torch": torch.__version__}
    names = [torch.cuda.get_device_name(i) for i in range(gpus)]
    print(f"{args.preset}: clips of {preset.clip_len}x{size[0]}x{size[1]}; {os.cpu_count()} cores; "
          f"GPUs: {', '.join(names) or 'none'}; torch {torch.__version__}", flush=True)

    try:
        files = corpus(args.work, "h264", args.videos, args.frames, (480, 640))
    except ImportError:
        print("  PyAV missing: the corpus is MPEG-4 part 2 instead of H.264")
        files = corpus(args.work, "mpeg4", args.videos, args.frames, (480, 640))
    archive = linked_copies(files, args.copies, args.work / f"archive-{files[0].parent.name}-x{args.copies}")
    print(f"decode ({len(files)} files of {args.frames} frames, one process):", flush=True)
    with step("decode", figures):
        decode_rates(files, size, figures)

    init_ray()
    shards = args.work / f"shards-{archive.name}-{size[0]}x{size[1]}"
    shutil.rmtree(shards, ignore_errors=True)  # ingest resumes: a fresh folder, so that it is timed
    started = time.perf_counter()
    with step("ingest", figures):
        assert ingest(IngestConfig(root=archive, out=shards, dataset="videos", size=size), echo=lambda _: None).ok
    frames = sum(e.num_frames for e in Manifest.read(shards).select())
    figures["ingest_frames_per_s"] = frames / (time.perf_counter() - started)
    print(f"  ingest: {figures['ingest_frames_per_s']:.0f} frames/s ({frames} frames of {len(files) * args.copies} "
          f"videos to {size[0]}x{size[1]} grey shards, Ray already started)")
    labelled_raw, labelled = args.work / "labelled", args.work / f"labelled-{size[0]}x{size[1]}"
    write_corpus("ucsd-ped2", labelled_raw, SynthConfig(seed=0, train_videos=2, test_videos=4))
    assert ingest(IngestConfig(root=labelled_raw, out=labelled, dataset="ucsd-ped2", size=size),
                  echo=lambda _: None).ok

    workers = max(gpus, 1)  # each rank reports its own clips/s; DDP ranks step together
    print(f"training: {workers} worker(s), {args.train_steps} steps or {args.train_minutes} min, bf16 autocast",
          flush=True)
    with step("train", figures):
        trained = train(TrainConfig(
            shards=str(shards), preset=args.preset, epochs=1000, max_steps=args.train_steps,
            max_minutes=args.train_minutes,
            num_workers=workers, use_gpu=use_gpu, bf16=True, holdout_fraction=0,
            storage_path=str(args.work / "runs"), tracking_uri=f"sqlite:///{args.work / 'mlflow.db'}",
            experiment="bench-gpu",
        ), echo=lambda _: None)
    epochs = [h for h in trained.history if h.get("train_clips_per_s")]
    figures["train_clips_per_s"] = workers * epochs[-1]["train_clips_per_s"] if epochs else float("nan")
    print(f"  {figures['train_clips_per_s']:.0f} clips/s ({trained.epochs_done} epochs; target >= 1,000 on an H200)")

    source = load_model_source(trained.checkpoint_path)
    base = ScoreConfig(model=trained.checkpoint_path, shards=str(shards), out=str(args.work / "out"),
                       batch_size=args.batch_size, mlflow=False, use_gpu=use_gpu or None)
    listing = list_shards(shards, "all")
    settings = scoring_settings(source, base, listing.stored_shape)
    clips = sum(max(0, e.num_frames - preset.clip_len + 1) for e in Manifest.read(shards).select())
    print(f"scoring {clips} clips (stride 1, batches of {args.batch_size}):", flush=True)
    for precision in ("fp32", "bf16"):
        config = replace(base, precision=precision)
        with step(f"score shards {precision}", figures):
            wall, cpu = ray_pipeline(listing, source, in_precision(settings, config), config, clips)
        figures[f"score_shards_{precision}_clips_per_s"] = wall
        print(f"  shards, {precision}: {wall:.0f} clips/s ({cpu:.0f} per CPU second of the whole process tree; "
              f"target >= 5,000 on an H200)")
    raw = replace(base, shards=None, dataset="videos", root=str(archive), precision="bf16")
    raw_listing = list_archive("videos", archive, "all")
    with step("score raw bf16", figures):
        wall, _ = ray_pipeline(raw_listing, source, in_precision(scoring_settings(source, raw, None), raw), raw, clips)
    figures["score_raw_bf16_clips_per_s"] = wall
    print(f"  raw .mp4, bf16: {wall:.0f} clips/s (decoding in Ray tasks on the CPUs; target >= 3,000 on an H200)")

    test = list_shards(labelled, "test")
    precisions = {p: replace(base, shards=str(labelled), precision=p) for p in ("fp32", "bf16")}
    errors = {p: scored_errors(test, source, in_precision(settings, c), c) for p, c in precisions.items()}
    relative = max(float(np.max(np.abs(errors["bf16"][k][1] - e) / np.maximum(np.abs(e), 1e-12)))
                   for k, (_, e) in errors["fp32"].items())
    aucs = {p: frame_auc(errors[p], test, preset.clip_len) for p in errors}
    figures |= {"bf16_max_relative_error_difference": relative, "auc_fp32": aucs["fp32"], "auc_bf16": aucs["bf16"]}
    print(f"bf16 vs fp32 on {len(test.units)} labelled test videos: clip errors differ by at most {relative:.2%}; "
          f"frame AUC {aucs['fp32']:.4f} vs {aucs['bf16']:.4f} (|difference| {abs(aucs['fp32'] - aucs['bf16']):.4f}, "
          "target <= 0.005)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
