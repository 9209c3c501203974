"""Ingest a video archive into per-video Parquet shards of preprocessed frames, with Ray Data.

    python jobs/ingest.py --dataset auto --root /data/UCSDped2 --out data/ped2 --size 256x256

The driver lists the archive (cheap: no decoding), then Ray Data streams one task per video: decode it with decord
(or Pillow for frame folders) at the stored size, convert to gray or keep RGB, and write its shard row group by row
group, so a task holds a few hundred frames whatever the video's length, and the driver holds only per-video
summaries. One whole video per task was the fastest route measured here (see shared notes); it also makes every
video its own unit of success:

- a shard is renamed into place only when complete; the manifest is rewritten atomically as videos finish;
- a rerun skips videos the manifest records as done (and whose shard is there) and removes stale temporary files;
- a video that cannot be ingested (corrupt, truncated, empty, unreadable, labels of the wrong length, missing
  ground truth) is reported with its file and the reason, on the console and in ingest_report.json, and every
  other video is still ingested. `IngestResult.ok` is False when anything failed.

On a cluster, workers read the archive and write the shards themselves: --root and --out must be paths every node
sees (a shared filesystem). Run one ingest per output folder at a time.

Output folder: manifest.json, ingest_report.json, shards/<split>/<video_id>.parquet. The manifest holds:

    format, dataset, layout, layout_evidence, root, splits    what was read, and why that layout
    preprocessing: {size: [H, W] | null, color, channels}   what every stored frame looks like
    frame_shape: [H, W, C] (null if videos differ), clip_len, storage: {encoding, compression, ...}
    software: {memae, numpy, pyarrow, decord, pillow, ray, python}
    complete: true once every listed video is done; counts: {videos, done, failed, frames, bytes, raw_bytes, by_split}
    videos: [{video_id, split, status: done|failed|pending, source, num_frames, fps, frame_shape, shard, bytes,
              labelled, anomaly_ranges: [[start, stop), ...] 0-based, notes, and file + reason when failed}]
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from memae.datasets import Preprocess, VideoDecodeError, VideoRecord, detect_layout, iter_frames, open_dataset, probe
from memae.datasets.decode import label_length_issue
from memae.datasets.records import Issue, ranges_from_labels
from memae.files import remove_temporary_files, safe_name, write_json_atomic
from pipelines.ingest.shards import (
    COMPRESSION,
    COMPRESSION_LEVEL,
    ENCODINGS,
    MANIFEST_FILE,
    REPORT_FILE,
    SHARD_DIR,
    ShardWriter,
    frames_per_row_group,
)

FORMAT = "memae-frames/1"
MANIFEST_EVERY_S = 2.0  # how often the manifest is rewritten while videos finish


class IngestError(RuntimeError):
    """The ingest cannot start: bad root, unknown layout, or an output folder holding other preprocessing."""


@dataclass(frozen=True)
class IngestConfig:
    """What to ingest and how; `size` is (height, width), None to keep each video's own size."""

    root: Path
    out: Path
    dataset: str = "auto"
    split: str = "all"
    size: tuple[int, int] | None = (256, 256)
    color: str = "gray"
    clip_len: int = 16
    num_cpus: int | None = None
    encoding: str = "tensor"  # image column: "tensor" or "binary" (see frame_shards.py)


@dataclass
class IngestResult:
    """The manifest and report as written, with the outcome."""

    manifest: dict
    report: dict
    out: Path

    @property
    def ok(self) -> bool:
        """True when every listed video is ingested."""
        return not self.report["failed"]


@dataclass
class _Progress:
    total: int
    started: float = field(default_factory=time.perf_counter)
    finished: int = 0
    frames: int = 0
    last_print: float = 0.0


