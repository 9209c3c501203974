"""Which listed videos a run scores, which it skips as already scored, and which it defers to the next run.

A video's source is stamped with its size and latest modification time (a folder of frame images: the sum of its
files' sizes and the latest time of the folder and its files) and, with --hash, a SHA-256 of its content. The ledger
keeps the stamp a video was scored from. An incremental run then scores a video when

- the ledger has no entry for it, or its per-video file is gone;
- its source changed: another size or time (with --hash: other content, so a file merely touched is not rescored);

and defers it, reported but neither scored nor failed, while its source was modified less than --settle-s seconds
ago: a camera may still be writing it. A run without --incremental scores every listed video. With --since, a video
this model never scored whose source is older than that is left alone (counted): a new model version starts from
recent footage instead of rescoring the whole archive. An entry recorded before stamps existed takes its source's
current stamp without being rescored, and one recorded under an id of an earlier version (a file stem, where ids are
now paths) moves to the id its file has now (`renamed_videos`).

Before choosing, an incremental run brings the ledger up to date with what is on disk (`found_on_disk`): a driver
killed after a video's file was renamed into place but before the ledger recorded it leaves a complete file whose
footer holds the row the ledger was about to record. When that row is this video's, from this model with these
settings, at the file's frame count, and its source is unchanged since, the row is recorded and the video is not
scored again; any other file there (unreadable, written without a row, or with another model, settings or source)
is scored again, and reported with the reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.common.settle import unsettled
from pipelines.score.data import VideoOutcome, VideoUnit
from pipelines.score.ledger import Ledger, LedgerEntry, LedgerSection, Stamp, record_entry
from pipelines.score.outputs import read_video_record
from pipelines.score.paths import video_path

HASH_BLOCK = 1 << 20


@dataclass
class Selection:
    """What a run does with each listed video, and the stamps it saw."""

    todo: list[VideoUnit] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # keys in `todo` scored before, from a source since changed
    skipped: list[str] = field(default_factory=list)  # keys scored before from the same source
    deferred: list[VideoOutcome] = field(default_factory=list)
    older: list[str] = field(default_factory=list)  # keys never scored, from sources older than --since: left alone
    stamps: dict[str, Stamp | None] = field(default_factory=dict)  # of every video in `todo` (None: unreadable)
    restamped: dict[str, Stamp] = field(default_factory=dict)  # skipped videos whose ledger stamp is to be updated


def select_videos(units: Iterable[VideoUnit], ledger: Ledger, section: LedgerSection, incremental: bool,
                  settle_s: float, with_hash: bool, now: float | None = None,
                  not_before: float | None = None) -> Selection:
    """Sorts `units` into scored, skipped, deferred and older than `not_before` (POSIX time; see the module
    docstring)."""
    now = time.time() if now is None else now
    chosen = Selection()
    for unit in units:
        stamp = source_stamp(unit)
        entry = section.videos.get(unit.key) if incremental and ledger.is_done(section, unit.key) else None
        if entry is not None and not with_hash and not changed(entry.stamp, stamp):
            chosen.skipped.append(unit.key)
            if entry.stamp is None and stamp is not None:
                chosen.restamped[unit.key] = stamp
            continue
        if entry is None and not_before is not None and stamp is not None and stamp.mtime_ns / 1e9 < not_before:
            chosen.older.append(unit.key)
            continue
        reason = unsettled(now - stamp.mtime_ns / 1e9 if stamp else None, settle_s) if incremental else None
        if reason is not None:
            chosen.deferred.append(VideoOutcome("deferred", unit.split, unit.video_id, unit.source, reason))
            continue
        if stamp is not None and with_hash:
            stamp = replace(stamp, sha256=content_hash(unit))
        if entry is not None and not changed(entry.stamp, stamp):  # with --hash: the same content
            chosen.skipped.append(unit.key)
            if stamp != entry.stamp:
                chosen.restamped[unit.key] = stamp
            continue
        if entry is not None:
            chosen.changed.append(unit.key)
        chosen.todo.append(unit)
        chosen.stamps[unit.key] = stamp
    return chosen


@dataclass
class FoundOnDisk:
    """Per-video files the ledger had not recorded: those recorded now, and why each other one is scored again."""

    recorded: dict[str, LedgerEntry] = field(default_factory=dict)  # key -> the entry its file's footer holds
    redone: list[str] = field(default_factory=list)  # "file: reason", one per file that will be written again


def found_on_disk(units: Iterable[VideoUnit], ledger: Ledger, section: LedgerSection) -> FoundOnDisk:
    """Complete per-video files of `units` the ledger does not account for, recorded in it now when they match this
    run (see the module docstring); only the files of videos the ledger lacks, or holds from an older source, are
    read, and only their footers."""
    folder = ledger.folder(section.key)
    found = FoundOnDisk()
    for unit in units:
        path = video_path(folder, unit.split, unit.video_id, ".parquet")
        entry = section.videos.get(unit.key)
        recorded = entry is not None and ledger.is_done(section, unit.key)
        if not path.is_file() or (recorded and not changed(entry.stamp, source_stamp(unit))):
            continue
        file = str(path.relative_to(ledger.out))
        try:
            record, num_frames = read_video_record(path)
            written = record_entry(record) if record is not None else None
        except (OSError, ValueError) as exc:  # not a complete Parquet file, a damaged footer
            found.redone.append(f"{path}: unreadable ({exc})")
            continue
        if recorded and written == entry:
            continue  # the file the ledger records, from a source changed since: an ordinary rescore
        why = _mismatch(record, written, unit, section, file, num_frames)
        if why is None:
            found.recorded[unit.key] = written
        elif not recorded:  # a file the ledger never heard of, which will be written again
            found.redone.append(f"{path}: {why}")
    ledger.record_all(section, found.recorded)
    return found


def _mismatch(record: dict | None, written: LedgerEntry | None, unit: VideoUnit, section: LedgerSection, file: str,
              num_frames: int) -> str | None:
    """Why a per-video file cannot stand for `unit` scored by `section`'s model now; None when it can."""
    if record is None or written is None:
        return "written without its ledger row (by an earlier version)"
    wanted = {"model": (record.get("model_key"), section.key), "settings": (record.get("settings"), section.settings),
              "video": ((written.split, written.video_id, written.source), (unit.split, unit.video_id, unit.source)),
              "file name": (written.file, file)}
    differs = [name for name, (was, now) in wanted.items() if was != now]
    if differs:
        return f"written with other {', '.join(differs)}"
    if written.num_frames != num_frames:
        return f"holds {num_frames} frames where its row says {written.num_frames}"
    if written.stamp is None or changed(written.stamp, source_stamp(unit)):
        return "its source changed since it was scored"
    return None


