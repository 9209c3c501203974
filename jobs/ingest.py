"""Ingest a video archive into Parquet frame shards with Ray Data (see pipelines/ingest/run.py).

    python jobs/ingest.py --dataset auto --root /data/UCSD_Anomaly_Dataset.v1p2/UCSDped2 --out data/ped2
    python jobs/ingest.py --dataset videos --root /srv/cctv --out data/cctv --size 128x128 --color rgb

Runs locally (starting its own Ray) or under `ray job submit` (joining that cluster). Rerun the same command to
resume. Exit status: 0 when every video was ingested, 1 when any failed (see ingest_report.json), 2 when the
ingest could not start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memae.datasets import DATASETS
from pipelines.ingest.run import IngestConfig, IngestError, ingest
from pipelines.ingest.shards import ENCODINGS


def parse_size(text: str) -> tuple[int, int] | None:
    """'HxW' to (H, W); 'native' keeps each video's own size."""
    if text == "native":
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        message = f"size must look like 256x256 (height x width) or 'native', not {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return height, width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="auto", choices=DATASETS, help="archive layout (default: auto)")
    parser.add_argument("--root", required=True, type=Path, help="the archive, unmodified")
    parser.add_argument("--out", required=True, type=Path, help="output folder: manifest.json, shards/")
    parser.add_argument("--size", type=parse_size, default=(256, 256), help="stored frame size HxW (default 256x256)")
    parser.add_argument("--color", choices=("gray", "rgb"), default="gray", help="stored color (default gray)")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all", help="what to ingest")
    parser.add_argument("--clip-len", type=int, default=16, help="clip length recorded for readers (default 16)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    parser.add_argument(
        "--encoding",
        choices=ENCODINGS,
        default="tensor",
        help="image column: an Arrow tensor (default) or raw bytes, much cheaper to write (pipelines/ingest/shards.py)",
    )
    args = parser.parse_args(argv)
    cfg = IngestConfig(
        root=args.root.resolve(),  # under `ray job submit` the working directory is a temporary copy
        out=args.out.resolve(),
        dataset=args.dataset,
        split=args.split,
        size=args.size,
        color=args.color,
        clip_len=args.clip_len,
        num_cpus=args.num_cpus,
        encoding=args.encoding,
    )
    try:
        result = ingest(cfg, echo=lambda line: print(line, flush=True))
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