def ingest(
    cfg: IngestConfig, on_video: Callable[[dict], None] | None = None, echo: Callable[[str], None] = print
) -> IngestResult:
    """Ingest `cfg.root` into `cfg.out`; see the module docstring.

    Args:
        on_video: called with each video's manifest entry as it finishes.
        echo: where console lines go.

    Raises:
        IngestError: when nothing can be ingested at all (the per-video failures are in the result instead).
    """
    root, out = cfg.root.resolve(), cfg.out.resolve()
    if cfg.encoding not in ENCODINGS:
        raise IngestError(f"encoding must be one of {ENCODINGS}, not {cfg.encoding!r}")
    prep = Preprocess(cfg.size, cfg.color)
    name, reason = _layout(cfg.dataset, root)
    echo(f"dataset: {name} ({reason}); root {root}")
    try:
        records = open_dataset(name, root, cfg.split, probe_videos=False)
    except (FileNotFoundError, ValueError) as exc:
        raise IngestError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    manifest = _open_manifest(out, name, reason, root, prep, cfg)
    for stale in remove_temporary_files(out / SHARD_DIR):
        echo(f"removed a half-written file from an interrupted run: {stale}")

    todo, skipped, failed, warnings = _plan(records, manifest, out)
    for item in warnings:
        echo(f"warning {item['split']}/{item['video_id']}: {item['file']}: {item['reason']}")
    for item in failed:
        echo(f"FAILED  {item['split']}/{item['video_id']}: {item['file']}: {item['reason']}")
    echo(f"{len(records)} videos listed: {skipped} already ingested, {len(todo)} to ingest, {len(failed)} unusable")
    position = {(v["split"], v["video_id"]): i for i, v in enumerate(manifest["videos"])}
    ray_start = time.perf_counter()
    if todo:
        from pipelines.common.ray_runtime import init_ray

        init_ray(cfg.num_cpus)
    ray_start = time.perf_counter() - ray_start
    progress = _Progress(len(todo))
    ingested = 0
    _save_manifest(out, manifest, complete=False)
    try:
        for result in _run(todo, out, prep, name, cfg.encoding) if todo else ():
            entry = result["entry"]
            manifest["videos"][position[(entry["split"], entry["video_id"])]] = entry
            if entry["status"] == "done":
                ingested += 1
            else:
                failed.append({k: entry[k] for k in ("video_id", "split", "file", "reason")})
                echo(f"FAILED  {entry['split']}/{entry['video_id']}: {entry['file']}: {entry['reason']}")
            _report_progress(progress, entry, echo)
            if time.perf_counter() - manifest["_saved"] > MANIFEST_EVERY_S:
                _save_manifest(out, manifest, complete=False)
            if on_video is not None:
                on_video(entry)
    finally:  # also on Ctrl-C: what finished is recorded, so a rerun skips it
        complete = all(v["status"] == "done" for v in manifest["videos"])
        _save_manifest(out, manifest, complete=complete)
    elapsed = time.perf_counter() - progress.started
    report = {
        "dataset": name,
        "root": str(root),
        "ok": not failed,
        "listed": len(records),
        "ingested": ingested,
        "skipped_already_done": skipped,
        "failed": failed,
        "warnings": warnings,
        "frames": progress.frames,
        "ray_start_s": round(ray_start, 3),
        "seconds": round(elapsed, 3),
        "frames_per_s": round(progress.frames / elapsed, 1) if elapsed > 0 else None,
        "finished": _now(),
    }
    write_json_atomic(out / REPORT_FILE, report)
    echo(
        f"{'ok' if not failed else 'FAILED'}: {ingested} ingested, {skipped} skipped, {len(failed)} failed; "
        f"{progress.frames} frames in {elapsed:.1f}s after {ray_start:.1f}s of Ray start; see {out / MANIFEST_FILE}"
    )
    return IngestResult(_public(manifest), report, out)


