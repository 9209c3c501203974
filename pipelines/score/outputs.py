"""What the scoring job writes, and how it stays right when runs are incremental, killed or repeated.

Each finished video is written on its own, atomically (temporary file, then rename), before the ledger records it:

    OUT/scored/<model key>/<split>/<video>.parquet     video_id, split, frame, error, score, label
    OUT/scored/<model key>/<split>/<video>.maps.npy    with --save-maps: float16 (frames, H, W), NaN where unscored
    OUT/ledger.json                                    per model key: its scoring settings, calibration, videos done

The files a person reads are then rebuilt from the per-video files of the model just run, so a rerun, an
incremental append or a restart after a kill can never duplicate a frame:

    OUT/frame_scores.parquet    one row per frame: video_id, split, frame, time_s, error (raw), normality (the paper's
                                per-video p), score (1 - p: higher is more anomalous), score_global, flagged, label
    OUT/video_summary.json      per video: frames, peak error and score_global, anomalous segments (frames, seconds)
    OUT/segments.parquet        the segments, one row each
    OUT/metrics.json            with labels: frame AUC micro (the paper's), macro, EER, AP for per-video and global
                                normalisation, and how well the threshold's flags match the labels

`score_global` puts every video on one scale without seeing the whole video: 0 at the median error of normal
training clips and 1 at the threshold (so a frame is flagged above 1). Without a calibration it falls back to
min-max over every frame scored (offline), and frames are flagged where the per-video score is at least 0.5.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memae.evaluation import video_metrics
from memae.files import json_ready, replace_atomically, safe_name, temporary_path, write_json_atomic
from memae.metrics import frame_metrics
from memae.scoring import anomaly_score
from memae.segments import anomalous_segments

LEDGER_FILE, LEDGER_FORMAT = "ledger.json", "memae-score-ledger/1"
SCORED_DIR = "scored"
FRAME_SCORES, SUMMARY = "frame_scores.parquet", "video_summary.json"
SEGMENTS, METRICS = "segments.parquet", "metrics.json"
FALLBACK_SCORE = 0.5  # per-video score above which a frame is flagged when no calibration exists

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


def video_path(folder: Path, split: str, video_id: str, suffix: str) -> Path:
    """Where one video's scores (".parquet") or error maps (".maps.npy") live in a model's folder."""
    return folder / split / f"{safe_name(video_id)}{suffix}"


# ---------------------------------------------------------------------------------------------------------------
# The ledger


class Ledger:
    """Which videos each model version has scored into this folder, and with which settings."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / LEDGER_FILE
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())
            if self.data.get("format") != LEDGER_FORMAT:
                raise ValueError(f"{self.path}: not a {LEDGER_FORMAT} ledger; choose an empty --out folder")
        else:
            self.data = {"format": LEDGER_FORMAT, "models": {}}

    def open_section(self, key: str, model: Mapping[str, str], settings: Mapping[str, Any], fresh: bool) -> dict:
        """The model's section; `fresh` starts it over (its earlier per-video files are deleted).

        Raises:
            ValueError: when resuming a section scored with other settings (the outputs would mix two definitions).
        """
        section = self.data["models"].get(key)
        if section is not None and not fresh and section["settings"] != dict(settings):
            was = section["settings"]
            changed = {k: (was.get(k), v) for k, v in settings.items() if was.get(k) != v}
            raise ValueError(f"{self.path}: model {key} was scored here with other settings {changed} (was, now); "
                             "use the same flags, another --out, or run without --incremental to start over")
        if section is None or fresh:
            shutil.rmtree(self.out / SCORED_DIR / key, ignore_errors=True)
            section = {"model": dict(model), "settings": dict(settings), "calibration": None, "videos": {}}
            self.data["models"][key] = section
            self.save()
        return section

    def folder(self, key: str) -> Path:
        return self.out / SCORED_DIR / key

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


def done_videos(section: Mapping[str, Any], out: Path) -> set[str]:
    """Keys of videos the section records as finished whose files are still there."""
    videos = section["videos"].items()
    return {key for key, entry in videos if entry.get("file") is None or (out / entry["file"]).is_file()}


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


@dataclass(frozen=True)
class Threshold:
    """How frames are flagged and put on the global scale."""

    error: float | None  # flag frames whose raw error exceeds this; None: per-video score >= FALLBACK_SCORE
    low: float | None  # raw error that maps to score_global 0 (median normal clip error); None: min-max
    level: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.error, "low": self.low, "level": self.level, "source": self.source}


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