def renamed_videos(units: Iterable[VideoUnit], section: LedgerSection) -> dict[str, VideoUnit]:
    """Finished videos the ledger knows under another key than the listing now gives their source: old key -> unit.

    Ids of earlier versions were file stems; a video keeps its results when its id changes but its file does not.
    """
    units = list(units)
    listed = {u.key for u in units}
    by_source = {(u.split, u.source): u for u in units}
    moves: dict[str, VideoUnit] = {}
    for key, entry in section.videos.items():
        unit = by_source.get((entry.split, entry.source))
        if key not in listed and unit is not None and unit.key not in section.videos:
            moves[key] = by_source.pop((entry.split, entry.source))
    return moves


def changed(recorded: Stamp | None, current: Stamp | None) -> bool:
    """Whether a source differs from the stamp it was scored from; with two hashes the content alone decides."""
    if recorded is None:
        return False  # recorded before stamps existed: nothing to compare with
    if current is None:
        return True  # unreadable now: score it again, and report why it fails
    if recorded.sha256 and current.sha256:
        return recorded.sha256 != current.sha256
    return (recorded.size, recorded.mtime_ns) != (current.size, current.mtime_ns)


def source_stamp(unit: VideoUnit) -> Stamp | None:
    """Size and latest modification time of a video's source; None when it cannot be read."""
    try:
        if unit.record is not None and unit.record.frame_files:
            return Stamp(*unit.record.stamp())
        info = os.stat(unit.shard or unit.source)
    except OSError:
        return None
    return Stamp(info.st_size, info.st_mtime_ns)


def content_hash(unit: VideoUnit) -> str | None:
    """SHA-256 of a video's bytes (a folder of frames: of each file's name and bytes, in order); None if unreadable."""
    digest = hashlib.sha256()
    files = unit.record.frame_files if unit.record is not None and unit.record.frame_files else ()
    try:
        for path in files or (Path(unit.shard or unit.source),):
            if files:
                digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                while block := f.read(HASH_BLOCK):
                    digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
