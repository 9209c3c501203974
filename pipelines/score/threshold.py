"""Where the line between normal and anomalous frames is drawn, without labels.

The threshold is a quantile of the model's error on normal training clips: stored with a registered model, else
computed here from the normal training videos of the data (and kept in the ledger for the next run), else absent,
and then frames are flagged by their per-video score. The training videos are decoded in Ray tasks
(pipelines/score/isolated.py): one that crashes its decoder is a reported failure, not the end of the job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from memae.calibration import threshold
from memae.evaluation import calibrate_model
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.actors import driver_model
from pipelines.score.config import ScoreConfig
from pipelines.score.data import Listing, VideoOutcome, VideoUnit, first_clips
from pipelines.score.isolated import read_each
from pipelines.score.ledger import Ledger, LedgerSection

FALLBACK_SCORE = 0.5  # per-video score above which a frame is flagged when no calibration exists


@dataclass(frozen=True)
class Threshold:
    """How frames are flagged and put on the global scale."""

    error: float | None  # flag frames whose raw error exceeds this; None: per-video score >= FALLBACK_SCORE
    low: float | None  # raw error that maps to score_global 0 (median normal clip error); None: min-max
    level: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.error, "low": self.low, "level": self.level, "source": self.source}


def choose_threshold(source: ModelSource, settings: ScoringSettings, listing: Listing, ledger: Ledger,
                     section: LedgerSection, config: ScoreConfig,
                     echo: Callable[[str], None]) -> tuple[Threshold, list[VideoOutcome]]:
    """The threshold at quantile --threshold-level: the model's calibration, an earlier run's, or one computed now on
    up to --calibration-clips normal training clips; without any, none (frames are then flagged by the per-video
    score). Also the training videos that could not be read for it, each a failure to report."""
    level, failures = config.threshold_level, []
    calibration, origin = source.calibration, "model calibration"
    if calibration and calibration.get("error_rule", settings.error_rule) != settings.error_rule:
        echo(f"the model's calibration is for the {calibration['error_rule']} error; recalibrating")
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
        return Threshold(None, None, level, f"none: per-video score >= {FALLBACK_SCORE}"), failures
    value = threshold(calibration, level)
    echo(f"threshold: error > {value:.5g} (the {level} quantile of normal clips; {origin})")
    return Threshold(value, threshold(calibration, 0.5), level, origin), failures


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