def rebuild_outputs(out: Path, section: Mapping[str, Any], threshold: Threshold, settings: Mapping[str, Any],
                    plot_videos: int, worst_frames: int, default_fps: float | None = None) -> Outputs:
    """Rewrites frame_scores.parquet, video_summary.json, segments.parquet and metrics.json from the per-video files.

    Videos come in (split, video_id) order whatever order they finished in, so identical per-video files give
    byte-identical tables.
    """
    entries = sorted(section["videos"].items())
    scored = [(key, entry) for key, entry in entries if entry.get("file")]
    bounds = _global_bounds(out, scored, threshold)
    summaries, segment_rows, curves, worst = [], [], [], []
    labelled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    frame_tmp = temporary_path(out / FRAME_SCORES)
    with pq.ParquetWriter(frame_tmp, FRAME_SCHEMA) as writer:
        for key, entry in entries:
            if not entry.get("file"):
                summaries.append({"key": key, **_base_summary(entry), "scored": False})
                continue
            table = pq.read_table(out / entry["file"])
            video = _video_columns(table, entry, threshold, bounds, default_fps)
            writer.write_table(pa.table(video, schema=FRAME_SCHEMA))
            fps = entry.get("fps") or default_fps
            segments = anomalous_segments(video["flagged"], video["error"], fps)
            for s in segments:
                segment_rows.append({"video_id": entry["video_id"], "split": entry["split"], **s.as_dict(),
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
            worst = _worst(worst + _peaks(key, errors, int(settings["clip_len"]), worst_frames), worst_frames)
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


def _base_summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("video_id", "split", "source", "num_frames", "num_clips", "fps")}


def _nanmax(values: np.ndarray) -> float | None:
    return float(np.nanmax(values)) if np.isfinite(values).any() else None


def _global_bounds(out: Path, scored: list, threshold: Threshold) -> tuple[float, float]:
    """(error at 0, error at 1) of score_global: calibrated, or min-max over every scored frame."""
    if threshold.error is not None and threshold.low is not None:
        return threshold.low, threshold.error
    errors = [pq.read_table(out / entry["file"], columns=["error"]).column("error").to_numpy() for _, entry in scored]
    values = np.concatenate(errors) if errors else np.zeros(0)
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def _video_columns(table: pa.Table, entry: Mapping[str, Any], threshold: Threshold, bounds: tuple[float, float],
                   default_fps: float | None) -> dict[str, np.ndarray]:
    errors = table.column("error").to_numpy()
    scores = table.column("score").to_numpy()
    low, high = bounds
    fps = entry.get("fps") or default_fps
    frames = table.column("frame").to_numpy()
    if threshold.error is not None:
        flagged = np.nan_to_num(errors, nan=-np.inf) > threshold.error
    else:
        flagged = np.nan_to_num(scores, nan=-np.inf) >= FALLBACK_SCORE
    return {
        "video_id": table.column("video_id").to_numpy(zero_copy_only=False),
        "split": table.column("split").to_numpy(zero_copy_only=False),
        "frame": frames,
        "time_s": frames / fps if fps else np.full(len(frames), np.nan),
        "error": errors,
        "normality": 1.0 - scores,
        "score": scores,
        "score_global": (errors - low) / (high - low) if high > low else np.where(np.isnan(errors), np.nan, 0.0),
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
             settings: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None]:
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
        **{k: settings[k] for k in ("clip_len", "stride", "error_rule", "frame_rule")},
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


def plot_outputs(out: Path, outputs: Outputs, threshold: Threshold,
                 worst: list[tuple[dict, np.ndarray, np.ndarray]]) -> list[Path]:
    """Score curves, ROC and the worst-frames grid as PNGs in OUT/plots; returns the paths written.

    Args:
        worst: (entry of `outputs.worst`, frame (H, W, C) uint8, error map (H, W)) for each frame to show.
    """
    from pipelines.score.plots import roc_curves, score_curves, worst_frames_grid

    folder = out / "plots"
    shutil.rmtree(folder, ignore_errors=True)
    paths = []
    if outputs.curves:
        curves = [{"title": c["key"], "values": c["errors"], "labels": c["labels"], "flags": c["flags"]}
                  for c in outputs.curves]
        label = f"threshold ({threshold.source})" if threshold.error is not None else None
        paths.append(score_curves(curves, folder / "score_curves.png", threshold.error, label, "frame error"))
    if outputs.roc is not None:
        paths.append(roc_curves(outputs.roc["labels"], outputs.roc["scores"], folder / "roc.png"))
    if worst:
        captions = [f"{w['key']} #{w['frame']}\nerror {w['error']:.4g}" for w, _, _ in worst]
        frames = np.stack([image for _, image, _ in worst])
        maps = np.stack([error_map for _, _, error_map in worst])
        paths.append(worst_frames_grid(frames, maps, captions, folder / "worst_frames.png"))
    return paths