def _plan(records: list[VideoRecord], manifest: dict, out: Path) -> tuple[list[VideoRecord], int, list, list]:
    """Sort the listed videos into to-do, already done and unusable; lay out the manifest's entries in list order.

    Returns:
        (videos to ingest, how many are already done, failures found while listing, warnings found while listing)
    """
    entries = {(v["split"], v["video_id"]): v for v in manifest["videos"]}
    failed, warnings, todo, skipped = [], [], [], 0
    for record in records:
        key = (record.split, record.video_id)
        warnings += [_issue(record, issue) for issue in record.notes]
        if record.problems:
            entries[key] = _failed_entry(record, record.problems[0])
            failed += [_issue(record, issue) for issue in record.problems]
        elif _is_done(entries.get(key), out):
            skipped += 1
        else:
            todo.append(record)
    listed = {(r.split, r.video_id) for r in records}
    manifest["videos"] = [entries.get((r.split, r.video_id)) or _pending_entry(r) for r in records]
    manifest["videos"] += [v for k, v in entries.items() if k not in listed]  # other splits, from earlier runs
    return todo, skipped, failed, warnings


def _layout(dataset: str, root: Path) -> tuple[str, str]:
    if dataset != "auto":
        return dataset, "given"
    try:
        return detect_layout(root)
    except FileNotFoundError as exc:
        raise IngestError(str(exc)) from None


