"""The scoring job's configuration: every value a flag or a YAML key (see pipelines/common/config.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from memae.calibration import DEFAULT_ALARM_LEVEL
from memae.datasets import DATASETS
from memae.scoring import ERROR_RULES, FRAME_RULES
from pipelines.common.config import option

SPLITS = ["auto", "train", "test", "all"]
PRECISIONS = ["fp32", "bf16"]


class ScoreSetupError(ValueError):
    """The job cannot start: bad flags, model or data not found, settings that contradict earlier runs."""


@dataclass
class ScoreConfig:
    model: str | None = option(
        None, "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a memae checkpoint or an official .pt"
    )
    out: str | None = option(None, "output folder (frame_scores.parquet, metrics.json, plots/, ledger.sqlite, ...)")
    dataset: str | None = option(None, "layout of --root (auto recognises it)", choices=list(DATASETS))
    root: str | None = option(None, "an archive to decode and score directly (no ingest needed)")
    shards: str | None = option(None, "or: frame shards written by jobs/ingest.py")
    split: str = option("auto", "videos to score; auto: the test split when there is one, else all", choices=SPLITS)
    incremental: bool = option(
        False, "nightly: score only the videos this model has not scored into --out yet and those whose file changed "
        "since (size or time; content with --hash), defer files modified in the last --settle-s seconds, keep the rest"
    )
    restart: bool = option(
        False, "discard this model's earlier results in --out (its per-video files and ledger entries) before scoring; "
        "the only way results are ever deleted"
    )
    settle_s: float = option(300.0, "with --incremental: a file modified less than this many seconds ago may still be "
                             "being written; it is deferred to the next run (reported, neither scored nor failed)")
    hash: bool = option(False, "with --incremental: compare a SHA-256 of each video's content too (reads every file); "
                        "the content then decides, so a touched file is not rescored and a rewritten one always is")
    wait_s: float = option(0.0, "when another job is writing --out: seconds to wait for it to finish before giving up "
                           "(exit status 4)")
    since: str | date | None = option(
        None, "score only videos whose source (video file, frame folder or shard) was modified at or after this: a "
        "date or time (2026-12-01, 2026-12-01T06:00; the machine's local time unless it has an offset) or an age (36h, "
        "7d); older ones are left alone (counted, neither scored nor failed), so a new model version can start from "
        "recent footage instead of the whole archive"
    )
    clip_len: int | None = option(None, "frames per clip (default: the model's; 16 for an official .pt)")
    height: int | None = option(None, "frame height to decode at (default: the model's; 256 for an official .pt)")
    width: int | None = option(None, "frame width to decode at (default: the model's; 256 for an official .pt)")
    stride: int = option(1, "frames between consecutive clip starts (1 scores every clip, as the paper)")
    error_rule: str | None = option(None, "clip error (default: the model's, else l1)", choices=list(ERROR_RULES))
    frame_rule: str | None = option(
        None, "clip to frame: mean of all clips covering a frame, or centre (the paper's); default: the model's "
        "(the rule it was validated with; centre for an official .pt)", choices=list(FRAME_RULES)
    )
    threshold_level: float = option(DEFAULT_ALARM_LEVEL, "an alarm opens where a frame's error passes this "
                                    "quantile of the error on normal video the model did not train on (about 1 - "
                                    "this of normal frames)")
    release_level: float = option(0.95, "an alarm stays open while the error stays above this quantile (at most "
                                  "--threshold-level)")
    min_event_frames: int = option(8, "alarms shorter than this many frames are dropped")
    calibration_clips: int = option(256, "normal clips to calibrate on when the model carries no calibration")
    calibrate_on_archive: bool = option(
        False, "draw the alarm line anew from this model's frame errors on the videos it has already scored into "
        "--out (per camera; an archive is mostly normal footage, and many nights of it say more than a few held-out "
        "videos), kept for the runs after; needs 2 scored videos or more"
    )
    fps: float | None = option(None, "frame rate for segment times when the archive does not record one")
    batch_size: int = option(16, "clips per model call")
    precision: str = option("fp32", "model arithmetic: bf16 runs the model under bf16 autocast on GPUs (errors still "
                            "in float32; ignored on CPUs)", choices=PRECISIONS)
    concurrency: int | None = option(None, "scoring actors, each holding the model (default: one per GPU, else 1)")
    use_gpu: bool | None = option(None, "one GPU per actor (default: when the cluster has GPUs)")
    cpus_per_actor: float | None = option(None, "CPUs per scoring actor (default: 1, leaving the rest to decoding)")
    torch_threads: int | None = option(None, "torch threads per actor (default: from its CPUs)")
    decode_cpus: float = option(0.5, "CPUs per decoding task (fractional lets decoding run beside the actors)")
    num_cpus: int | None = option(None, "CPUs of a local Ray (default: all); ignored when joining a cluster")
    save_maps: bool = option(False, "save per-pixel error maps (maps/<split>/<video>.npy, float16 T x H x W)")
    plot_videos: int = option(12, "score curves drawn: labelled videos first, then those with the highest errors")
    worst_frames: int = option(8, "frames in the grid of the most anomalous frames and their error maps")
    review: bool = option(True, "write report/index.html: the alarms as cards with animated previews, filterable")
    review_cards: int = option(30, "alarm cards (with animated previews) on the review page; the rest go in a table")
    mlflow: bool = option(True, "log the run, its metrics, plots and outputs to MLflow")
    tracking_uri: str | None = option(None, "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    experiment: str = option("memae-score", "MLflow experiment")
    run_name: str | None = option(None, "MLflow run name (default: generated)")
    verbose: bool = option(False, "show Ray and MLflow internals on the console")

    def check(self) -> None:
        """Refuses incomplete or contradictory settings with a message that names the flag."""
        if not self.model:
            raise ValueError("--model is required")
        if not self.out:
            raise ValueError("--out is required")
        if (self.root is None) == (self.shards is None):
            raise ValueError("give either --dataset NAME --root DIR (raw archive) or --shards DIR (ingested)")
        if self.root is not None and self.dataset is None:
            raise ValueError("--root needs --dataset (a layout name, or auto)")
        for name in ("stride", "batch_size", "calibration_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("settle_s", "wait_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if self.since is not None:
            since_time(self.since, now=0.0)  # refuses a malformed value before anything starts
        if not 0.0 < self.threshold_level < 1.0:
            raise ValueError(f"--threshold-level must be between 0 and 1, not {self.threshold_level}")
        if not 0.5 <= self.release_level < 1.0:
            raise ValueError(f"--release-level must be between 0.5 and 1, not {self.release_level}")
        if self.min_event_frames < 1:
            raise ValueError(f"--min-event-frames must be 1 or more, not {self.min_event_frames}")


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(value: str | date, now: float) -> float:
    """--since as a POSIX time: an age before `now` ("36h", "7d", "90m", "3600s") or an ISO date or time (also as
    the date or datetime a YAML config file turns `since: 2026-12-01` into).

    Raises:
        ValueError: neither, named as --since.
    """
    text = str(value).strip()
    if match := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text):
        return now - float(match[1]) * AGE_UNITS[match[2]]
    try:
        return datetime.fromisoformat(text).timestamp()  # naive: the machine's local time
    except ValueError:
        raise ValueError(f"--since must be a date or time (2026-12-01, 2026-12-01T06:00) or an age (36h, 7d), "
                         f"not {text!r}") from None
