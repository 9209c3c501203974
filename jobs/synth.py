"""Write a synthetic surveillance corpus with known anomalies in the layout of a real archive.

    python jobs/synth.py --layout ucsd-ped2 --out /tmp/synth-ped2
    python jobs/synth.py --layout avenue --out /tmp/synth-avenue --train-videos 8 --test-videos 8 --frames 200
    python jobs/synth.py --config synth.yaml --seed 1          # every flag is also a YAML key

Then ingest it like a real archive: python jobs/ingest.py --root /tmp/synth-ped2 --out /tmp/ped2-shards --size 64x64
Exit status 0 when the corpus was written, 2 on bad arguments.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.synthetic import LAYOUTS, SynthConfig, write_corpus
from pipelines.common.config import config_from_args, config_parser, option, parse_size


@dataclass
class SynthJobConfig:
    """The job's flags: the archive to write, and the `SynthConfig` fields worth choosing from the command line."""

    layout: str | None = option(None, "archive layout to write (required)", choices=LAYOUTS)
    out: str | None = option(None, "folder to write the archive into (required)")
    seed: int = option(SynthConfig.seed, "same seed, same pixels")
    train_videos: int = option(SynthConfig.train_videos, "normal videos")
    test_videos: int = option(SynthConfig.test_videos, "videos with anomalies")
    frames: int = option(SynthConfig.frames, "frames per video")
    size: tuple[int, int] = option((SynthConfig.height, SynthConfig.width), "frame size HxW", parse=parse_size)
    fps: float = option(SynthConfig.fps, "frame rate written into videos")

    def synth_config(self) -> SynthConfig:
        height, width = self.size
        return SynthConfig(height=height, width=width, frames=self.frames, train_videos=self.train_videos,
                           test_videos=self.test_videos, fps=self.fps, seed=self.seed)


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(SynthJobConfig, description=__doc__)
    try:
        config = config_from_args(SynthJobConfig, parser.parse_args(argv))
        synth = config.synth_config()
    except ValueError as err:
        parser.error(str(err))
    if config.layout not in LAYOUTS or not config.out:
        parser.error(f"--layout (one of {', '.join(LAYOUTS)}) and --out are required (or layout: and out: in --config)")
    out = Path(config.out).resolve()
    start = time.perf_counter()
    written = write_corpus(config.layout, out, synth)
    anomalous = sum(int(v.labels.sum()) for v in written if v.split == "test")
    frames = sum(len(v.labels) for v in written)
    print(f"wrote {config.layout} corpus to {out}: {len(written)} videos, {frames} frames ({anomalous} anomalous) in "
          f"{time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
