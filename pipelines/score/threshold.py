"""Where the line between normal and anomalous frames is drawn, without labels.

The threshold is a quantile of the model's frame errors on normal video: the calibration stored with a registered
model (made on training videos held out from its training, per camera where the archive has several), else one
computed here from the normal training videos of the data (kept in the ledger for the next run), else absent, and
then frames are flagged by their per-video score. The training videos are decoded in Ray tasks
(pipelines/score/isolated.py): one that crashes its decoder is a reported failure, not the end of the job.

Alarms are events, not frames (`memae.segments.hysteresis_flags`): an event opens where a frame's error passes the
threshold (quantile --threshold-level), stays open while the error stays above the release line (quantile
--release-level) and counts when it lasts --min-event-frames frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memae.calibration import calibrate_errors, later_video_exceedance, threshold, unseen_video_exceedance
from memae.datasets.cameras import camera_name, camera_of
from memae.evaluation import calibrate_model
from memae.scoring import GlobalNormalizer, anomaly_score
from memae.segments import hysteresis_flags
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.actors import driver_model
from pipelines.score.config import ScoreConfig
from pipelines.score.data import Listing, VideoOutcome, VideoUnit, first_clips
from pipelines.score.isolated import read_each
from pipelines.score.ledger import Ledger, LedgerSection

FALLBACK_SCORE = 0.5  # per-video score above which a frame is flagged when no calibration exists
ARCHIVE_VIDEOS = 1000  # the newest scored videos an archive calibration reads
ARCHIVE_FRAMES_PER_VIDEO = 5000  # frames of each of them it keeps
SHOWN_CAMERAS = 5  # cameras named in a console line (score_report.json has them all)
FROM_ARCHIVE = "from_archive"  # marks a calibration drawn from the archive: it then comes before the model's own


@dataclass(frozen=True)
class Threshold:
    """How frames are flagged and put on the global scale, per camera when the calibration has cameras."""

    calibration: dict[str, Any] | None  # None: flag by per-video score >= FALLBACK_SCORE
    level: float
    release_level: float
    min_event_frames: int
    source: str

    @property
    def error(self) -> float | None:
        """The alarm line on the raw error of all cameras pooled (None without a calibration)."""
        return self.alarm("")

    @property
    def low(self) -> float | None:
        """The raw error that maps to score_global 0: the median normal error (None without a calibration)."""
        return self.median("")

    def own_line(self, camera: str) -> bool:
        """Whether `camera` was calibrated on its own footage; the others are judged by the pooled line."""
        return camera in ((self.calibration or {}).get("cameras") or {})

    def alarm(self, camera: str) -> float | None:
        return threshold(self.calibration, self.level, camera) if self.calibration else None

    def median(self, camera: str) -> float | None:
        return threshold(self.calibration, 0.5, camera) if self.calibration else None

    def release(self, camera: str) -> float | None:
        return threshold(self.calibration, min(self.release_level, self.level), camera) if self.calibration else None

    def scale(self, video_id: str) -> GlobalNormalizer | None:
        """score_global's scale for this video's camera: 0 at its median normal error, 1 at its alarm line."""
        camera = camera_of(video_id)
        return GlobalNormalizer(self.median(camera), self.alarm(camera), clip=False) if self.calibration else None

    def flags(self, video_id: str, errors: np.ndarray) -> np.ndarray:
        """The frames of one video inside alarm events (per-video score >= FALLBACK_SCORE without a calibration)."""
        if not self.calibration:
            return np.nan_to_num(anomaly_score(errors), nan=-np.inf) >= FALLBACK_SCORE
        camera = camera_of(video_id)
        return hysteresis_flags(errors, self.alarm(camera), self.release(camera), self.min_event_frames)

    def as_dict(self) -> dict[str, Any]:
        cameras = sorted((self.calibration or {}).get("cameras") or {})
        return {"error": self.error, "low": self.low, "release": self.release(""), "level": self.level,
                "release_level": self.release_level, "min_event_frames": self.min_event_frames,
                "source": self.source,
                "cameras": {camera: {"error": self.alarm(camera), "low": self.median(camera),
                                     "release": self.release(camera)} for camera in cameras}}


def choose_threshold(source: ModelSource, settings: ScoringSettings, listing: Listing, ledger: Ledger,
                     section: LedgerSection, config: ScoreConfig,
                     echo: Callable[[str], None]) -> tuple[Threshold, list[VideoOutcome]]:
    """The threshold at quantile --threshold-level: the model's calibration, an earlier run's, or one computed now on
    up to --calibration-clips normal training clips; without any, none (frames are then flagged by the per-video
    score). Also the training videos that could not be read for it, each a failure to report."""
    level, failures = config.threshold_level, []
    if config.calibrate_on_archive:
        ledger.keep_calibration(section, archive_calibration(ledger.out, section, settings))
    calibration = source.calibration
    origin = f"model calibration on {calibration.get('source') or 'normal training clips'}" if calibration else ""
    if section.calibration and section.calibration.get(FROM_ARCHIVE):
        calibration, origin = section.calibration, f"calibrated on {section.calibration['source']}"
    if calibration and calibration.get("error_rule", settings.error_rule) != settings.error_rule:
        echo(f"the model's calibration is for the {calibration['error_rule']} error; recalibrating")
        calibration = None
    elif calibration and calibration.get("frame_rule", settings.frame_rule) != settings.frame_rule:
        echo(f"the model's calibration is for the {calibration['frame_rule']} frame rule; recalibrating")
        calibration = None
    if not calibration:
        calibration, origin = section.calibration, "calibrated by an earlier run"
    if not calibration and listing.normal:
        echo(f"calibrating on up to {config.calibration_clips} clips of {len(listing.normal)} normal training videos")
        model, device = driver_model(source)
        with closing(_normal_clips(listing.normal, settings, config, failures, echo)) as clips:
            calibration = calibrate_model(model, clips, settings.error_rule, config.batch_size,
                                          config.calibration_clips, device)
        if calibration:
            ledger.keep_calibration(section, calibration)
            origin = f"calibrated on {calibration['num_clips']} normal training clips"
    if not calibration:
        echo("no calibration (the model has none and the data has no normal training videos): frames are flagged "
             f"where the per-video score is at least {FALLBACK_SCORE}, and score_global is min-max over this run")
        return (Threshold(None, level, config.release_level, config.min_event_frames,
                          f"none: per-video score >= {FALLBACK_SCORE}"), failures)
    chosen = Threshold(calibration, level, config.release_level, config.min_event_frames, origin)
    count = len(calibration.get("cameras") or {})
    cameras = f", own lines for {count} cameras" if count > 1 else ""
    expected = (calibration.get("unseen_video_exceedance") or {}).get(str(level))
    check = (f"; each calibration video passed the line of the others on {100 * expected:.1f}% of its frames"
             if expected is not None else "")
    later = (calibration.get("later_video_exceedance") or {}).get(str(level))
    check += (f", the newest tenth passed the line of the older ones on {100 * later:.1f}%"
              if later is not None else "")
    echo(f"threshold: error > {chosen.error:.5g} (the {level} quantile of normal {calibration.get('unit', 'clip')} "
         f"errors; {origin}{cameras}{check}); events last while above the {chosen.release_level} quantile, "
         f"{config.min_event_frames} frames or more")
    pooled = sorted({camera for camera in map(camera_of, (unit.video_id for unit in listing.units))
                     if not chosen.own_line(camera)})
    if count and pooled:  # a camera added since the line was drawn, or one with too little footage for its own
        echo(f"{len(pooled)} cameras have no alarm line of their own and are judged by the line of all cameras pooled: "
             f"{', '.join(map(camera_name, pooled[:SHOWN_CAMERAS]))}{' ...' if len(pooled) > SHOWN_CAMERAS else ''}"
             " (--calibrate-on-archive draws theirs once some of their footage is scored)")
    return chosen, failures


def archive_calibration(out: Path, section: LedgerSection, settings: ScoringSettings) -> dict[str, Any]:
    """A calibration from the frame errors of the videos `section` has scored into `out` (the newest ARCHIVE_VIDEOS,
    at most ARCHIVE_FRAMES_PER_VIDEO of each, evenly spaced: memory and reading stay bounded on a year of footage),
    per camera, with the label-free checks of its promise: each tenth of the videos against the line the rest set,
    and the newest tenth against the line of the older ones.

    Raises:
        ValueError: fewer than two scored videos with scored frames.
    """
    newest = sorted((key for key, entry in section.videos.items() if entry.scored and (out / entry.file).is_file()),
                    key=lambda key: (section.videos[key].scored_at, key))[-ARCHIVE_VIDEOS:]
    videos = {}
    for key in sorted(newest):
        entry = section.videos[key]
        try:
            errors = pq.read_table(out / entry.file, columns=["error"]).column("error").to_numpy()
        except (OSError, pa.ArrowException):  # damaged on disk: the rebuild reports it lost
            continue
        errors = errors[np.isfinite(errors)]
        step = max(1, -(-len(errors) // ARCHIVE_FRAMES_PER_VIDEO))
        if len(errors):
            videos[key] = (camera_of(entry.video_id), errors[::step])
    if len(videos) < 2:
        raise ValueError(f"--calibrate-on-archive: model {section.key} has scored {len(videos)} videos with scored "
                         f"frames into {out}; the line needs 2 or more (score some nights first)")
    cameras: dict[str, list[np.ndarray]] = {}
    for camera, errors in videos.values():
        cameras.setdefault(camera, []).append(errors)
    calibration = calibrate_errors(
        np.concatenate([errors for _, errors in videos.values()]), settings.error_rule, unit="frame",
        source=f"{len(videos)} videos scored into --out", cameras={c: np.concatenate(e) for c, e in cameras.items()})
    exceedance = unseen_video_exceedance({key: errors for key, (_, errors) in videos.items()}, groups=10)
    later = later_video_exceedance([videos[key][1] for key in newest if key in videos])  # newest: in time order
    return {**calibration, "frame_rule": settings.frame_rule, FROM_ARCHIVE: True,
            "unseen_video_exceedance": exceedance, "later_video_exceedance": later}


def _normal_clips(units: list[VideoUnit], settings: ScoringSettings, config: ScoreConfig,
                  failures: list[VideoOutcome], echo: Callable[[str], None]) -> Iterator[np.ndarray]:
    """Clips of the normal videos in listing order, each video decoded in a Ray task; unreadable ones reported in
    `failures` (they only mean fewer calibration clips)."""
    requests = ((unit, config.calibration_clips) for unit in units)
    for unit, clips, failure in read_each(requests, first_clips, settings, config):
        if failure is not None:
            failure = replace(failure, reason=f"calibration: {failure.reason}")
            echo(f"calibration skips {unit.key}: {failure.file}: {failure.reason}")
            failures.append(failure)
            continue
        yield from clips
