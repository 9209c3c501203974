"""Gathering scored clips by video in the driver, in whatever order the actors deliver them.

A video is complete at its end row (`VideoEnd`) once every clip it announced has arrived; a failed video is complete
at its end row alone (clips it scored before failing are dropped). Clips a retried task delivers twice count once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memae.evaluation import unique_clip_errors
from pipelines.score.data import VideoEnd, VideoOutcome, VideoUnit
from pipelines.score.outputs import MapSpool
from pipelines.score.paths import video_path


@dataclass
class VideoClips:
    """The clip errors (and error maps) of one video received so far, and its end row once it came."""

    starts: list[np.ndarray] = field(default_factory=list)
    errors: list[np.ndarray] = field(default_factory=list)
    received: int = 0
    end: VideoEnd | None = None
    maps: MapSpool | None = None

    def add(self, starts: np.ndarray, errors: np.ndarray) -> None:
        self.starts.append(starts)
        self.errors.append(errors)
        self.received += len(starts)

    def clip_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, errors), sorted by start, each clip once."""
        if not self.starts:
            return np.zeros(0, np.int64), np.zeros(0)
        return unique_clip_errors(np.concatenate(self.starts), np.concatenate(self.errors))

    @property
    def complete(self) -> bool:
        if self.end is None:
            return False
        if self.end.status == "failed":
            return True
        return self.received >= self.end.num_clips and len(self.clip_errors()[0]) == self.end.num_clips

    def discard_maps(self) -> None:
        if self.maps is not None:
            self.maps.discard()


class Collector:
    """Sorts scored rows into their videos; hands back each video the moment it is complete."""

    def __init__(self, todo: list[VideoUnit], maps_folder: Path | None, centre: int) -> None:
        """`maps_folder`: where error maps are spooled (None: not saved); `centre`: a clip's frame its map shows."""
        self.units = {u.key: u for u in todo}
        self.videos = {key: VideoClips() for key in self.units}
        self.maps_folder = maps_folder
        self.centre = centre
        self.clips = 0

    def add(self, batch: dict[str, np.ndarray]) -> Iterator[tuple[VideoUnit, VideoClips]]:
        """Takes one batch of scored rows (key, start, error, end[, map]); yields the videos it completes."""
        for key in map(str, np.unique(batch["key"])):
            video = self.videos.get(key)
            if video is None:
                continue  # clips of a video that already failed, arriving late from another actor
            rows = batch["key"] == key
            is_clip = rows & (batch["start"] >= 0)
            video.add(batch["start"][is_clip], batch["error"][is_clip])
            self.clips += int(is_clip.sum())
            if self.maps_folder is not None and is_clip.any():
                if video.maps is None:
                    unit = self.units[key]
                    video.maps = MapSpool(video_path(self.maps_folder, unit.split, unit.video_id, ".maps.npy"))
                video.maps.add(batch["start"][is_clip] + self.centre, batch["map"][is_clip])
            for end in batch["end"][rows & (batch["start"] < 0)]:
                video.end = VideoEnd.decode(end)
            if video.complete:
                del self.videos[key]
                yield self.units.pop(key), video

    def unfinished(self) -> list[VideoUnit]:
        """Videos whose end row never came (their decoding or scoring task failed for good); their maps dropped."""
        for video in self.videos.values():
            video.discard_maps()
        return list(self.units.values())


@dataclass
class ScoredVideos:
    """What one pass over the videos to score produced: each video's outcome, and the clips scored."""

    outcomes: list[VideoOutcome] = field(default_factory=list)
    clips: int = 0

    @property
    def scored(self) -> list[str]:
        return [o.key for o in self.outcomes if o.status == "done"]

    @property
    def short(self) -> list[str]:
        return [o.key for o in self.outcomes if o.status == "short"]

    @property
    def failed(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def deferred(self) -> list[VideoOutcome]:
        """Videos whose file went away while the run went on (`pipelines.common.settle.gone_since_listed`)."""
        return [o for o in self.outcomes if o.status == "deferred"]
