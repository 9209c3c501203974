"""Ingest a video archive into per-video Parquet shards of preprocessed frames, with Ray Data.

    python jobs/ingest.py --dataset auto --root /data/UCSDped2 --out data/ped2 --size 256x256

The driver lists the archive (cheap: no video is opened, label files are checked against their size before they are
loaded; only UCSD's pixel-mask images are read, for their labels), then Ray Data streams one task per video
(`tasks.py`): decode it with --decoder (auto: the fastest installed, OpenCV where it is; Pillow for frame folders)
at the stored size, convert to gray or keep RGB, and write its shard row group by row group (`worker.py`), so a
task holds a few hundred frames whatever the video's length, and the driver holds only per-video summaries. One
whole video per task was the fastest route measured; it also makes every video its own unit of success:

- a shard is renamed into place only when complete; the manifest is rewritten atomically as videos finish;
- a rerun skips videos the manifest records as done (whose shard is there and whose source has the size and
  modification time it had when read), ingests again those whose source changed since (a recorder that went
  on writing), defers with --settle-s those modified too recently (a camera may still be writing them), and
  removes stale temporary files;
- a video that cannot be ingested (corrupt, truncated, empty, unreadable, labels of the wrong length, missing
  ground truth, a link that leads nowhere or out of --root, an id another video has) is reported with its file and
  the reason, on the console and in ingest_report.json, and every other video is still ingested. `IngestResult.ok`
  is False when anything failed;
- every other file under --root that is not part of a video (notes, hidden files, links to folders) is listed with
  the reason under "skipped_files" in the report: not a failure, but never a silent skip.

One ingest writes a folder at a time: the run holds --out's lock (`pipelines.common.lock`), and a second one waits
up to --wait-s seconds, then gives up with `FolderBusy` naming the holder. On a cluster, workers read the archive and
write the shards themselves: --root and --out must be paths every node sees (a shared filesystem).

Output folder: manifest.json (its keys: `pipelines.ingest.manifest`), ingest_report.json,
shards/<split>/<video id as a file name, `memae.files.safe_name`>.parquet (`pipelines.ingest.shards`), and the
lock file .memae.lock naming the last job that wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memae.datasets import Preprocess, VideoRecord, detect_layout, open_dataset, unlisted_files
from memae.datasets.decode import resolve_decoder
from memae.datasets.records import Issue, select_split
from memae.files import remove_temporary_files, write_json_atomic
from pipelines.common.lock import folder_lock
from pipelines.common.settle import gone_since_listed, unsettled
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.manifest import (
    MANIFEST_FILE,
    FramePreprocessing,
    Manifest,
    ManifestEntry,
    read_entry,
    software_versions,
)
from pipelines.ingest.progress import Progress
from pipelines.ingest.shards import SHARD_DIR, shard_metadata, shard_record, storage_description
from pipelines.ingest.tasks import run_tasks
from pipelines.ingest.worker import VideoTask

__all__ = ["IngestConfig", "IngestError", "IngestResult", "ingest"]

REPORT_FILE = "ingest_report.json"
MANIFEST_EVERY_S = 2.0  # how often the manifest is rewritten while videos finish
SKIPPED_SHOWN = 10  # skipped files printed on the console; the report lists them all


class IngestError(RuntimeError):
    """The ingest cannot start: bad options or root, unknown layout, or an output folder holding other frames."""


@dataclass
class IngestResult:
    """The manifest and report as written, with the outcome."""

    manifest: Manifest
    report: dict[str, Any]
    out: Path

    @property
    def ok(self) -> bool:
        """True when every listed video is ingested."""
        return not self.report["failed"]


@dataclass
class _Plan:
    """The listed videos sorted: to ingest, already done, unusable; and what listing found worth a warning."""

    todo: list[VideoTask]
    skipped: int
    failed: list[dict[str, str]]
    warnings: list[dict[str, str]]
    found_on_disk: int = 0  # complete shards the manifest had not recorded (a killed run's last videos)
    redone: list[str] = field(default_factory=list)  # shards on disk that do not match this run: why each is redone
    deferred: list[dict[str, str]] = field(default_factory=list)  # files perhaps still being written (--settle-s)


def ingest(
    cfg: IngestConfig,
    on_video: Callable[[ManifestEntry], None] | None = None,
    echo: Callable[[str], None] = print,
) -> IngestResult:
    """Ingest `cfg.root` into `cfg.out`, holding `cfg.out`'s lock throughout; see the module docstring.

    Args:
        on_video: called with each video's manifest entry as it finishes.
        echo: where console lines go.

    Raises:
        IngestError: when nothing can be ingested at all (the per-video failures are in the result instead).
        FolderBusy: another job still writes `cfg.out` after `cfg.wait_s` seconds.
        ShardWriteError: the output folder would not take a shard (the job failed, not the videos).
    """
    try:
        cfg.check()
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    root, out = cfg.root.resolve(), cfg.out.resolve()  # under `ray job submit` the working directory is a copy
    name, evidence = _layout(cfg.dataset, root)
    with folder_lock(out, cfg.wait_s):
        return _ingest(cfg, root, out, name, evidence, on_video, echo)


def _ingest(
    cfg: IngestConfig,
    root: Path,
    out: Path,
    name: str,
    evidence: str,
    on_video: Callable[[ManifestEntry], None] | None,
    echo: Callable[[str], None],
) -> IngestResult:
    """The ingest proper, once the output folder is ours."""
    prep = Preprocess(cfg.size, cfg.color)
    try:
        decoder = resolve_decoder(cfg.decoder)  # once, here: every video of a run goes through the same decoder
    except ValueError as exc:
        raise IngestError(f"--decoder: {exc}") from None
    echo(f"dataset: {name} ({evidence}); root {root}; decoder {decoder}; shard encoding {cfg.encoding}")
    try:
        every = open_dataset(name, root, "all", probe_videos=False)  # all splits: no split's files look unused
    except (FileNotFoundError, ValueError) as exc:
        raise IngestError(str(exc)) from None
    skipped = [issue for issue in unlisted_files(root, every) if not Path(issue.file).is_relative_to(out)]
    records = [r for r in every if r.split in select_split(cfg.split)]
    manifest = _open_manifest(out, name, evidence, root, prep, cfg)
    if manifest.migration_note():
        echo(f"note: {manifest.migration_note()}")
    for stale in remove_temporary_files(out / SHARD_DIR):
        echo(f"removed a half-written file from an interrupted run: {stale}")

    tasks = [VideoTask.of(record, prep, out, name, cfg.encoding, decoder) for record in records]
    plan = _plan(records, manifest, tasks, cfg.settle_s)
    for item in plan.warnings:
        echo(f"warning {item['split']}/{item['video_id']}: {item['file']}: {item['reason']}")
    for item in plan.failed:
        echo(f"FAILED  {item['split']}/{item['video_id']}: {item['file']}: {item['reason']}")
    _echo_skipped(skipped, echo)
    for item in plan.redone:
        echo(f"redoing {item}")
    for item in plan.deferred:
        echo(f"deferred {item['split']}/{item['video_id']}: {item['file']}: {item['reason']}")
    found = f" ({plan.found_on_disk} found complete on disk and recorded now)" if plan.found_on_disk else ""
    deferred = f", {len(plan.deferred)} deferred (modified in the last {cfg.settle_s:g}s)" if plan.deferred else ""
    echo(f"{len(records)} videos listed: {plan.skipped} already ingested{found}, {len(plan.todo)} to ingest, "
         f"{len(plan.failed)} unusable{deferred}")
    ray_start = _start_ray(cfg.num_cpus) if plan.todo else 0.0
    progress = Progress(len(plan.todo), echo)
    ingested, failed, gone, warnings = _ingest_videos(plan.todo, manifest, out, progress, on_video)
    failed, deferred = plan.failed + failed, plan.deferred + gone
    elapsed = progress.elapsed
    report = {
        "dataset": name,
        "root": str(root),
        "ok": not failed,
        "listed": len(records),
        "ingested": ingested,
        "skipped_already_done": plan.skipped,
        "found_on_disk": plan.found_on_disk,
        "redone": plan.redone,
        "deferred": deferred,
        "failed": failed,
        "warnings": plan.warnings + warnings,
        "skipped_files": [{"file": issue.file, "reason": issue.reason} for issue in skipped],
        "frames": progress.frames,
        "ray_start_s": round(ray_start, 3),
        "seconds": round(elapsed, 3),
        "frames_per_s": round(progress.frames / elapsed, 1) if elapsed > 0 else None,
        "finished": _now(),
    }
    write_json_atomic(out / REPORT_FILE, report)
    echo(
        f"{'ok' if not failed else 'FAILED'}: {ingested} ingested, {plan.skipped} skipped, {len(failed)} failed; "
        f"{progress.frames} frames in {elapsed:.1f}s after {ray_start:.1f}s of Ray start; see {out / MANIFEST_FILE}"
    )
    return IngestResult(manifest, report, out)


def _echo_skipped(skipped: list[Issue], echo: Callable[[str], None]) -> None:
    """The files under --root that are not part of any video: the first few, then how many more."""
    if not skipped:
        return
    echo(f"{len(skipped)} file(s) under --root are not part of any video (listed in {REPORT_FILE}):")
    for issue in skipped[:SKIPPED_SHOWN]:
        echo(f"skipped {issue.file}: {issue.reason}")
    if len(skipped) > SKIPPED_SHOWN:
        echo(f"... and {len(skipped) - SKIPPED_SHOWN} more")


def _ingest_videos(
    tasks: list[VideoTask],
    manifest: Manifest,
    out: Path,
    progress: Progress,
    on_video: Callable[[ManifestEntry], None] | None,
) -> tuple[int, list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """Runs the tasks, recording each entry in the manifest as it comes; returns (videos ingested, failures, videos
    deferred because their file went away while the run went on, notes that decoding added).

    A video whose file is gone by the time it is read (an archive's retention, a person moving it) needs no person:
    it stays pending in the manifest, and a later run ingests it if it comes back.

    The manifest is saved every MANIFEST_EVERY_S seconds and at the end, also on Ctrl-C: what finished is recorded,
    so a rerun skips it.
    """
    position = {v.key: i for i, v in enumerate(manifest.videos)}
    ingested, failed, gone, warnings = 0, [], [], []
    saved = _save(manifest, out)
    try:
        for entry in run_tasks(tasks) if tasks else ():
            listed = manifest.videos[position[entry.key]]
            if entry.status == "failed" and (reason := gone_since_listed(entry.source, entry.reason, "ingested")):
                gone.append(_problem(entry.video_id, entry.split, Issue(entry.source, reason)))
                progress.echo(f"deferred {entry.split}/{entry.video_id}: {entry.source}: {reason}")
                progress.update(dataclasses.replace(listed, status="deferred"))
                continue
            manifest.videos[position[entry.key]] = entry
            for note in entry.notes[len(listed.notes):]:  # what decoding found, beyond what listing said
                warnings.append(_problem(entry.video_id, entry.split, note))
                progress.echo(f"warning {entry.split}/{entry.video_id}: {note.file}: {note.reason}")
            if entry.status == "done":
                ingested += 1
            else:
                failed.append(_problem(entry.video_id, entry.split, Issue(entry.file, entry.reason), entry.detail))
                progress.echo(f"FAILED  {entry.split}/{entry.video_id}: {entry.file}: {entry.reason}")
            progress.update(entry)
            if time.perf_counter() - saved > MANIFEST_EVERY_S:
                saved = _save(manifest, out)
            if on_video is not None:
                on_video(entry)
    finally:
        _save(manifest, out)
    return ingested, failed, gone, warnings


def _plan(records: list[VideoRecord], manifest: Manifest, tasks: list[VideoTask], settle_s: float = 0.0) -> _Plan:
    """Sorts the listed videos into to-do, already done and unusable; lays out the manifest's entries in list order.

    A video is done when the manifest says so and its shard is there, or when its shard is there, complete and
    sealed for this very video and settings though the manifest never recorded it (the driver of a killed run hears
    of finished videos late): the manifest is brought up to date from the shard. Either way, not when its source
    changed since it was read (another size or modification time): that video is ingested again, and said so. A
    video still to ingest is recorded as pending, so that an interrupted run never leaves it marked done. A video
    whose source was modified less than `settle_s` seconds ago is deferred: its entry stays as it was.
    """
    now = time.time()
    entries = {v.key: v for v in manifest.videos}
    plan = _Plan([], 0, [], [])
    for record, task in zip(records, tasks, strict=True):
        key = (record.split, record.video_id)
        plan.warnings += [_problem(record.video_id, record.split, issue) for issue in record.notes]
        stamp = _current_stamp(record)  # once: for a frame folder it is a stat of every frame
        if record.problems:
            entries[key] = ManifestEntry.failed(record, record.problems[0])
            plan.failed += [_problem(record.video_id, record.split, issue) for issue in record.problems]
        elif _is_done(entry := entries.get(key), task.out) and not _source_changed(entry.source_stamp, stamp):
            if entry.source_stamp is None:  # recorded before sources were stamped: from now on, this one
                entries[key] = dataclasses.replace(entry, source_stamp=stamp)
            plan.skipped += 1
        elif (reason := unsettled(None if stamp is None else now - stamp[1] / 1e9, settle_s)) is not None:
            plan.deferred.append(_problem(record.video_id, record.split, Issue(str(record.source), reason)))
            entries.setdefault(key, ManifestEntry.pending(record))
        elif (found := _found_on_disk(task, plan.redone, stamp)) is not None:
            entries[key] = found
            plan.skipped += 1
            plan.found_on_disk += 1
        else:
            entries[key] = ManifestEntry.pending(record)
            plan.todo.append(task)
    listed = {(r.split, r.video_id): None for r in records}  # in listing order
    manifest.videos = [entries[key] for key in listed]
    manifest.videos += [v for k, v in entries.items() if k not in listed]  # other splits, from earlier runs
    return plan


def _is_done(entry: ManifestEntry | None, out: Path) -> bool:
    """The manifest says done and the shard it names is there, at the size recorded."""
    if entry is None or entry.status != "done":
        return False
    shard = out / entry.shard
    return shard.is_file() and shard.stat().st_size == entry.bytes


def _source_changed(recorded: tuple[int, int] | None, current: tuple[int, int] | None) -> bool:
    """Whether the source's stamp now differs from the one taken when it was ingested (None: not known)."""
    return None not in (recorded, current) and recorded != current


def _current_stamp(record: VideoRecord) -> tuple[int, int] | None:
    """The source's (bytes, mtime_ns) now; None when it cannot be read (decoding then says why)."""
    try:
        return record.stamp()
    except OSError:
        return None


def _found_on_disk(task: VideoTask, redone: list[str], stamp: tuple[int, int] | None) -> ManifestEntry | None:
    """The entry a complete shard at the task's path was sealed with, when it is this video's with this run's
    settings and its source still has `stamp`; else None, with the reason added to `redone` when a shard is there
    but will be written again."""
    path = task.out / task.shard
    if not path.is_file():
        return None
    try:
        written, record = shard_metadata(path), shard_record(path)
    except (OSError, ValueError) as exc:  # not a Parquet file any more, or a damaged footer
        redone.append(f"{path}: unreadable ({exc})")
        return None
    wanted = {"dataset": task.dataset, "video_id": task.record.video_id, "split": task.record.split,
              "source": str(task.record.source), "preprocessing": dataclasses.asdict(task.prep)}
    differs = sorted(k for k, v in wanted.items() if written.get(k) != json.loads(json.dumps(v)))
    if record is None or differs or record.get("encoding") != task.encoding:
        why = f"written with other {', '.join(differs) or 'encoding'}" if record is not None else "not sealed"
        redone.append(f"{path}: {why}")
        return None
    try:
        entry = read_entry({**record, "bytes": path.stat().st_size}, path)
    except ValueError as exc:
        redone.append(f"{path}: {exc}")
        return None
    if _source_changed(entry.source_stamp, stamp):
        redone.append(f"{path}: its source changed since it was ingested ({task.record.source})")
        return None
    return entry


def _problem(video_id: str, split: str, issue: Issue, detail: str | None = None) -> dict[str, str]:
    """A failure or warning as ingest_report.json lists it; `detail` is the decoder's own words, when any."""
    item = {"video_id": video_id, "split": split, "file": issue.file, "reason": issue.reason}
    return item | {"detail": detail} if detail else item


def _layout(dataset: str, root: Path) -> tuple[str, str]:
    if dataset != "auto":
        return dataset, "given"
    try:
        return detect_layout(root)
    except FileNotFoundError as exc:
        raise IngestError(str(exc)) from None


def _open_manifest(out: Path, name: str, evidence: str, root: Path, prep: Preprocess, cfg: IngestConfig) -> Manifest:
    """The existing manifest when resuming compatible work, else a fresh one."""
    preprocessing = FramePreprocessing.of(prep)
    splits = select_split(cfg.split)
    if not (out / MANIFEST_FILE).is_file():
        return Manifest(
            dataset=name, layout=name, layout_evidence=evidence, root=str(root), splits=list(splits),
            preprocessing=preprocessing, storage=storage_description(cfg.encoding), clip_len=cfg.clip_len,
            software=software_versions(),
        )
    try:
        manifest = Manifest.read(out)
    except ValueError as exc:
        raise IngestError(f"{exc}; choose an empty --out folder") from None
    if manifest.dataset != name or manifest.preprocessing != preprocessing:
        raise IngestError(
            f"{out / MANIFEST_FILE}: this folder holds {manifest.dataset} frames preprocessed as "
            f"{manifest.preprocessing.to_json()}; use the same options to resume, or another --out folder"
        )
    manifest.splits = sorted(set(manifest.splits) | set(splits))
    manifest.root = str(root)
    return manifest


def _start_ray(num_cpus: int | None) -> float:
    """Starts (or joins) Ray; returns the seconds it took."""
    from pipelines.common.ray_runtime import init_ray

    started = time.perf_counter()
    init_ray(num_cpus)
    return time.perf_counter() - started


def _save(manifest: Manifest, out: Path) -> float:
    """Writes the manifest, stamped; returns when, for the next periodic save."""
    manifest.updated = _now()
    manifest.write(out)
    return time.perf_counter()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
