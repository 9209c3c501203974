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

    OUT/frame_scores.parquet/   a folder read as one table (a file per video, pipelines/score/frame_tables.py; a
                                night writes only its own videos'): one row per frame: video_id, split, frame, time_s,
                                error (raw), normality (the paper's per-video p), score (1 - p: higher is more
                                anomalous), score_global, flagged, label
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

import contextlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memae.datasets.cameras import camera_of
from memae.evaluation import video_metrics
from memae.files import json_ready, replace_atomically, set_aside, temporary_path, write_json_atomic
from memae.metrics import frame_metrics
from memae.scoring import GlobalNormalizer, anomaly_score
from memae.segments import anomalous_segments
from pipelines.registry.source import ScoringSettings
from pipelines.score.frame_tables import (
    VideoTable,
    columns_of,
    fingerprint,
    frame_file,
    prepare_folder,
    prune,
    read_cached,
    read_frames,
    write_frames,
)
from pipelines.score.ledger import LedgerEntry, LedgerSection
from pipelines.score.threshold import Threshold

FRAME_SCORES, SUMMARY = "frame_scores.parquet", "video_summary.json"
SEGMENTS, METRICS = "segments.parquet", "metrics.json"
SUMMARY_FIELDS = ("video_id", "split", "source", "num_frames", "num_clips", "fps")  # of the ledger entry
DAMAGED_SUFFIX = ".damaged"  # a damaged per-video file is renamed to this, out of the `*.parquet` a run looks for
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
    `frame_files`: each scored video's file in the frame_scores.parquet folder; `normal_frames` and `false_alarms`:
    scored frames labelled normal, and those flagged, over every video; `rewritten`: frame files this rebuild wrote;
    `lost`: videos the ledger records as scored whose per-video file is gone (deleted by hand) or damaged, left out;
    `set_aside`: {damaged per-video file: where it was moved}, so that a later run scores its video again.
    """

    files: dict[str, Path]
    summaries: list[dict]
    metrics: dict[str, Any] | None
    metrics_note: str
    curves: list[dict] = field(default_factory=list)
    roc: dict[str, Any] | None = None
    worst: list[dict] = field(default_factory=list)
    run_files: dict[str, Path] = field(default_factory=dict)
    frame_files: dict[str, Path] = field(default_factory=dict)
    normal_frames: int = 0
    false_alarms: int = 0
    rewritten: int = 0
    lost: list[str] = field(default_factory=list)
    set_aside: dict[str, str] = field(default_factory=dict)


class _Tables:
    """video_summary.json and segments.parquet of one folder, and with `frame_file` its frame_scores.parquet as one
    file (the tables of one run, for MLflow), written a video at a time; each file appears whole at `close`."""

    def __init__(self, folder: Path, threshold: Threshold, frame_file: bool = False) -> None:
        self.folder, self.threshold = folder, threshold
        self.frame_tmp = temporary_path(folder / FRAME_SCORES) if frame_file else None
        self.writer = pq.ParquetWriter(self.frame_tmp, FRAME_SCHEMA) if self.frame_tmp else None
        self.summaries: list[dict] = []
        self.segments: list[dict] = []

    def add(self, summary: dict, segments: Iterable[dict] = (), frames: pa.Table | None = None) -> None:
        if frames is not None and self.writer is not None:
            self.writer.write_table(frames)
        self.summaries.append(summary)
        self.segments.extend(segments)

    def close(self) -> dict[str, Path]:
        files = {}
        if self.writer is not None:
            self.writer.close()
            replace_atomically(self.frame_tmp, self.folder / FRAME_SCORES)
            files["frame_scores"] = self.folder / FRAME_SCORES
        write_json_atomic(self.folder / SUMMARY, json_ready({"threshold": self.threshold.as_dict(),
                                                             "videos": self.summaries}))
        _write_segments(self.folder / SEGMENTS, self.segments)
        return {**files, "video_summary": self.folder / SUMMARY, "segments": self.folder / SEGMENTS}


def rebuild_outputs(out: Path, section: LedgerSection, threshold: Threshold, settings: ScoringSettings,
                    plot_videos: int, worst_frames: int, default_fps: float | None = None,
                    run_keys: tuple[Collection[str], Path] | None = None) -> Outputs:
    """Brings the frame_scores.parquet folder up to date with the per-video files and rewrites video_summary.json,
    segments.parquet and metrics.json.

    A video's frame file is written only when missing or computed from something else (pipelines/score/
    frame_tables.py): a nightly run writes its own videos and reads one footer of each earlier one. Without a
    calibration score_global is min-max over every scored frame, which moves as the archive grows, so every file is
    read and rewritten. Videos come in (split, video_id) order whatever order they finished in. `run_keys` (keys,
    folder): also writes the three tables of just those videos into that folder, frame_scores.parquet as one file
    (`Outputs.run_files`), what a nightly run logs to MLflow instead of the whole history every night.
    """
    entries, lost = [], []  # the videos whose per-video file (if they have one) is there; those whose file is gone
    for key, entry in sorted(section.videos.items()):
        if entry.scored and not (out / entry.file).is_file():
            lost.append(key)
        else:
            entries.append((key, entry))
    offline = None if threshold.calibration else _offline_scale(out, [e for _, e in entries if e.scored])
    folder = out / FRAME_SCORES
    prepare_folder(folder)
    tables = _Tables(out, threshold)
    run_only, run_tables = (set(run_keys[0]), _Tables(run_keys[1], threshold, True)) if run_keys else (set(), None)
    videos: dict[str, VideoTable] = {}
    built = Outputs({}, [], None, "", lost=lost)
    for key, entry in entries:
        targets = [tables, run_tables] if key in run_only else [tables]
        if not entry.scored:
            for target in targets:
                target.add({"key": key, **_base_summary(entry), "scored": False})
            continue
        path = frame_file(folder, entry)
        try:
            video, written = _video_table(out, path, key, entry, threshold, offline, settings, worst_frames,
                                          default_fps)
        except _Unreadable:  # damaged on disk since it was written whole: lost like a deleted file, scored again
            built.lost.append(key)
            with contextlib.suppress(OSError):  # a file that cannot even be renamed stays reported as lost
                built.set_aside[str(out / entry.file)] = str(set_aside(out / entry.file, DAMAGED_SUFFIX))
            continue
        videos[key], built.frame_files[key] = video, path
        built.rewritten += written
        tables.add(video.summary, video.segments)
        if run_tables is not None and key in run_only:
            run_tables.add(video.summary, video.segments, read_frames(path))
        built.worst = _worst(built.worst + video.peaks, worst_frames)
        built.normal_frames += video.normal_frames
        built.false_alarms += video.false_alarms
    prune(folder, built.frame_files.values(), FRAME_SCHEMA)
    built.files = {"frame_scores": folder, **tables.close()}
    built.run_files = run_tables.close() if run_tables is not None else {}
    built.summaries = tables.summaries
    labelled = {key: Labelled(**columns_of(built.frame_files[key], list(Labelled._fields)))
                for key, video in videos.items() if video.labelled}
    built.metrics, built.metrics_note, built.roc = _metrics(labelled, threshold, settings)
    (out / METRICS).unlink(missing_ok=True)  # never leave the metrics of an earlier, different selection
    if built.metrics is not None:
        write_json_atomic(out / METRICS, json_ready(built.metrics))
        built.files["metrics"] = out / METRICS
    built.curves = [_curve(key, videos[key], built.frame_files[key]) for key in _plotted(videos, plot_videos)]
    return built


def _video_table(out: Path, path: Path, key: str, entry: LedgerEntry, threshold: Threshold,
                 offline: GlobalNormalizer | None, settings: ScoringSettings, worst_frames: int,
                 default_fps: float | None) -> tuple[VideoTable, bool]:
    """Video `key`'s frame file at `path`, reused when computed from the same inputs, else (re)written from its
    per-video file; and whether it was written."""
    fps = entry.fps or default_fps
    scale = offline or threshold.scale(entry.video_id)
    camera = camera_of(entry.video_id)
    expected = fingerprint(out, entry, {
        "fps": fps, "scale": asdict(scale), "calibrated": bool(threshold.calibration), "alarm": threshold.alarm(camera),
        "release": threshold.release(camera), "min_event_frames": threshold.min_event_frames,
        "peaks": [settings.clip_len, worst_frames],
    })
    cached = read_cached(path, expected)
    if cached is not None:
        return cached, False
    video = _video_columns(_read_scores(out / entry.file), entry, fps, threshold, scale)
    segments = anomalous_segments(video["flagged"], video["error"], fps)
    errors, labels, flagged = video["error"], video["label"], video["flagged"]
    finite = ~np.isnan(errors)
    normal = (labels == 0) & finite
    table = VideoTable(
        fingerprint=expected,
        summary={
            "key": key, **_base_summary(entry), "scored": True,
            "max_error": _nanmax(errors),
            "max_score_global": _nanmax(video["score_global"]),
            "peak_frame": int(np.nanargmax(errors)) if finite.any() else None,
            "frames_flagged": int(flagged.sum()),
            "segments": [s.as_dict() for s in segments],
        },
        segments=[{"video_id": entry.video_id, "split": entry.split, **s.as_dict(), "peak_error": s.peak_value}
                  for s in segments],
        peaks=_peaks(key, errors, settings.clip_len, worst_frames),
        labelled=bool((labels >= 0).all()),
        anomalous=bool((labels == 1).any()),
        normal_frames=int(normal.sum()),
        false_alarms=int((normal & flagged).sum()),
    )
    write_frames(out / FRAME_SCORES, path, pa.table(video, schema=FRAME_SCHEMA), table)
    return table, True


def _plotted(videos: Mapping[str, VideoTable], count: int) -> list[str]:
    """The videos whose curves are plotted: those with labelled anomalies first, then the highest peak errors."""
    def order(key: str) -> tuple[bool, float, str]:
        peak = videos[key].summary["max_error"]
        return not videos[key].anomalous, -(peak if peak is not None else -np.inf), key
    return sorted(videos, key=order)[:count]


def _curve(key: str, video: VideoTable, path: Path) -> dict[str, Any]:
    """A plotted video's curve material, read from its frame file."""
    columns = columns_of(path, ["error", "score_global", "label", "flagged"])
    return {"key": key, "errors": columns["error"], "score_global": columns["score_global"],
            "labels": columns["label"], "flags": columns["flagged"], "peak": video.summary["max_error"],
            "anomalous": video.anomalous}


