"""What the scoring job writes, and how it stays right when runs are incremental, killed or repeated.

Each finished video is written on its own, atomically (temporary file, then rename), before the ledger records it,
and carries in its Parquet footer what the ledger records for it (`read_video_record`): a rerun after a kill between
the rename and the ledger's commit records the file instead of scoring the video again (pipelines/score/changes.py):

    OUT/scored/<model key>/<split>/<video>.parquet     video_id, split, frame, error, score, label
    OUT/scored/<model key>/<split>/<video>.maps.npy    with --save-maps: float16 (frames, H, W), NaN where unscored
    OUT/ledger.sqlite                                  per model key: its settings, calibration, videos done and the
                                                       size and time of their sources

The files a person reads are then rebuilt from the per-video files of the model just run, so a rerun, an
incremental append or a restart after a kill can never duplicate a frame:

    OUT/frame_scores.parquet    one row per frame: video_id, split, frame, time_s, error (raw), normality (the paper's
                                per-video p), score (1 - p: higher is more anomalous), score_global, flagged, label
    OUT/video_summary.json      per video: frames, peak error and score_global, anomalous segments (frames, seconds)
    OUT/segments.parquet        the segments, one row each
    OUT/metrics.json            with labels: frame AUC micro (the paper's), macro, EER, AP for per-video and global
                                normalisation, and what the alarms cost and catch: the false-alarm rate measured on
                                normal frames beside the nominal one, recall, precision

`score_global` puts every video on one scale without seeing the whole video (`memae.scoring.GlobalNormalizer`,
unclipped): 0 at the median normal error of the video's camera and 1 at its alarm line, so one number means the same
on every camera. `flagged` marks the frames inside alarm events (pipelines/score/threshold.py: an event opens above 1
and lasts while the error stays above the release line). Without a calibration score_global falls back to min-max
over every frame scored (offline), and frames are flagged where the per-video score is at least 0.5. Which videos are
finished is the ledger's business (pipelines/score/ledger.py).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memae.evaluation import video_metrics
from memae.files import json_ready, replace_atomically, temporary_path, write_json_atomic
from memae.metrics import frame_metrics
from memae.scoring import GlobalNormalizer, anomaly_score
from memae.segments import anomalous_segments
from pipelines.registry.source import ScoringSettings
from pipelines.score.ledger import LedgerEntry, LedgerSection
from pipelines.score.threshold import Threshold

FRAME_SCORES, SUMMARY = "frame_scores.parquet", "video_summary.json"
SEGMENTS, METRICS = "segments.parquet", "metrics.json"
SUMMARY_FIELDS = ("video_id", "split", "source", "num_frames", "num_clips", "fps")  # of the ledger entry
RECORD_KEY = b"memae.ledger"  # in a per-video file's footer: its ledger row (pipelines/score/ledger.py, entry_record)

VIDEO_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("split", pa.string()), ("frame", pa.int32()),
    ("error", pa.float64()), ("score", pa.float64()), ("label", pa.int8()),
])
FRAME_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("split", pa.string()), ("frame", pa.int32()), ("time_s", pa.float64()),
    ("error", pa.float64()), ("normality", pa.float64()), ("score", pa.float64()), ("score_global", pa.float64()),
    ("flagged", pa.bool_()), ("label", pa.int8()),
])
SEGMENT_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("split", pa.string()), ("start_frame", pa.int32()), ("end_frame", pa.int32()),
    ("start_s", pa.float64()), ("end_s", pa.float64()), ("num_frames", pa.int32()), ("peak_frame", pa.int32()),
    ("peak_error", pa.float64()),
])


# ---------------------------------------------------------------------------------------------------------------
# Per-video files


def write_video_scores(path: Path, video_id: str, split: str, errors: np.ndarray, scores: np.ndarray,
                       labels: np.ndarray, record: Mapping[str, Any] | None = None) -> None:
    """One video's per-frame raw error, per-video score and label, written atomically; `record`, what the ledger is
    about to record for it, goes into the file's footer."""
    n = len(errors)
    table = pa.table(
        {
            "video_id": pa.array([video_id] * n, pa.string()),
            "split": pa.array([split] * n, pa.string()),
            "frame": pa.array(np.arange(n, dtype=np.int32)),
            "error": pa.array(errors, pa.float64()),
            "score": pa.array(scores, pa.float64()),
            "label": pa.array(np.asarray(labels, dtype=np.int8)),
        },
        schema=VIDEO_SCHEMA if record is None else VIDEO_SCHEMA.with_metadata({RECORD_KEY: json.dumps(record)}),
    )
    tmp = temporary_path(path)
    pq.write_table(table, tmp)
    replace_atomically(tmp, path)


