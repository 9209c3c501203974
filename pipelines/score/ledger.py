"""Which videos each model version has scored into an output folder, from which source files, with which settings.

OUT/ledger.sqlite is the scoring job's memory between runs: per model key its scoring settings, the calibration
computed on the data (when the model carries none) and one row per finished video, with the size, modification time
and (with --hash) SHA-256 of its source as they were when it was scored. A video is recorded only after its per-video
file is in place, so an incremental run, or a rerun after a kill, skips exactly the finished videos. The per-video
file carries its own row (`entry_record`, in its Parquet footer): a driver killed between the file's rename and the
row's commit leaves a file that the next incremental run records without scoring it again
(pipelines/score/changes.py, `found_on_disk`).

Recording a video is one SQLite transaction (write-ahead log, synced), so its cost does not grow with the archive
(benchmarks/bench_ledger.py); a job killed mid-run leaves every earlier row intact. Readers may open the file while a
job writes it. An OUT/ledger.json of earlier versions (rewritten whole after every video) is migrated on first use
and left in place, no longer updated. The SQL stays inside this module.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.score.paths import model_folder

LEDGER_FILE, LEDGER_FORMAT = "ledger.sqlite", "memae-score-ledger/2"
LEGACY_FILE, LEGACY_FORMAT = "ledger.json", "memae-score-ledger/1"
SCORED_DIR = "scored"

_SCHEMA = """
CREATE TABLE info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (key TEXT PRIMARY KEY, model TEXT NOT NULL, settings TEXT NOT NULL, calibration TEXT);
CREATE TABLE videos (
    model TEXT NOT NULL, key TEXT NOT NULL, video_id TEXT NOT NULL, split TEXT NOT NULL, source TEXT NOT NULL,
    num_frames INTEGER NOT NULL, num_clips INTEGER NOT NULL, fps REAL, file TEXT, scored_at TEXT NOT NULL,
    size INTEGER, mtime_ns INTEGER, sha256 TEXT,
    PRIMARY KEY (model, key)
) WITHOUT ROWID;
"""
_ENTRY_COLUMNS = ("video_id", "split", "source", "num_frames", "num_clips", "fps", "file", "scored_at")
_STAMP_COLUMNS = ("size", "mtime_ns", "sha256")


@dataclass(frozen=True)
class Stamp:
    """A source as it was when read: total bytes, latest modification time and, when asked for, a content hash."""

    size: int
    mtime_ns: int
    sha256: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One finished video: what it held, where its scores are (None: too short for one clip), its source's stamp
    (None for a video recorded before stamps existed)."""

    video_id: str
    split: str
    source: str
    num_frames: int
    num_clips: int
    fps: float | None
    file: str | None  # relative to the output folder
    scored_at: str
    stamp: Stamp | None = None

    @property
    def scored(self) -> bool:
        return self.file is not None


@dataclass
class LedgerSection:
    """What one model version did in this folder: its settings, its calibration, the videos it finished."""

    key: str
    model: dict[str, str]
    settings: dict[str, Any]
    calibration: dict[str, Any] | None = None
    videos: dict[str, LedgerEntry] = field(default_factory=dict)


