"""What to ingest and how: the fields of `IngestConfig` are the flags of jobs/ingest.py and the keys of its YAML."""

from __future__ import annotations

from argparse import ArgumentTypeError
from dataclasses import dataclass
from pathlib import Path

from memae.datasets import DATASETS
from memae.datasets.decode import DECODERS, DEFAULT_DECODER
from memae.datasets.records import SPLITS
from pipelines.common.config import option, parse_size
from pipelines.ingest.shards import DEFAULT_ENCODING, ENCODINGS

COLORS = ("gray", "rgb")
NATIVE_SIZES = ("native", "none")  # --size words that keep each video's own size


def parse_frame_size(text: str) -> tuple[int, int] | str:
    """'HxW' to (H, W); 'native' stays a word until the config turns it into None (a flag value of None would read
    as "flag not given")."""
    return "native" if str(text).lower() in NATIVE_SIZES else parse_size(text)


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest and how; `size` is (height, width), None to keep each video's own size."""

    root: Path | None = option(None, "the archive, unmodified; required")
    out: Path | None = option(None, "output folder: manifest.json, ingest_report.json, shards/; required")
    dataset: str = option("auto", "archive layout", choices=DATASETS)
    split: str = option("all", "what to ingest", choices=(*SPLITS, "all"))
    size: tuple[int, int] | None = option(
        (256, 256), "stored frame size HxW, or 'native' to keep each video's own size", parse=parse_frame_size
    )
    color: str = option("gray", "stored colour", choices=COLORS)
    clip_len: int = option(16, "clip length recorded for readers")
    num_cpus: int | None = option(None, "CPUs of a local Ray; none given: all cores")
    encoding: str = option(
        DEFAULT_ENCODING, "image column: raw uint8 bytes per frame with the shape in the field's metadata, or an "
        "Arrow tensor, as costly to write as decoding (pipelines/ingest/shards.py)", choices=ENCODINGS,
    )
    decoder: str = option(
        DEFAULT_DECODER, "video decoder (memae/datasets/decoders.py); decord by default, as scoring decodes raw video "
        "with it (gray levels differ by about one between decoders); opencv is faster; auto: the fastest installed",
        choices=("auto", *DECODERS),
    )
    wait_s: float = option(0.0, "seconds to wait while another job writes --out, then give up with status 4")
    settle_s: float = option(0.0, "a video whose file (or frame folder) was modified less than this many seconds ago "
                             "may still be being written: it is deferred to the next run (reported, neither ingested "
                             "nor failed); 300 suits a nightly ingest of a live archive")
    verbose: bool = option(False, "show Ray and MLflow internals")

    def __post_init__(self) -> None:
        """Paths from strings, a size from 'HxW', a list or 'native', as YAML and Python callers give them."""
        for name in ("root", "out"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Path(getattr(self, name)))
        size = self.size
        if isinstance(size, str):
            try:
                size = None if size.lower() in NATIVE_SIZES else parse_size(size)
            except ArgumentTypeError as exc:
                raise ValueError(f"--size: {exc}") from None
        object.__setattr__(self, "size", tuple(size) if isinstance(size, list) else size)

    def check(self) -> None:
        """Refuses what no run could use, naming the flag: Python callers do not go through the parser's checks.

        Raises:
            ValueError: for a missing --root or --out, a value outside a flag's choices, or a non-positive number.
        """
        for flag, value in (("--root", self.root), ("--out", self.out)):
            if value is None:
                raise ValueError(f"{flag} is required")
        for flag, value, allowed in (
            ("--dataset", self.dataset, DATASETS),
            ("--split", self.split, (*SPLITS, "all")),
            ("--color", self.color, COLORS),
            ("--encoding", self.encoding, ENCODINGS),
            ("--decoder", self.decoder, ("auto", *DECODERS)),
        ):
            if value not in allowed:
                raise ValueError(f"{flag} must be one of {', '.join(allowed)}, not {value!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"--size must be two positive numbers of pixels, HxW, not {self.size!r}")
        if self.clip_len < 1:
            raise ValueError(f"--clip-len must be positive, not {self.clip_len}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"--num-cpus must be positive, not {self.num_cpus}")
        for flag, seconds in (("--wait-s", self.wait_s), ("--settle-s", self.settle_s)):
            if seconds < 0:
                raise ValueError(f"{flag} must be 0 or more seconds, not {seconds}")
