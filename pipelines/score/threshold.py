"""Where the line between normal and anomalous frames is drawn, without labels.

The threshold is a quantile of the model's error on normal training clips: stored with a registered model, else
computed here from the normal training videos of the data (and kept in the ledger for the next run), else absent,
and then frames are flagged by their per-video score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memae.calibration import threshold
from memae.evaluation import calibrate_model
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.actors import driver_model
from pipelines.score.data import Listing, normal_clips
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
                     section: LedgerSection, level: float, max_clips: int, batch_size: int,
                     echo: Callable[[str], None]) -> Threshold:
    """The threshold at quantile `level`: the model's calibration, an earlier run's, or one computed now on up to
    `max_clips` normal training clips; without any, none (frames are then flagged by the per-video score)."""
    calibration, origin = source.calibration, "model calibration"
    if calibration and calibration.get("error_rule", settings.error_rule) != settings.error_rule:
        echo(f"the model's calibration is for the {calibration['error_rule']} error; recalibrating")
        calibration = None
    if not calibration:
        calibration, origin = section.calibration, "calibrated by an earlier run"
    if not calibration and listing.normal:
        echo(f"calibrating on up to {max_clips} clips of {len(listing.normal)} normal training videos")
        model, device = driver_model(source)
        clips = normal_clips(listing.normal, settings, max_clips)
        calibration = calibrate_model(model, clips, settings.error_rule, batch_size, max_clips, device)
        if calibration:
            ledger.keep_calibration(section, calibration)
            origin = f"calibrated on {calibration['num_clips']} normal training clips"
    if not calibration:
        echo("no calibration (the model has none and the data has no normal training videos): frames are flagged "
             f"where the per-video score is at least {FALLBACK_SCORE}, and score_global is min-max over this run")
        return Threshold(None, None, level, f"none: per-video score >= {FALLBACK_SCORE}")
    value = threshold(calibration, level)
    echo(f"threshold: error > {value:.5g} (the {level} quantile of normal clips; {origin})")
    return Threshold(value, threshold(calibration, 0.5), level, origin)
