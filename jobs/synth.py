"""Write a synthetic surveillance corpus with known anomalies in the layout of a real archive.

    python jobs/synth.py --layout ucsd-ped2 --out /tmp/synth-ped2
    python jobs/synth.py --layout avenue --out /tmp/synth-avenue --train-videos 8 --test-videos 8 --frames 200

Then ingest it like a real archive: python jobs/ingest.py --root /tmp/synth-ped2 --out /tmp/ped2-shards --size 64x64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments.synthetic import LAYOUTS, SynthConfig, write_corpus


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' to (H, W)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 160x240 (height x width), not {text!r}") from None
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="archive layout to write")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the archive into")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same pixels (default 0)")
    parser.add_argument("--train-videos", type=int, default=SynthConfig.train_videos, help="normal videos")
    parser.add_argument("--test-videos", type=int, default=SynthConfig.test_videos, help="videos with anomalies")
    parser.add_argument("--frames", type=int, default=SynthConfig.frames, help="frames per video")
    parser.add_argument("--size", type=parse_size, default=(SynthConfig.height, SynthConfig.width), help="HxW")
    parser.add_argument("--fps", type=float, default=SynthConfig.fps, help="frame rate written into videos")
    args = parser.parse_args(argv)
    try:
        cfg = SynthConfig(
            height=args.size[0],
            width=args.size[1],
            frames=args.frames,
            train_videos=args.train_videos,
            test_videos=args.test_videos,
            fps=args.fps,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    written = write_corpus(args.layout, args.out.resolve(), cfg)
    anomalous = sum(int(v.labels.sum()) for v in written if v.split == "test")
    frames = sum(len(v.labels) for v in written)
    print(
        f"wrote {args.layout} corpus to {args.out.resolve()}: {len(written)} videos, {frames} frames "
        f"({anomalous} anomalous) in {time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
