"""Training throughput: one Ray Train worker against a bare PyTorch loop, and our network against the official one.

    python benchmarks/bench_train.py                      # synthetic corpus at 64x64, cpu-small preset
    python benchmarks/bench_train.py --shards DIR --preset cpu-small --threads 1
    python benchmarks/bench_train.py --transfer           # object-store bytes per frame: clip rows vs frame blocks

Both loops run `memae.training.train_one_epoch` on the same clips (the train split at the given stride), with the
same model, seed, batch size and torch threads; clips/s is measured inside the epoch, so Ray's start-up is not
counted (it is printed separately). The second part times a training step of the paper's network, ours against a
transcription of the official `AutoEncoderCov3DMem`, at 16x64x96.

`--transfer` only counts what the Ray Data read tasks hand to the object store for one epoch of the train split, per
stored frame: clip rows (the path before issue 14: one row per clip, so each frame once per clip that holds it) against
blocks of consecutive frames (pipelines/ingest/clips.py, `read_block`), for clip strides 1 and 4; the counting
itself needs no Ray.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.official_reference

from experiments.synthetic import SynthConfig, write_corpus  # noqa: E402
from memae.losses import memae_loss  # noqa: E402
from memae.models import AutoEncoderCov3DMem  # noqa: E402
from memae.training import train_one_epoch  # noqa: E402
from memae.transforms import clips_to_tensor  # noqa: E402
from pipelines.ingest.clips import block_units, iter_clips, read_block  # noqa: E402
from pipelines.ingest.manifest import Manifest  # noqa: E402
from pipelines.ingest.run import IngestConfig, ingest  # noqa: E402
from pipelines.train.config import TrainConfig  # noqa: E402
from tests.official_reference import AutoEncoderCov3DMem as OfficialModel  # noqa: E402


def bare_loop(config: TrainConfig, epochs: int) -> list[float]:
    """clips/s per epoch of a plain PyTorch loop over the same clips as the Ray run."""
    torch.manual_seed(config.seed)
    preset = config.preset_spec()
    model = config.model_spec(in_channels=1).build()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rates = []
    for _ in range(epochs):
        clips = iter_clips(config.shards, clip_len=preset.clip_len, stride=config.clip_stride, split="train")

        def batches(clips=clips):
            batch = []
            for row in clips:
                batch.append(row["clip"])
                if len(batch) == config.resolved_batch_size:
                    yield clips_to_tensor(np.stack(batch))
                    batch = []
            if batch:
                yield clips_to_tensor(np.stack(batch))

        rates.append(train_one_epoch(model, optimizer, batches(), alpha=config.effective_alpha).clips_per_second)
    return rates


def ray_loop(config: TrainConfig, epochs: int) -> tuple[list[float], float]:
    """clips/s per epoch of one Ray Train worker, and the run's wall time."""
    from pipelines.train.run import train

    start = time.perf_counter()
    result = train(TrainConfig(**{**config.__dict__, "epochs": epochs}))
    return [h["train_clips_per_s"] for h in result.history], time.perf_counter() - start


def clip_row_bytes(shards: str, clip_len: int, stride: int) -> int:
    """Bytes of the `clip` column the clip-row read tasks yielded (training selected only that column): each of their
    batches stacked the clips `iter_clips` gives, so their sum is the sum over `iter_clips`."""
    return sum(row["clip"].nbytes for row in iter_clips(shards, clip_len, stride, split="train"))


def block_bytes(shards: str, clip_len: int, stride: int) -> tuple[int, int]:
    """(bytes of the `frames` column the block read tasks yield, blocks): the real task body over every unit."""
    units = block_units(shards, clip_len, stride, split="train")
    moved = sum(read_block({k: np.array([v]) for k, v in unit.items()})["frames"].nbytes for unit in units)
    return moved, len(units)


def transfer_table(shards: str, clip_len: int, strides: tuple[int, ...] = (1, 4)) -> None:
    entries = Manifest.read(shards).select("train")
    frames = sum(e.num_frames for e in entries)
    frame_bytes = int(np.prod(entries[0].frame_shape))
    print(f"train split: {len(entries)} videos, {frames} frames of {'x'.join(map(str, entries[0].frame_shape))} "
          f"({frame_bytes} bytes), clip length {clip_len}; object-store bytes per stored frame (x: per frame's bytes)")
    print(f"{'stride':>6} {'clip rows':>18} {'frame blocks':>18} {'blocks':>7} {'reduction':>10}")
    for stride in strides:
        rows = clip_row_bytes(shards, clip_len, stride)
        blocks, count = block_bytes(shards, clip_len, stride)
        print(f"{stride:>6} {rows / frames:>10.0f} ({rows / frames / frame_bytes:4.1f}x) "
              f"{blocks / frames:>10.0f} ({blocks / frames / frame_bytes:4.2f}x) {count:>7} {rows / blocks:>9.1f}x")


def step_seconds(model: torch.nn.Module, batch: int, size: tuple[int, int, int], repeats: int) -> float:
    x = torch.rand(batch, 1, *size) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        memae_loss(x, model(x)).total.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", help="ingested shards (default: a synthetic Ped2-like corpus at 64x64)")
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loop; the first is a warm-up")
    parser.add_argument("--clip-stride", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in both loops")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per model in the architecture part")
    parser.add_argument("--transfer", action="store_true", help="only the object-store bytes per frame table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
    shards = args.shards
    if shards is None:
        write_corpus("ucsd-ped2", work / "raw", SynthConfig(seed=0))
        shards = str(work / "shards")
        ingest(IngestConfig(root=work / "raw", out=Path(shards), dataset="ucsd-ped2", size=(64, 64)),
               echo=lambda _: None)
    if args.transfer:
        transfer_table(shards, TrainConfig(preset=args.preset).preset_spec().clip_len)
        return
    config = TrainConfig(shards=shards, preset=args.preset, clip_stride=args.clip_stride, num_workers=1,
                         torch_threads=args.threads, cpus_per_worker=1.0 if (os.cpu_count() or 1) > 2 else 0.9,
                         storage_path=str(work / "runs"), seed=0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), preset {args.preset}, "
          f"batch {config.resolved_batch_size}, clip stride {args.clip_stride}, shards {shards}", flush=True)

    bare = bare_loop(config, args.epochs)
    ray_rates, ray_wall = ray_loop(config, args.epochs)
    bare_rate, ray_rate = float(np.mean(bare[1:] or bare)), float(np.mean(ray_rates[1:] or ray_rates))
    print(f"bare PyTorch loop : {' '.join(f'{r:.2f}' for r in bare)} clips/s per epoch -> {bare_rate:.2f} clips/s")
    print(f"Ray Train, 1 worker: {' '.join(f'{r:.2f}' for r in ray_rates)} clips/s per epoch -> {ray_rate:.2f} "
          f"clips/s ({100 * (ray_rate / bare_rate - 1):+.1f}% vs bare; whole run {ray_wall:.0f} s with start-up)")

    size = (16, 64, 96)
    torch.manual_seed(0)
    ours = step_seconds(AutoEncoderCov3DMem(chnum_in=1, mem_dim=2000), 2, size, args.repeats)
    torch.manual_seed(0)
    official = step_seconds(OfficialModel(chnum_in=1, mem_dim=2000), 2, size, args.repeats)
    print(f"paper network, train step at {size[0]}x{size[1]}x{size[2]}, batch 2: ours {ours:.3f} s/clip, "
          f"official {official:.3f} s/clip ({100 * (ours / official - 1):+.1f}%)")


if __name__ == "__main__":
    main()
