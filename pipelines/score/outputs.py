"""What the scoring job writes, and how it stays right when runs are incremental, killed or repeated.

Each finished video is written on its own, atomically (temporary file, then rename), before the ledger records it:

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
                                normalisation, and how well the threshold's flags match the labels

`score_global` puts every video on one scale without seeing the whole video (`memae.scoring.GlobalNormalizer`,
unclipped): 0 at the median error of normal training clips and 1 at the threshold (so a frame is flagged above 1).
Without a calibration it falls back to min-max over every frame scored (offline), and frames are flagged where the
per-video score is at least 0.5. Which videos are finished is the ledger's business (pipelines/score/ledger.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from pipelines.score.threshold import FALLBACK_SCORE, Threshold

FRAME_SCORES, SUMMARY = "frame_scores.parquet", "video_summary.json"
SEGMENTS, METRICS = "segments.parquet", "metrics.json"
SUMMARY_FIELDS = ("video_id", "split", "source", "num_frames", "num_clips", "fps")  # of the ledger entry

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
                       labels: np.ndarray) -> None:
    """One video's per-frame raw error, per-video score and label, written atomically."""
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
        schema=VIDEO_SCHEMA,
    )
    tmp = temporary_path(path)
    pq.write_table(table, tmp)
    replace_atomically(tmp, path)


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
    """What was rebuilt: file paths, per-video summaries, metrics (None without labels) and material for plots."""

    files: dict[str, Path]
    summaries: list[dict]
    metrics: dict[str, Any] | None
    metrics_note: str
    curves: list[dict] = field(default_factory=list)
    roc: dict[str, Any] | None = None
    worst: list[dict] = field(default_factory=list)


def rebuild_outputs(out: Path, section: LedgerSection, threshold: Threshold, settings: ScoringSettings,
                    plot_videos: int, worst_frames: int, default_fps: float | None = None) -> Outputs:
    """Rewrites frame_scores.parquet, video_summary.json, segments.parquet and metrics.json from the per-video files.

    Videos come in (split, video_id) order whatever order they finished in, so identical per-video files give
    byte-identical tables.
    """
    entries = sorted(section.videos.items())
    scale = _global_scale(out, [entry for _, entry in entries if entry.scored], threshold)
    summaries, segment_rows, curves, worst = [], [], [], []
    labelled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    frame_tmp = temporary_path(out / FRAME_SCORES)
    with pq.ParquetWriter(frame_tmp, FRAME_SCHEMA) as writer:
        for key, entry in entries:
            if not entry.scored:
                summaries.append({"key": key, **_base_summary(entry), "scored": False})
                continue
            table = pq.read_table(out / entry.file)
            fps = entry.fps or default_fps
            video = _video_columns(table, entry, fps, threshold, scale)
            writer.write_table(pa.table(video, schema=FRAME_SCHEMA))
            segments = anomalous_segments(video["flagged"], video["error"], fps)
            for s in segments:
                segment_rows.append({"video_id": entry.video_id, "split": entry.split, **s.as_dict(),
                                     "peak_error": s.peak_value})
            errors, labels = video["error"], video["label"]
            finite = ~np.isnan(errors)
            summaries.append({
                "key": key, **_base_summary(entry), "scored": True,
                "max_error": _nanmax(errors),
                "max_score_global": _nanmax(video["score_global"]),
                "peak_frame": int(np.nanargmax(errors)) if finite.any() else None,
                "frames_flagged": int(video["flagged"].sum()),
                "segments": [s.as_dict() for s in segments],
            })
            if (labels >= 0).all():
                labelled[key] = (labels, errors, video["score_global"])
            curves.append({"key": key, "errors": errors, "labels": labels, "flags": video["flagged"],
                           "peak": _nanmax(errors), "anomalous": bool((labels == 1).any())})
            if len(curves) > 2 * plot_videos:  # keep memory flat over a large archive
                curves = _curves_to_plot(curves, plot_videos)
            worst = _worst(worst + _peaks(key, errors, settings.clip_len, worst_frames), worst_frames)
    replace_atomically(frame_tmp, out / FRAME_SCORES)
    write_json_atomic(out / SUMMARY, json_ready({"threshold": threshold.as_dict(), "videos": summaries}))
    _write_segments(out / SEGMENTS, segment_rows)
    files = {"frame_scores": out / FRAME_SCORES, "video_summary": out / SUMMARY, "segments": out / SEGMENTS}
    metrics, note, roc = _metrics(labelled, threshold, settings)
    (out / METRICS).unlink(missing_ok=True)  # never leave the metrics of an earlier, different selection
    if metrics is not None:
        write_json_atomic(out / METRICS, json_ready(metrics))
        files["metrics"] = out / METRICS
    return Outputs(files, summaries, metrics, note, _curves_to_plot(curves, plot_videos), roc, worst)


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


def _global_scale(out: Path, scored: list[LedgerEntry], threshold: Threshold) -> GlobalNormalizer:
    """score_global's scale, unclipped: calibrated (median normal error to threshold), else min-max over every
    scored frame, else the identity."""
    if threshold.error is not None and threshold.low is not None:
        return GlobalNormalizer(threshold.low, threshold.error, clip=False)
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
    if threshold.error is not None:
        flagged = np.nan_to_num(errors, nan=-np.inf) > threshold.error
    else:
        flagged = np.nan_to_num(scores, nan=-np.inf) >= FALLBACK_SCORE
    return {
        "video_id": np.full(len(frames), entry.video_id, dtype=object),
        "split": np.full(len(frames), entry.split, dtype=object),
        "frame": frames,
        "time_s": frames / fps if fps else np.full(len(frames), np.nan),
        "error": errors,
        "normality": 1.0 - scores,
        "score": scores,
        "score_global": scale(errors),
        "flagged": flagged,
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


def _metrics(labelled: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], threshold: Threshold,
             settings: ScoringSettings) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None]:
    """(metrics.json content, a note on why there are none, ROC material) over the videos whose labels are known."""
    if not labelled:
        return None, "no labelled videos: no AUC", None
    labels = {key: lab for key, (lab, _, _) in labelled.items()}
    if not any((lab == 1).any() for lab in labels.values()):
        return None, f"{len(labels)} labelled videos hold no anomalous frame: no AUC", None
    errors = {key: err for key, (_, err, _) in labelled.items()}
    global_scores = {key: g for key, (_, _, g) in labelled.items()}
    per_video = video_metrics(errors, labels)  # the paper's protocol: per-video min-max, then frame AUC
    global_ = frame_metrics(labels, global_scores)
    metrics = {
        **per_video.as_dict(),
        "global": global_.as_dict(),
        "threshold": {**threshold.as_dict(), **_flag_quality(labelled, threshold)},
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


def _flag_quality(labelled: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  threshold: Threshold) -> dict[str, float]:
    """Precision and recall of the threshold's flags against the labels (scored frames only)."""
    labels = np.concatenate([lab for lab, _, _ in labelled.values()])
    errors = np.concatenate([err for _, err, _ in labelled.values()])
    scored = ~np.isnan(errors)
    if threshold.error is not None:
        flagged = errors > threshold.error
    else:
        flagged = np.concatenate([anomaly_score(err) >= FALLBACK_SCORE for _, err, _ in labelled.values()])
    labels, flagged = labels[scored] == 1, flagged[scored]
    true_positive = float((labels & flagged).sum())
    return {
        "flag_precision": true_positive / flagged.sum() if flagged.any() else float("nan"),
        "flag_recall": true_positive / labels.sum() if labels.any() else float("nan"),
        "frames_flagged": int(flagged.sum()),
    }
