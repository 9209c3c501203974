"""What a scoring job tells afterwards: score_report.json, and the MLflow run with its params, metrics and files."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from memae.datasets.cameras import camera_name, camera_of
from pipelines.common.config import flatten, save_config
from pipelines.common.naming import new_run_name
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.collect import ScoredVideos
from pipelines.score.config import ScoreConfig
from pipelines.score.data import Listing, VideoOutcome
from pipelines.score.outputs import Outputs
from pipelines.score.threshold import FROM_ARCHIVE, Threshold

REPORT_FILE = "score_report.json"
METRIC_NAMES = ("auc_micro", "auc_macro", "eer", "average_precision")
REPORTED_ALARMS = 1000  # alarms listed in score_report.json's new_alarms; the rest only counted
SHARE_CAMERAS = 3  # cameras the console names beside the alarm share (score_report.json lists them all)


def alarm_share(summaries: list[dict], limit: Threshold) -> dict[str, Any] | None:
    """How much of the folder's scored footage lies inside alarms, beside what the threshold promises on normal video,
    and the same per camera (highest share first, and whether it has a line of its own where the calibration has
    per-camera lines) when there are several; None without a calibrated threshold. The
    one check of the calibration an unlabelled archive allows: on footage that is mostly normal, a share far above
    the nominal rate says it differs from the calibration videos, and the cameras say where."""
    if not limit.calibration:
        return None
    scored = [s for s in summaries if s.get("scored")]
    share = {**_share(scored), "nominal_false_alarm_rate": 1.0 - limit.level,
             "videos_with_alarms": sum(s["frames_flagged"] > 0 for s in scored),
             "line_from_archive": bool(limit.calibration.get(FROM_ARCHIVE))}
    cameras: dict[str, list[dict]] = {}
    for summary in scored:
        cameras.setdefault(camera_of(summary["video_id"]), []).append(summary)
    if len(cameras) > 1:
        lines = bool(limit.calibration.get("cameras"))  # which cameras have a line of their own, when some have
        rows = [{"camera": camera_name(camera), **({"own_line": limit.own_line(camera)} if lines else {}),
                 **_share(videos)} for camera, videos in cameras.items()]
        share["cameras"] = sorted(rows, key=lambda r: (-np.nan_to_num(r["share"], nan=-1.0), r["camera"]))
    return share


def _share(summaries: list[dict]) -> dict[str, Any]:
    frames = sum(s["num_frames"] or 0 for s in summaries)
    flagged = sum(s["frames_flagged"] for s in summaries)
    return {"frames_flagged": flagged, "frames_scored": frames, "share": flagged / frames if frames else float("nan")}


def new_alarms(summaries: list[dict], keys: set[str], limit: Threshold) -> dict[str, Any]:
    """The alarms in the videos `keys` (those this run scored), highest peak error first, and their `alarm_share`
    (per camera: a camera whose night lies far above the promise has changed, or its line was drawn on other
    footage): what an unattended night hands to whatever tells a person (score_report.json `new_alarms`), without
    reading the whole tables or MLflow."""
    own = [s for s in summaries if s["key"] in keys]
    alarms = [{"video_id": s["video_id"], "split": s["split"], "source": s["source"], **segment}
              for s in own if s.get("scored") for segment in s["segments"]]
    alarms.sort(key=lambda a: (-a["peak_value"], a["split"], a["video_id"], a["start_frame"]))
    return {"count": len(alarms), "videos": len(keys), "listed": alarms[:REPORTED_ALARMS],
            "share": alarm_share(own, limit)}


def alarm_share_line(share: dict[str, Any], scope: str = "") -> str:
    """The console's sentence for `alarm_share`; `scope` says of which videos (" in this run's videos")."""
    return f"alarms{scope}: {alarm_share_text(share)}"


def alarm_share_text(share: dict[str, Any]) -> str:
    """`alarm_share` in words, naming the cameras with the highest shares (the console's line, the review page)."""
    cameras = "".join(f"{', ' if i else '; highest: '}{row['camera']} {100 * row['share']:.1f}%"
                      f"{'' if row.get('own_line', True) else ' (pooled line)'}"
                      for i, row in enumerate(share.get("cameras", [])[:SHARE_CAMERAS]))
    if share.get("line_from_archive"):
        like, advice = "the archive's footage the line was drawn on", "a camera moved, relit or newly added?"
    else:
        like, advice = "the calibration videos", ("recalibrate on normal video of these cameras, or with "
                                                   "--calibrate-on-archive")
    return (f"{100 * share['share']:.1f}% of the {share['frames_scored']:,} frames scored, in "
            f"{share['videos_with_alarms']} videos{cameras}; on normal footage like {like} the threshold flags "
            f"about {100 * share['nominal_false_alarm_rate']:.1f}%, so far more than that on a mostly normal archive "
            f"means this footage differs from it ({advice})")