def _run(todo: list[VideoRecord], out: Path, prep: Preprocess, dataset: str, encoding: str):
    """Stream the per-video tasks through Ray Data (Ray already started); yields each video's result as it finishes."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars
    # One block per video: if a decoder crashes its worker, only that video's block is lost, and it is reported.
    context.max_errored_blocks, context.enable_progress_bars = len(todo), False
    tasks = [{"task": json.dumps(_task(r, out, prep, dataset, encoding))} for r in todo]
    try:
        pipeline = ray.data.from_items(tasks, override_num_blocks=len(tasks))
        with warnings.catch_warnings():
            # Ray Data retries a task whose worker died for ever (max_retries=-1): a decoder that crashes on one
            # file would hang the ingest. `max_retries` is only reachable through the deprecated ray_remote_args.
            warnings.simplefilter("ignore", DeprecationWarning)
            pipeline = pipeline.map(_ingest_row, num_cpus=1, max_retries=1)
        seen = set()
        for row in pipeline.iter_rows():
            result = json.loads(row["result"])
            seen.add((result["split"], result["video_id"]))
            yield result
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
    for record in todo:  # blocks dropped because their worker died
        if (record.split, record.video_id) not in seen:
            issue = Issue(str(record.source), "the decoding worker crashed (see the Ray logs)")
            yield {"split": record.split, "video_id": record.video_id, "entry": _failed_entry(record, issue)}


def _task(record: VideoRecord, out: Path, prep: Preprocess, dataset: str, encoding: str) -> dict:
    return {
        "dataset": dataset,
        "encoding": encoding,
        "video_id": record.video_id,
        "split": record.split,
        "source": str(record.source),
        "frame_files": [str(p) for p in record.frame_files],
        "num_frames": record.num_frames,
        "fps": record.fps,
        "labels": None if record.labels is None else record.labels.tolist(),
        "label_source": None if record.label_source is None else str(record.label_source),
        "known_normal": record.known_normal,
        "notes": [list(n) for n in record.notes],
        "size": list(prep.size) if prep.size else None,
        "color": prep.color,
        "out": str(out),
        "shard": f"{SHARD_DIR}/{record.split}/{safe_name(record.video_id)}.parquet",
    }


def _ingest_row(row: dict) -> dict:
    """Ray Data task body: one video in, one JSON result out (never raises for bad input)."""
    task = json.loads(row["task"])
    record = VideoRecord(
        task["video_id"],
        task["split"],
        Path(task["source"]),
        tuple(Path(p) for p in task["frame_files"]),
        task["num_frames"],
        task["fps"],
        labels=None if task["labels"] is None else np.array(task["labels"], dtype=np.int8),
        label_source=None if task["label_source"] is None else Path(task["label_source"]),
        known_normal=task["known_normal"],
        notes=tuple(Issue(*n) for n in task["notes"]),
    )
    prep = Preprocess(tuple(task["size"]) if task["size"] else None, task["color"])
    entry = ingest_video(record, prep, Path(task["out"]), task["shard"], task["dataset"], task["encoding"])
    return {"result": json.dumps({"split": record.split, "video_id": record.video_id, "entry": entry})}


def ingest_video(
    record: VideoRecord, prep: Preprocess, out: Path, shard: str, dataset: str, encoding: str = "tensor"
) -> dict:
    """Decode one video and write its shard; returns its manifest entry, status "done" or "failed"."""
    started = time.perf_counter()
    record = probe(record)  # header frame count and fps; cheap, and catches label length mismatches early
    if record.problems:
        return _failed_entry(record, record.problems[-1])
    path = out / shard
    try:
        num_frames, shape = _write_shard(record, prep, path, dataset, encoding)
    except VideoDecodeError as exc:
        return _failed_entry(record, Issue(exc.path, exc.reason))
    except _LabelMismatch as exc:
        return _failed_entry(record, exc.issue)
    except Exception as exc:  # anything else about this one input: report it, never lose the other videos
        return _failed_entry(record, Issue(str(record.source), f"{type(exc).__name__}: {exc}"))
    labels = record.frame_labels(num_frames)
    return {
        **_pending_entry(record),
        "status": "done",
        "num_frames": num_frames,
        "frame_shape": list(shape),
        "shard": shard,
        "encoding": encoding,
        "bytes": path.stat().st_size,
        "labelled": bool((labels >= 0).all()),
        "anomaly_ranges": [list(r) for r in ranges_from_labels(labels)],
        "seconds": round(time.perf_counter() - started, 3),
    }


class _LabelMismatch(Exception):
    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.reason)
        self.issue = issue


def _write_shard(
    record: VideoRecord, prep: Preprocess, path: Path, dataset: str, encoding: str
) -> tuple[int, tuple[int, ...]]:
    meta = {"dataset": dataset, "video_id": record.video_id, "split": record.split, "source": str(record.source)}
    chunks = iter_frames(record, prep, chunk=64)
    first = next(chunks, None)
    if first is None:
        raise VideoDecodeError(record.source, "no frames")
    shape = first.shape[1:]
    rows = frames_per_row_group(shape)
    labels = record.labels
    with ShardWriter(path, shape, {**meta, "preprocessing": dataclasses.asdict(prep)}, encoding) as writer:
        pending = [first]
        for chunk in chunks:
            pending.append(chunk)
            if sum(len(c) for c in pending) >= rows:
                _flush(writer, pending, labels, record)
                pending = []
        if pending:
            _flush(writer, pending, labels, record)
        if labels is not None and len(labels) != writer.num_frames:
            raise _LabelMismatch(label_length_issue(record, writer.num_frames))
    return writer.num_frames, shape


def _flush(writer: ShardWriter, pending: list[np.ndarray], labels: np.ndarray | None, record: VideoRecord) -> None:
    frames = np.concatenate(pending) if len(pending) > 1 else pending[0]
    start = writer.num_frames
    if labels is None:
        chunk_labels = np.full(len(frames), 0 if record.known_normal else -1, dtype=np.int8)
    elif len(labels) < start + len(frames):
        raise _LabelMismatch(label_length_issue(record, start + len(frames)))
    else:
        chunk_labels = labels[start : start + len(frames)]
    writer.write(frames, chunk_labels)


def _pending_entry(record: VideoRecord) -> dict:
    return {
        "video_id": record.video_id,
        "split": record.split,
        "status": "pending",
        "source": str(record.source),
        "num_frames": record.num_frames,
        "fps": record.fps,
        "notes": [{"file": n.file, "reason": n.reason} for n in record.notes],
    }


def _failed_entry(record: VideoRecord, issue: Issue) -> dict:
    return {**_pending_entry(record), "status": "failed", "file": issue.file, "reason": issue.reason}


def _issue(record: VideoRecord, issue: Issue) -> dict:
    return {"video_id": record.video_id, "split": record.split, "file": issue.file, "reason": issue.reason}


def _is_done(entry: dict | None, out: Path) -> bool:
    if entry is None or entry["status"] != "done":
        return False
    shard = out / entry["shard"]
    return shard.is_file() and shard.stat().st_size == entry["bytes"]


def _open_manifest(out: Path, name: str, reason: str, root: Path, prep: Preprocess, cfg: IngestConfig) -> dict:
    """The existing manifest when resuming compatible work, else a fresh one."""
    preprocessing = {
        "size": list(prep.size) if prep.size else None,
        "color": prep.color,
        "channels": prep.channels,
        "resize": "decord while decoding (video files), Pillow bilinear (images)",
        "gray": "ITU-R 601 luma, Pillow's integer weights",
    }
    path = out / MANIFEST_FILE
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise IngestError(f"{path}: not a {FORMAT} manifest; choose an empty --out folder")
        if manifest["dataset"] != name or manifest["preprocessing"] != preprocessing:
            raise IngestError(
                f"{path}: this folder holds {manifest['dataset']} frames preprocessed as {manifest['preprocessing']}; "
                f"use the same options to resume, or another --out folder"
            )
        manifest["splits"] = sorted(set(manifest["splits"]) | set(_splits(cfg.split)))
        manifest["root"] = str(root)
        return manifest
    return {
        "format": FORMAT,
        "dataset": name,
        "layout": name,
        "layout_evidence": reason,
        "root": str(root),
        "splits": list(_splits(cfg.split)),
        "preprocessing": preprocessing,
        "storage": {
            "unit": "one Parquet file per video, one row per frame; clips are cut when reading",
            "columns": {"frame": "int32, 0-based", "label": "int8, 0/1, -1 unknown", "image": "uint8 (H, W, C)"},
            "encoding": cfg.encoding,
            "compression": f"{COMPRESSION} level {COMPRESSION_LEVEL}",
        },
        "clip_len": cfg.clip_len,
        "software": _software(),
        "videos": [],
    }


def _splits(split: str) -> tuple[str, ...]:
    return ("train", "test") if split == "all" else (split,)


def _save_manifest(out: Path, manifest: dict, complete: bool) -> None:
    videos = manifest["videos"]
    done = [v for v in videos if v["status"] == "done"]
    shapes = {tuple(v["frame_shape"]) for v in done}
    manifest.update(
        complete=complete,
        frame_shape=list(shapes.pop()) if len(shapes) == 1 else None,
        counts={
            "videos": len(videos),
            "done": len(done),
            "failed": sum(v["status"] == "failed" for v in videos),
            "frames": sum(v["num_frames"] for v in done),
            "bytes": sum(v["bytes"] for v in done),
            "raw_bytes": sum(v["num_frames"] * int(np.prod(v["frame_shape"])) for v in done),
            "by_split": {
                s: {
                    "videos": sum(v["split"] == s for v in done),
                    "frames": sum(v["num_frames"] for v in done if v["split"] == s),
                }
                for s in ("train", "test")
            },
        },
        updated=_now(),
    )
    write_json_atomic(out / MANIFEST_FILE, _public(manifest))
    manifest["_saved"] = time.perf_counter()


def _public(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if not k.startswith("_")}


def _report_progress(progress: _Progress, entry: dict, echo: Callable[[str], None]) -> None:
    progress.finished += 1
    progress.frames += entry["num_frames"] if entry["status"] == "done" else 0
    now = time.perf_counter()
    if entry["status"] == "done" and now - progress.last_print < 1.0 and progress.finished < progress.total:
        return
    progress.last_print = now
    elapsed = now - progress.started
    rate = progress.frames / elapsed if elapsed > 0 else 0.0
    eta = elapsed / progress.finished * (progress.total - progress.finished)
    echo(
        f"[{progress.finished:>{len(str(progress.total))}}/{progress.total}] {entry['status']:<6} "
        f"{entry['split']}/{entry['video_id']}  {progress.frames} frames, {rate:.0f} frames/s, eta {eta:.0f}s"
    )


def _software() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("memae", "numpy", "pyarrow", "decord", "pillow", "ray"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["platform"] = sys.platform
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