class Ledger:
    """The ledger of one output folder; open it while holding the folder's lock (pipelines/common/lock.py).

    Raises (on opening):
        ValueError: the folder holds a ledger of another kind, or a damaged one.
    """

    def __init__(self, out: Path, echo: Callable[[str], None] = print) -> None:
        self.out = out
        self.path = out / LEDGER_FILE
        # An earlier ledger.json is read (and a foreign one refused) before anything is created here.
        legacy = None if self.path.exists() else _read_legacy(out / LEGACY_FILE)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # transactions are explicit
        except sqlite3.Error as exc:
            raise ValueError(f"{self.path}: cannot be opened ({exc})") from None
        problem = ""
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a recorded video stays recorded after a power loss
            if not self._has_schema():  # new, or its creation was interrupted
                self._create(legacy if legacy is not None else _read_legacy(out / LEGACY_FILE), echo)
            found = self._db.execute("SELECT value FROM info WHERE name = 'format'").fetchone()
        except sqlite3.DatabaseError as exc:
            found, problem = None, f" ({exc})"
        if found is None or found[0] != LEDGER_FORMAT:
            self._db.close()
            raise ValueError(f"{self.path}: not a {LEDGER_FORMAT} ledger{problem}; choose an empty --out folder")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open_section(self, key: str, model: Mapping[str, str], settings: Mapping[str, Any], restart: bool = False,
                     echo: Callable[[str], None] = print, defaults: Mapping[str, Any] | None = None) -> LedgerSection:
        """The model's section, created if new; `restart` discards what it held (rows and per-video files) first.
        `defaults`: settings fields newer than some ledgers, as ledgers recorded before them must have had them.

        Raises:
            ValueError: when the section was scored with other settings (the outputs would mix two definitions).
        """
        if restart:
            count = self._db.execute("SELECT COUNT(*) FROM videos WHERE model = ?", (key,)).fetchone()[0]
            with self._transaction():
                self._db.execute("DELETE FROM videos WHERE model = ?", (key,))
                self._db.execute("DELETE FROM models WHERE key = ?", (key,))
            if count or self.folder(key).exists():
                shutil.rmtree(self.folder(key), ignore_errors=True)
                echo(f"--restart: discarded the {count} earlier results of model {key} in {self.out}")
        row = self._db.execute("SELECT model, settings, calibration FROM models WHERE key = ?", (key,)).fetchone()
        if row is None:
            section = LedgerSection(key, dict(model), dict(settings))
            with self._transaction():
                self._db.execute("INSERT INTO models VALUES (?, ?, ?, NULL)",
                                 (key, json.dumps(section.model), json.dumps(section.settings)))
            return section
        was = {**(defaults or {}), **json.loads(row[1])}
        if was != dict(settings):
            changed = {k: (was.get(k), v) for k, v in settings.items() if was.get(k) != v}
            raise ValueError(f"{self.path}: model {key} was scored here with other settings {changed} (was, now); "
                             "use the same flags, another --out, or --restart to discard its earlier results")
        calibration = json.loads(row[2]) if row[2] else None
        rows = self._db.execute(f"SELECT key, {', '.join(_ENTRY_COLUMNS + _STAMP_COLUMNS)} FROM videos WHERE model = ?",
                                (key,))
        videos = {video: _entry(values) for video, *values in rows}
        return LedgerSection(key, json.loads(row[0]), was, calibration, videos)

    def folder(self, key: str) -> Path:
        """Where the per-video files of model `key` live (refused when the key would lead outside the folder)."""
        return model_folder(self.out, SCORED_DIR, key)

    def is_done(self, section: LedgerSection, key: str) -> bool:
        """Whether `section` records video `key` as finished and its file, if it has one, is still there."""
        entry = section.videos.get(key)
        return entry is not None and (not entry.scored or (self.out / entry.file).is_file())

    def record(self, section: LedgerSection, key: str, entry: LedgerEntry) -> None:
        """Marks video `key` finished (its file, if any, must already be in place): one transaction."""
        self.record_all(section, {key: entry})

    def record_all(self, section: LedgerSection, entries: Mapping[str, LedgerEntry]) -> None:
        """Marks videos finished, {key: entry}, in one transaction (their files must already be in place)."""
        if not entries:
            return
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [(section.key, key, *_row(entry)) for key, entry in entries.items()])
        section.videos.update(entries)

    def rekey(self, section: LedgerSection, moves: Mapping[str, tuple[str, str]]) -> None:
        """Records finished videos under new keys and ids, {old key: (new key, new video id)} (one transaction)."""
        if not moves:
            return
        with self._transaction():
            self._db.executemany("UPDATE videos SET key = ?, video_id = ? WHERE model = ? AND key = ?",
                                 [(new, video_id, section.key, old) for old, (new, video_id) in moves.items()])
        for old, (new, video_id) in moves.items():
            section.videos[new] = replace(section.videos.pop(old), video_id=video_id)

    def restamp(self, section: LedgerSection, stamps: Mapping[str, Stamp]) -> None:
        """Records new stamps of finished videos whose content did not change (one transaction for all)."""
        if not stamps:
            return
        with self._transaction():
            self._db.executemany("UPDATE videos SET size = ?, mtime_ns = ?, sha256 = ? WHERE model = ? AND key = ?",
                                 [(s.size, s.mtime_ns, s.sha256, section.key, k) for k, s in stamps.items()])
        for key, stamp in stamps.items():
            section.videos[key] = replace(section.videos[key], stamp=stamp)

    def keep_calibration(self, section: LedgerSection, calibration: dict[str, Any]) -> None:
        """Stores a calibration computed on the data, so that the next run of the model need not compute it."""
        with self._transaction():
            self._db.execute("UPDATE models SET calibration = ? WHERE key = ?", (json.dumps(calibration), section.key))
        section.calibration = calibration

    def _has_schema(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'info'").fetchone() is not None

    def _create(self, sections: list[LedgerSection], echo: Callable[[str], None]) -> None:
        """The tables, and the sections of an earlier ledger.json, in one transaction (a kill leaves no half)."""
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("INSERT INTO info VALUES ('format', ?)", (LEDGER_FORMAT,))
            for section in sections:
                self._db.execute("INSERT INTO models VALUES (?, ?, ?, ?)",
                                 (section.key, json.dumps(section.model), json.dumps(section.settings),
                                  json.dumps(section.calibration) if section.calibration is not None else None))
                self._db.executemany("INSERT INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                     [(section.key, k, *_row(e)) for k, e in section.videos.items()])
        if sections:
            videos = sum(len(s.videos) for s in sections)
            echo(f"migrated {LEGACY_FILE} ({len(sections)} models, {videos} videos) to {self.path}; {LEGACY_FILE} is "
                 "kept as it was and no longer updated (delete it when you no longer need it); the next incremental "
                 "run records the size and time of their sources")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def entry_record(section: LedgerSection, entry: LedgerEntry) -> dict[str, Any]:
    """What the ledger records for a video, as plain JSON: the model key, its scoring settings and the entry (with
    its source's stamp). Written into the video's per-video file, so that the file tells how it was made."""
    return {"model_key": section.key, "settings": section.settings, "entry": asdict(entry)}


def record_entry(record: Mapping[str, Any]) -> LedgerEntry:
    """The entry of an `entry_record` read back.

    Raises:
        ValueError: when the record is not one (a damaged or foreign footer).
    """
    try:
        raw = dict(record["entry"])
        stamp = raw.pop("stamp", None)
        return LedgerEntry(**raw, stamp=None if stamp is None else Stamp(**stamp))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a ledger entry ({type(exc).__name__}: {exc})") from None


def _row(entry: LedgerEntry) -> tuple:
    """The values of an entry's columns, in table order (after the model and video keys)."""
    stamp = (entry.stamp.size, entry.stamp.mtime_ns, entry.stamp.sha256) if entry.stamp else (None, None, None)
    return (*(getattr(entry, c) for c in _ENTRY_COLUMNS), *stamp)


def _entry(values: Iterable[Any]) -> LedgerEntry:
    *base, size, mtime_ns, sha256 = values
    return LedgerEntry(*base, stamp=None if size is None else Stamp(size, mtime_ns, sha256))


def _read_legacy(path: Path) -> list[LedgerSection]:
    """The sections of an earlier ledger.json (none when there is no such file)."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: an unreadable ledger ({exc}); choose an empty --out folder") from None
    if not isinstance(data, dict) or data.get("format") != LEGACY_FORMAT:
        raise ValueError(f"{path}: not a {LEGACY_FORMAT} ledger; choose an empty --out folder")
    try:
        return [LedgerSection(key, dict(raw["model"]), dict(raw["settings"]), raw.get("calibration"),
                              {video: LedgerEntry(**entry) for video, entry in raw["videos"].items()})
                for key, raw in data["models"].items()]
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: a damaged ledger ({type(exc).__name__}: {exc}); choose an empty --out folder") \
            from None