def score_report(config: ScoreConfig, source: ModelSource, listing: Listing, skipped: int, videos: ScoredVideos,
                 failed: list[VideoOutcome], elapsed: float, outputs: Outputs, limit: Threshold,
                 changed: list[str] | None = None, deferred: list[VideoOutcome] | None = None) -> dict[str, Any]:
    """The content of score_report.json; `failed` holds the listing's problems as well as the videos that failed,
    `changed` the videos rescored because their source changed, `deferred` those left for the next run; `alarms`
    is `alarm_share` over every video the folder holds for this model."""
    done = set(videos.scored)
    frames = sum(s["num_frames"] or 0 for s in outputs.summaries if s["key"] in done)
    return {
        "ok": not failed,
        "model": source.tags,
        "model_key": source.key,
        "dataset": listing.dataset,
        "data": str(config.root or config.shards),
        "listed": len(listing.units) + len(listing.problems),
        "scored": len(videos.scored),
        "skipped_already_scored": skipped,
        "rescored_changed": list(changed or []),
        "deferred": [d.problem() for d in deferred or []],
        "failed": [f.problem() for f in failed],
        "skipped_files": [{"file": issue.file, "reason": issue.reason} for issue in listing.unlisted],
        "too_short": videos.short,
        "notes": [{"split": o.split, "video_id": o.video_id, "note": note}
                  for o in videos.outcomes for note in o.notes],
        "clips_scored": videos.clips,
        "frames_scored": frames,
        "seconds": round(elapsed, 3),
        "clips_per_s": round(videos.clips / elapsed, 2) if elapsed > 0 else None,
        "frames_per_s": round(frames / elapsed, 2) if elapsed > 0 else None,
        "metrics": outputs.metrics_note,
        "alarms": alarm_share(outputs.summaries, limit),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def mlflow_run(config: ScoreConfig, tags: dict[str, str]) -> contextlib.AbstractContextManager:
    """The job's MLflow run (yielding it), or a context yielding None with --mlflow false."""
    if not config.mlflow:
        return contextlib.nullcontext()
    import mlflow

    return mlflow.start_run(run_name=config.run_name or new_run_name("score"), tags=tags)


def log_run(config: ScoreConfig, out: Path, outputs: Outputs, plots: list[Path], report: dict[str, Any],
            settings: ScoringSettings, limit: Threshold) -> None:
    """Params, metrics, plots and output tables in the active MLflow run; with --incremental the tables hold the videos
    this run scored (the whole history stays in --out), so a nightly store grows by a night, not by the archive."""
    import mlflow

    mlflow.log_params({k: v for k, v in flatten(config).items() if v is not None})
    mlflow.log_params({f"settings.{k}": v for k, v in asdict(settings).items()} | {"threshold_source": limit.source})
    metrics = {k: report[k] for k in ("scored", "skipped_already_scored", "clips_scored", "frames_scored",
                                      "seconds", "clips_per_s", "frames_per_s") if report[k] is not None}
    metrics["failed"] = len(report["failed"])
    metrics["deferred"] = len(report["deferred"])
    if limit.error is not None:
        metrics["threshold_error"] = limit.error
    if outputs.metrics is not None:
        metrics.update({k: outputs.metrics[k] for k in METRIC_NAMES})
        metrics.update({f"global_{k}": outputs.metrics["global"][k] for k in METRIC_NAMES})
        metrics.update({f"threshold_{k}": outputs.metrics["threshold"][k]
                        for k in ("false_alarm_rate", "nominal_false_alarm_rate", "flag_precision", "flag_recall",
                                  "frames_flagged")})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
    for path in plots:
        mlflow.log_artifact(str(path), "plots")
    tables = {**outputs.files, **outputs.run_files}  # --incremental: this run's videos, not the whole history again
    for path in [*tables.values(), out / REPORT_FILE]:
        if path.is_dir():  # the frame_scores.parquet folder of a whole run
            mlflow.log_artifacts(str(path), f"outputs/{path.name}")
        else:
            mlflow.log_artifact(str(path), "outputs")
    with tempfile.TemporaryDirectory() as tmp:
        save_config(config, Path(tmp) / "score_config.yaml")
        mlflow.log_artifact(str(Path(tmp) / "score_config.yaml"))
