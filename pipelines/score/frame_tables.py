"""frame_scores.parquet as a folder of per-video files, so that a nightly run writes its own videos, not the archive.

    OUT/frame_scores.parquet/<split>/<video>.parquet    one video's frame rows (outputs.FRAME_SCHEMA)
    OUT/frame_scores.parquet/empty.parquet              only while there is no video: no rows, the columns

Any Parquet reader takes the folder as one table (`pd.read_parquet`, `pq.read_table`, Spark, DuckDB with
`frame_scores.parquet/**/*.parquet`); rows come a video at a time, in file-name order. Each file is written
atomically and carries in its footer what the rebuild needs of it besides its frames (`VideoTable`: the video's
summary, segments, peak frames, labelled-frame counts) under a fingerprint of everything the rows were computed from
(the ledger entry, the per-video file, the threshold and scale, fps). A rebuild reuses a file whose fingerprint still
matches and reads nothing else of it, so a night costs the videos it scored plus one footer per earlier video; until
this layout the whole table was rewritten every night (benchmarks/bench_nightly.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memae.files import remove_temporary_files, replace_atomically, safe_name, temporary_path
from pipelines.score.ledger import LedgerEntry
from pipelines.score.paths import contained

TABLE_KEY = b"memae.table"  # in a frame file's footer: its VideoTable
LAYOUT = 1  # bumped when what a file holds changes, so files of an older layout are rewritten
EMPTY_FILE = "empty.parquet"  # the folder's only file while it holds no video: no rows, the columns


@dataclass(frozen=True)
class VideoTable:
    """What a frame file's footer holds, so that a rebuild needs nothing else of an unchanged video."""

    fingerprint: str
    summary: dict[str, Any]  # the video's video_summary.json entry
    segments: list[dict[str, Any]]  # its segments.parquet rows
    peaks: list[dict[str, Any]]  # its highest-error moments (outputs._peaks)
    labelled: bool  # every frame carries a known label (the video counts in metrics.json)
    anomalous: bool  # some frame is labelled anomalous
    normal_frames: int  # scored frames labelled normal
    false_alarms: int  # of those, flagged


def frame_file(folder: Path, entry: LedgerEntry) -> Path:
    """Where video `entry`'s rows live in the frame folder (its current split and id, see changes.py's re-keying):
    two plain names, neither "." nor "..", so the path stays in `folder` unless a link was planted there, which
    `write_frames` checks."""
    return folder / _visible(entry.split) / f"{_visible(entry.video_id)}.parquet"


def _visible(name: str) -> str:
    """`safe_name(name)`, never starting with "." or "_": Parquet dataset readers (pyarrow, Spark) skip such files
    and folders, so a video named that way would silently be missing from the table."""
    safe = safe_name(name)
    return f"v{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}" if safe.startswith((".", "_")) else safe


def fingerprint(out: Path, entry: LedgerEntry, inputs: Mapping[str, Any]) -> str:
    """A digest of what a video's frame rows are computed from: its ledger entry, its per-video file's size and
    modification time, and `inputs` (threshold, scale, fps, peak settings: JSON-ready values)."""
    scores = (out / entry.file).stat()
    material = {"layout": LAYOUT, "entry": dataclasses.asdict(entry), "file": [scores.st_size, scores.st_mtime_ns],
                **inputs}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=repr).encode()).hexdigest()


def read_cached(path: Path, expected: str) -> VideoTable | None:
    """The footer of the frame file at `path` when it was computed from `expected`; None when there is no such file,
    it is damaged, or it was computed from something else (it is then rewritten)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(TABLE_KEY)
        table = VideoTable(**json.loads(raw)) if raw is not None else None
    except (OSError, ValueError, TypeError):
        return None
    return table if table is not None and table.fingerprint == expected else None


def write_frames(folder: Path, path: Path, frames: pa.Table, table: VideoTable) -> None:
    """Writes one video's frame rows to `path` in `folder` with `table` in the footer, atomically.

    Raises:
        UnsafePath: when `path` resolves outside `folder` (a link in the folder leading elsewhere).
    """
    tmp = temporary_path(contained(path, folder))
    meta = {TABLE_KEY: json.dumps(dataclasses.asdict(table), default=_plain)}
    pq.write_table(frames.replace_schema_metadata(meta), tmp)
    replace_atomically(tmp, path)


def read_frames(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One video's frame rows (without the footer's record)."""
    return pq.read_table(path, columns=columns).replace_schema_metadata(None)


def prepare_folder(folder: Path) -> None:
    """Makes `folder` ready to hold frame files: a single frame_scores.parquet written before this layout is removed
    (it is rebuilt from the per-video files), as are temporary files a killed run left."""
    if folder.is_file():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    remove_temporary_files(folder)


def prune(folder: Path, keep: Collection[Path], schema: pa.Schema) -> int:
    """Removes frame files of videos no longer in the ledger's section (dropped, re-keyed, another model's) and
    folders left empty; returns how many files went. A folder left without videos gets EMPTY_FILE, no rows with
    `schema`, so that readers still see the columns."""
    kept = set(keep)
    if not kept:
        kept.add(folder / EMPTY_FILE)
        if not (folder / EMPTY_FILE).is_file():
            tmp = temporary_path(folder / EMPTY_FILE)
            pq.write_table(schema.empty_table(), tmp)
            replace_atomically(tmp, folder / EMPTY_FILE)
    removed = 0
    for path in sorted(folder.rglob("*.parquet")):
        if path not in kept and path.is_file():
            path.unlink()
            removed += 1
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(sub.iterdir()):
            sub.rmdir()
    return removed


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, for json.dumps (NaN stays NaN: the footer is read back by Python alone)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def columns_of(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Some columns of one video's frame file, as numpy arrays."""
    table = read_frames(path, names)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in names}