def _worst(frames: list[dict], count: int) -> list[dict]:
    return sorted(frames, key=lambda w: (-w["error"], w["key"], w["frame"]))[:count]


def _base_summary(entry: LedgerEntry) -> dict[str, Any]:
    return {k: getattr(entry, k) for k in SUMMARY_FIELDS}


def _nanmax(values: np.ndarray) -> float | None:
    return float(np.nanmax(values)) if np.isfinite(values).any() else None


class _Unreadable(Exception):
    """A per-video file that is there but cannot be read."""


def _read_scores(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A per-video file's columns.

    Raises:
        _Unreadable: a damaged file (OSError or Arrow's error), so that one video's loss never fails the night.
    """
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise _Unreadable(f"{path}: {exc}") from exc


def _offline_scale(out: Path, scored: list[LedgerEntry]) -> GlobalNormalizer:
    """score_global's scale without a calibration, unclipped: min-max over every readable scored frame, else the
    identity."""
    errors = []
    for entry in scored:
        with contextlib.suppress(_Unreadable):  # left out of the tables as lost
            errors.append(_read_scores(out / entry.file, ["error"]).column("error").to_numpy())
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
    """One labelled video's frame columns, as metrics need them (named as in frame_scores.parquet)."""

    label: np.ndarray
    error: np.ndarray
    score_global: np.ndarray
    flagged: np.ndarray


def _metrics(labelled: Mapping[str, Labelled], threshold: Threshold,
             settings: ScoringSettings) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None]:
    """(metrics.json content, a note on why there are none, ROC material) over the videos whose labels are known."""
    if not labelled:
        return None, "no labelled videos: no AUC", None
    labels = {key: video.label for key, video in labelled.items()}
    if not any((lab == 1).any() for lab in labels.values()):
        return None, f"{len(labels)} labelled videos hold no anomalous frame: no AUC", None
    errors = {key: video.error for key, video in labelled.items()}
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
    labels = np.concatenate([video.label for video in videos])
    flagged = np.concatenate([video.flagged for video in videos])
    scored = ~np.isnan(np.concatenate([video.error for video in videos]))
    anomalous, flagged = labels[scored] == 1, flagged[scored]
    true_positive = float((anomalous & flagged).sum())
    return {
        "false_alarm_rate": float(flagged[~anomalous].mean()) if (~anomalous).any() else float("nan"),
        "nominal_false_alarm_rate": 1.0 - level,
        "flag_precision": true_positive / flagged.sum() if flagged.any() else float("nan"),
        "flag_recall": true_positive / anomalous.sum() if anomalous.any() else float("nan"),
        "frames_flagged": int(flagged.sum()),
    }