def read_video_record(path: Path) -> tuple[dict[str, Any] | None, int]:
    """(the ledger record a per-video file was written with, None for a file written without one; its frame count),
    from the file's footer alone.

    Raises:
        OSError, ValueError: the file is not a complete Parquet file, or its record is not JSON.
    """
    footer = pq.read_metadata(path)
    raw = (footer.metadata or {}).get(RECORD_KEY)
    try:
        record = json.loads(raw) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"a damaged record ({exc})") from None
    if record is not None and not isinstance(record, dict):
        raise ValueError("a damaged record (not an object)")
    return record, footer.num_rows


class MapSpool:
    """Error maps of one video as they arrive (any order), spooled to disk so memory does not grow with its length."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temporary_path(path.with_suffix(".spool"))
        self.frames: list[np.ndarray] = []
        self.shape: tuple[int, ...] | None = None

    def add(self, frames: np.ndarray, maps: np.ndarray) -> None:
        self.shape = maps.shape[1:]
        self.frames.append(np.asarray(frames, dtype=np.int64))
        with open(self.tmp, "ab") as f:
            f.write(np.ascontiguousarray(maps, dtype=np.float16).tobytes())

    def finish(self, num_frames: int) -> None:
        """Writes `path` as a .npy of (num_frames, H, W) float16, NaN for frames no clip centres on."""
        if self.shape is None:
            return
        target = temporary_path(self.path)
        out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float16, shape=(num_frames, *self.shape))
        out[:] = np.nan
        spooled = np.memmap(self.tmp, dtype=np.float16, mode="r").reshape(-1, *self.shape)
        out[np.concatenate(self.frames)] = spooled
        out.flush()
        del out, spooled
        replace_atomically(target, self.path)
        self.discard()

    def discard(self) -> None:
        Path(self.tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Rebuilding the outputs


@dataclass
class Outputs:
    """What was rebuilt: file paths, per-video summaries, metrics (None without labels) and material for plots.

    `run_files`: the same tables for the videos of this run alone, when asked for (`rebuild_outputs`'s `run_keys`).
    """

    files: dict[str, Path]
    summaries: list[dict]
    metrics: dict[str, Any] | None
    metrics_note: str
    curves: list[dict] = field(default_factory=list)
    roc: dict[str, Any] | None = None
    worst: list[dict] = field(default_factory=list)
    run_files: dict[str, Path] = field(default_factory=dict)


class _Tables:
    """frame_scores.parquet, video_summary.json and segments.parquet of one folder, written a video at a time; each
    file appears whole (atomically) at `close`."""

    def __init__(self, folder: Path, threshold: Threshold) -> None:
        self.folder, self.threshold = folder, threshold
        self.frame_tmp = temporary_path(folder / FRAME_SCORES)
        self.writer = pq.ParquetWriter(self.frame_tmp, FRAME_SCHEMA)
        self.summaries: list[dict] = []
        self.segments: list[dict] = []

    def add(self, summary: dict, video: dict[str, np.ndarray] | None = None, segments: Iterable[dict] = ()) -> None:
        if video is not None:
            self.writer.write_table(pa.table(video, schema=FRAME_SCHEMA))
        self.summaries.append(summary)
        self.segments.extend(segments)

    def close(self) -> dict[str, Path]:
        self.writer.close()
        replace_atomically(self.frame_tmp, self.folder / FRAME_SCORES)
        write_json_atomic(self.folder / SUMMARY, json_ready({"threshold": self.threshold.as_dict(),
                                                             "videos": self.summaries}))
        _write_segments(self.folder / SEGMENTS, self.segments)
        return {"frame_scores": self.folder / FRAME_SCORES, "video_summary": self.folder / SUMMARY,
                "segments": self.folder / SEGMENTS}


def rebuild_outputs(out: Path, section: LedgerSection, threshold: Threshold, settings: ScoringSettings,
                    plot_videos: int, worst_frames: int, default_fps: float | None = None,
                    run_keys: tuple[Collection[str], Path] | None = None) -> Outputs:
    """Rewrites frame_scores.parquet, video_summary.json, segments.parquet and metrics.json from the per-video files.

    Videos come in (split, video_id) order whatever order they finished in, so identical per-video files give
    byte-identical tables. `run_keys` (keys, folder): also writes the three tables of just those videos into that
    folder (`Outputs.run_files`), what a nightly run logs to MLflow instead of the whole history every night.
    """
    entries = sorted(section.videos.items())
    offline = None if threshold.calibration else _offline_scale(out, [e for _, e in entries if e.scored])
    curves, worst = [], []
    labelled: dict[str, Labelled] = {}
    tables = _Tables(out, threshold)
    run_only, run_tables = (set(run_keys[0]), _Tables(run_keys[1], threshold)) if run_keys else (set(), None)
    for key, entry in entries:
        targets = [tables, run_tables] if key in run_only else [tables]
        if not entry.scored:
            for target in targets:
                target.add({"key": key, **_base_summary(entry), "scored": False})
            continue
        table = pq.read_table(out / entry.file)
        fps = entry.fps or default_fps
        video = _video_columns(table, entry, fps, threshold, offline or threshold.scale(entry.video_id))
        segments = anomalous_segments(video["flagged"], video["error"], fps)
        segment_rows = [{"video_id": entry.video_id, "split": entry.split, **s.as_dict(), "peak_error": s.peak_value}
                        for s in segments]
        errors, labels = video["error"], video["label"]
        finite = ~np.isnan(errors)
        summary = {
            "key": key, **_base_summary(entry), "scored": True,
            "max_error": _nanmax(errors),
            "max_score_global": _nanmax(video["score_global"]),
            "peak_frame": int(np.nanargmax(errors)) if finite.any() else None,
            "frames_flagged": int(video["flagged"].sum()),
            "segments": [s.as_dict() for s in segments],
        }
        for target in targets:
            target.add(summary, video, segment_rows)
        if (labels >= 0).all():
            labelled[key] = Labelled(labels, errors, video["score_global"], video["flagged"])
        curves.append({"key": key, "errors": errors, "score_global": video["score_global"], "labels": labels,
                       "flags": video["flagged"],
                       "peak": _nanmax(errors), "anomalous": bool((labels == 1).any())})
        if len(curves) > 2 * plot_videos:  # keep memory flat over a large archive
            curves = _curves_to_plot(curves, plot_videos)
        worst = _worst(worst + _peaks(key, errors, settings.clip_len, worst_frames), worst_frames)
    files = tables.close()
    run_files = run_tables.close() if run_tables is not None else {}
    metrics, note, roc = _metrics(labelled, threshold, settings)
    (out / METRICS).unlink(missing_ok=True)  # never leave the metrics of an earlier, different selection
    if metrics is not None:
        write_json_atomic(out / METRICS, json_ready(metrics))
        files["metrics"] = out / METRICS
    return Outputs(files, tables.summaries, metrics, note, _curves_to_plot(curves, plot_videos), roc, worst,
                   run_files)


def _worst(frames: list[dict], count: int) -> list[dict]:
    return sorted(frames, key=lambda w: (-w["error"], w["key"], w["frame"]))[:count]


def _curves_to_plot(curves: list[dict], count: int) -> list[dict]:
    """Videos with labelled anomalies first, then the highest peak errors."""
    curves.sort(key=lambda c: (not c["anomalous"], -(c["peak"] if c["peak"] is not None else -np.inf), c["key"]))
    return curves[:count]


def _base_summary(entry: LedgerEntry) -> dict[str, Any]:
    return {k: getattr(entry, k) for k in SUMMARY_FIELDS}


def _nanmax(values: np.ndarray) -> float | None:
    return float(np.nanmax(values)) if np.isfinite(values).any() else None


def _offline_scale(out: Path, scored: list[LedgerEntry]) -> GlobalNormalizer:
    """score_global's scale without a calibration, unclipped: min-max over every scored frame, else the identity."""
    errors = [pq.read_table(out / entry.file, columns=["error"]).column("error").to_numpy() for entry in scored]
    values = np.concatenate(errors) if errors else np.zeros(0)
    if not np.isfinite(values).any():
        return GlobalNormalizer(0.0, 1.0, clip=False)
    return GlobalNormalizer.fit(values, clip=False)


def _video_columns(table: pa.Table, entry: LedgerEntry, fps: float | None, threshold: Threshold,
                   scale: GlobalNormalizer) -> dict[str, np.ndarray]:
    """The frame table of one video; its id and split are the ledger's (a video may have been re-keyed since its
    per-video file was written, see pipelines/score/changes.py)."""
    errors = table.column("error").to_numpy()
    scores = table.column("score").to_numpy()
    frames = table.column("frame").to_numpy()
    return {
        "video_id": np.full(len(frames), entry.video_id, dtype=object),
        "split": np.full(len(frames), entry.split, dtype=object),
        "frame": frames,
        "time_s": frames / fps if fps else np.full(len(frames), np.nan),
        "error": errors,
        "normality": 1.0 - scores,
        "score": scores,
        "score_global": scale(errors),
        "flagged": threshold.flags(entry.video_id, errors),
        "label": table.column("label").to_numpy(),
    }


def _peaks(key: str, errors: np.ndarray, spacing: int, count: int) -> list[dict]:
    """Up to `count` highest-error frames of a video, at least `spacing` frames apart (distinct moments)."""
    chosen: list[int] = []
    for frame in np.argsort(-np.nan_to_num(errors, nan=-np.inf), kind="stable"):
        if np.isnan(errors[frame]) or len(chosen) == count:
            break
        if all(abs(int(frame) - c) >= spacing for c in chosen):
            chosen.append(int(frame))
    return [{"key": key, "frame": f, "error": float(errors[f])} for f in chosen]


def _write_segments(path: Path, rows: list[dict]) -> None:
    columns = {name: [row[name] for row in rows] for name in SEGMENT_SCHEMA.names}
    tmp = temporary_path(path)
    pq.write_table(pa.table(columns, schema=SEGMENT_SCHEMA), tmp)
    replace_atomically(tmp, path)


class Labelled(NamedTuple):
    """One labelled video's frame columns, as metrics need them."""

    labels: np.ndarray
    errors: np.ndarray
    score_global: np.ndarray
    flagged: np.ndarray


def _metrics(labelled: Mapping[str, Labelled], threshold: Threshold,
             settings: ScoringSettings) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None]:
    """(metrics.json content, a note on why there are none, ROC material) over the videos whose labels are known."""
    if not labelled:
        return None, "no labelled videos: no AUC", None
    labels = {key: video.labels for key, video in labelled.items()}
    if not any((lab == 1).any() for lab in labels.values()):
        return None, f"{len(labels)} labelled videos hold no anomalous frame: no AUC", None
    errors = {key: video.errors for key, video in labelled.items()}
    global_scores = {key: video.score_global for key, video in labelled.items()}
    per_video = video_metrics(errors, labels)  # the paper's protocol: per-video min-max, then frame AUC
    global_ = frame_metrics(labels, global_scores)
    metrics = {
        **per_video.as_dict(),
        "global": global_.as_dict(),
        "threshold": {**threshold.as_dict(), **alarm_quality(labelled.values(), threshold.level)},
        "videos": len(labels),
        **{k: getattr(settings, k) for k in ("clip_len", "stride", "error_rule", "frame_rule")},
    }
    roc = {
        "labels": np.concatenate([labels[k] for k in labels]),
        "scores": {
            "per-video min-max (paper)": np.concatenate([anomaly_score(errors[k]) for k in labels]),
            "global": np.concatenate([global_scores[k] for k in labels]),
        },
    }
    return metrics, f"AUC over {len(labels)} labelled videos", roc


def alarm_quality(videos: Iterable[Labelled], level: float) -> dict[str, float]:
    """What the alarms cost and catch against the labels (scored frames only): the measured false-alarm rate on
    normal frames beside the nominal one (1 - level), recall and precision."""
    videos = list(videos)
    labels = np.concatenate([video.labels for video in videos])
    flagged = np.concatenate([video.flagged for video in videos])
    scored = ~np.isnan(np.concatenate([video.errors for video in videos]))
    anomalous, flagged = labels[scored] == 1, flagged[scored]
    true_positive = float((anomalous & flagged).sum())
    return {
        "false_alarm_rate": float(flagged[~anomalous].mean()) if (~anomalous).any() else float("nan"),
        "nominal_false_alarm_rate": 1.0 - level,
        "flag_precision": true_positive / flagged.sum() if flagged.any() else float("nan"),
        "flag_recall": true_positive / anomalous.sum() if anomalous.any() else float("nan"),
        "frames_flagged": int(flagged.sum()),
    }
