"""Console progress of an ingest: every failure, and otherwise about a line a second with the rate and the ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.ingest.manifest import ManifestEntry

PRINT_EVERY_S = 1.0


@dataclass
class Progress:
    """Counts the videos and frames finished since `started`, and prints them through `echo`."""

    total: int
    echo: Callable[[str], None]
    started: float = field(default_factory=time.perf_counter)
    finished: int = 0
    frames: int = 0
    last_print: float = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, entry: ManifestEntry) -> None:
        """Counts a finished video; prints it if it failed, is the last, or a second has passed since the last line."""
        self.finished += 1
        self.frames += entry.num_frames if entry.status == "done" else 0
        now = time.perf_counter()
        if entry.status == "done" and now - self.last_print < PRINT_EVERY_S and self.finished < self.total:
            return
        self.last_print = now
        elapsed = now - self.started
        rate = self.frames / elapsed if elapsed > 0 else 0.0
        eta = elapsed / self.finished * (self.total - self.finished)
        self.echo(
            f"[{self.finished:>{len(str(self.total))}}/{self.total}] {entry.status:<6} "
            f"{entry.split}/{entry.video_id}  {self.frames} frames, {rate:.0f} frames/s, eta {eta:.0f}s"
        )
