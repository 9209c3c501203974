"""The manifest of an ingested folder: what was read, how every frame was stored, and one entry per video.

`Manifest.read` is the one reader (ingest resuming, clip readers, training, scoring, the model registry): it checks
every field it uses and names the file and the field it refuses, so a damaged or hand-edited manifest fails where
it is read rather than deep inside a Ray task. `Manifest.write` replaces the file atomically. The JSON, which users
script against, holds these keys in this order:

    format: "memae-frames/1", dataset, layout, layout_evidence, root, splits    what was read, and why that layout
    preprocessing: {size: [H, W] | null, color, channels, resize, gray}      what every stored frame looks like
    storage: {unit, columns, encoding, compression}, clip_len
    software: {python, memae, numpy, pyarrow, decord, pillow, ray, platform}
    videos: [{video_id, split, status: done|failed|pending, source, num_frames, fps, notes: [{file, reason}],
              when done: frame_shape, shard, encoding, bytes, labelled, anomaly_ranges: [[start, stop), ...] 0-based,
              seconds, source_stamp: [bytes, modification time in ns] of the source as it was read (a source
              that changed since is ingested again); when failed: file, reason, and detail (the decoder's own words)
              when there are any}]
    complete: true once every listed video is done; frame_shape: [H, W, C] (null if videos differ)
    counts: {videos, done, failed, frames, bytes, raw_bytes, by_split: {train|test: {videos, frames}}}, updated

`complete`, `frame_shape` and `counts` are derived from the videos whenever the manifest is written. Keys this
version does not know are ignored when reading. `write` refuses what `read` would refuse (a split or shard path that
leaves the folder), so that nothing is ever written or recorded outside it.

Ids in the `videos` layout used to be file stems (`0001`, or `cam1__0001` when stems repeated); they are now the path
under the root with its suffix (`cam1/0001.mp4`). `read` renames the entries of such a manifest from their `source`,
keeping their shards (a shard's path is stored in its entry), and lists what it renamed in `Manifest.migrated`.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from memae.datasets import Preprocess
from memae.datasets.records import SPLITS, Issue, VideoRecord
from memae.datasets.videos import video_id as videos_layout_id
from memae.files import safe_name, write_json_atomic

FORMAT = "memae-frames/1"
MANIFEST_FILE = "manifest.json"
STATUSES = ("pending", "done", "failed")
# Each shard's footer names the decoder that made it ("decoder"); these say what each one does.
RESIZE = ("decord: FFmpeg's swscale while decoding; opencv, torchcodec: memae.datasets.decoders.shrink (box-filter "
          "halving, then bilinear); frame images: Pillow bilinear")
GRAY = ("ITU-R 601 luma: decord, torchcodec and images by Pillow's integer weights; opencv the video's own luma plane "
        "mapped to full range")


class ManifestError(ValueError):
    """A manifest that cannot be used as it is; the message names the file and the field."""


@dataclass(frozen=True)
class FramePreprocessing:
    """What every stored frame looks like; `size` is (height, width), None when each video kept its own."""

    size: tuple[int, int] | None
    color: str
    channels: int
    resize: str = RESIZE
    gray: str = GRAY

    @classmethod
    def of(cls, prep: Preprocess) -> FramePreprocessing:
        return cls(tuple(prep.size) if prep.size else None, prep.color, prep.channels)

    def to_json(self) -> dict[str, Any]:
        size = list(self.size) if self.size else None
        return {"size": size, "color": self.color, "channels": self.channels, "resize": self.resize, "gray": self.gray}


@dataclass(frozen=True)
class ManifestEntry:
    """One video: listed (pending), ingested (done: its shard and what it holds) or unusable (failed: file, reason)."""

    video_id: str
    split: str
    status: str
    source: str
    num_frames: int | None = None
    fps: float | None = None
    notes: tuple[Issue, ...] = ()
    frame_shape: tuple[int, int, int] | None = None
    shard: str | None = None  # relative to the manifest's folder
    encoding: str | None = None
    bytes: int | None = None
    labelled: bool | None = None
    anomaly_ranges: tuple[tuple[int, int], ...] | None = None
    seconds: float | None = None
    file: str | None = None
    reason: str | None = None
    detail: str | None = None  # the decoder's own words behind `reason`, when there are any
    source_stamp: tuple[int, int] | None = None  # done: (bytes, modification time in ns) of the source as it was read

    @classmethod
    def pending(cls, record: VideoRecord) -> ManifestEntry:
        return cls(record.video_id, record.split, "pending", str(record.source), record.num_frames, record.fps,
                   tuple(record.notes))

    @classmethod
    def failed(cls, record: VideoRecord, issue: Issue, detail: str | None = None,
               notes: tuple[Issue, ...] = ()) -> ManifestEntry:
        return cls(record.video_id, record.split, "failed", str(record.source), record.num_frames, record.fps,
                   (*record.notes, *notes), file=issue.file, reason=issue.reason, detail=detail or None)

    @property
    def key(self) -> tuple[str, str]:
        """(split, video_id): ids repeat across splits in some archives."""
        return self.split, self.video_id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "video_id": self.video_id, "split": self.split, "status": self.status, "source": self.source,
            "num_frames": self.num_frames, "fps": self.fps,
            "notes": [{"file": n.file, "reason": n.reason} for n in self.notes],
        }
        optional = {
            "frame_shape": list(self.frame_shape) if self.frame_shape else None, "shard": self.shard,
            "encoding": self.encoding, "bytes": self.bytes, "labelled": self.labelled,
            "anomaly_ranges": None if self.anomaly_ranges is None else [list(r) for r in self.anomaly_ranges],
            "seconds": self.seconds, "file": self.file, "reason": self.reason, "detail": self.detail,
            "source_stamp": list(self.source_stamp) if self.source_stamp else None,
        }
        return data | {k: v for k, v in optional.items() if v is not None}


@dataclass
class Manifest:
    """The manifest of one ingested folder; `videos` in listing order, entries of earlier runs' other splits last."""

    dataset: str
    layout: str
    layout_evidence: str
    root: str
    splits: list[str]
    preprocessing: FramePreprocessing
    storage: dict[str, Any]
    clip_len: int
    software: dict[str, str | None]
    videos: list[ManifestEntry] = field(default_factory=list)
    updated: str | None = None
    migrated: list[tuple[str, str]] = field(default_factory=list)  # (old id, new id) renamed by `read`; not stored

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """The manifest of `folder`, the --out folder of jobs/ingest.py.

        Raises:
            FileNotFoundError: when there is none.
            ManifestError: when it is not a memae-frames/1 manifest or a field is missing or malformed.
        """
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest; is {folder} the --out folder of jobs/ingest.py?")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: not JSON ({exc})") from None
        fields = _Fields(data, path)
        if data.get("format") != FORMAT:
            raise ManifestError(f"{path}: not a {FORMAT} manifest (format: {data.get('format')!r})")
        manifest = cls(
            dataset=fields.get("dataset", str),
            layout=fields.get("layout", str),
            layout_evidence=fields.get("layout_evidence", str),
            root=fields.get("root", str),
            splits=[fields.plain_name(f"splits[{i}]", s) for i, s in enumerate(fields.get("splits", list))],
            preprocessing=_read_preprocessing(fields.object("preprocessing")),
            storage=fields.get("storage", dict),
            clip_len=fields.get("clip_len", int),
            software=fields.get("software", dict),
            videos=[_read_entry(entry) for entry in fields.objects("videos")],
            updated=fields.get("updated", str, optional=True),
        )
        if manifest.layout == "videos":
            manifest.videos, manifest.migrated = _migrate_video_ids(manifest.videos, manifest.root)
        return manifest

    def write(self, folder: str | Path) -> None:
        """Replaces `folder`'s manifest atomically: readers see the old one or this one, never a mix.

        Raises:
            ManifestError: an entry whose split or shard path would lead out of `folder` (nothing is written).
        """
        path = Path(folder) / MANIFEST_FILE
        for i, entry in enumerate(self.videos):
            if not is_plain_name(entry.split):
                raise ManifestError(f"{path}: refusing to write videos[{i}].split {entry.split!r}: not a plain name")
            if entry.shard is not None and not is_inside(entry.shard):
                raise ManifestError(f"{path}: refusing to write videos[{i}].shard {entry.shard!r}: not inside {folder}")
        write_json_atomic(path, self.to_json())

    def migration_note(self) -> str | None:
        """What `read` renamed, in one sentence for the console; None when nothing was."""
        if not self.migrated:
            return None
        old, new = self.migrated[0]
        return (f"{len(self.migrated)} video id(s) of the manifest renamed to the path under --root with its suffix "
                f"({old!r} is now {new!r}); their shards are kept")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "dataset": self.dataset, "layout": self.layout, "layout_evidence": self.layout_evidence,
            "root": self.root, "splits": list(self.splits), "preprocessing": self.preprocessing.to_json(),
            "storage": self.storage, "clip_len": self.clip_len, "software": self.software,
            "videos": [v.to_json() for v in self.videos],
            "complete": self.complete, "frame_shape": list(self.frame_shape) if self.frame_shape else None,
            "counts": self.counts, "updated": self.updated,
        }

    @property
    def complete(self) -> bool:
        """True when every listed video is ingested."""
        return all(v.status == "done" for v in self.videos)

    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of every stored frame; None when no video is done or the videos differ."""
        shapes = {v.frame_shape for v in self.done()}
        return shapes.pop() if len(shapes) == 1 else None

    @property
    def counts(self) -> dict[str, Any]:
        """Videos by status; frames, shard bytes and raw frame bytes of the ingested ones, overall and per split."""
        done = self.done()
        by_split = {s: [v for v in done if v.split == s] for s in SPLITS}
        return {
            "videos": len(self.videos),
            "done": len(done),
            "failed": sum(v.status == "failed" for v in self.videos),
            "frames": sum(v.num_frames for v in done),
            "bytes": sum(v.bytes for v in done),
            "raw_bytes": sum(v.num_frames * int(np.prod(v.frame_shape)) for v in done),
            "by_split": {s: {"videos": len(vs), "frames": sum(v.num_frames for v in vs)} for s, vs in by_split.items()},
        }

    def done(self) -> list[ManifestEntry]:
        return [v for v in self.videos if v.status == "done"]

    def select(self, split: str | None = None, video_ids: Iterable[str] | None = None) -> list[ManifestEntry]:
        """Ingested videos in manifest order, filtered by split and ids.

        Raises:
            KeyError: when a requested id is not an ingested video (of that split).
        """
        done = [v for v in self.done() if split is None or v.split == split]
        if video_ids is None:
            return done
        wanted = set(video_ids)
        missing = wanted - {v.video_id for v in done}
        if missing:
            where = f" in split {split!r}" if split else ""
            raise KeyError(f"videos not ingested{where}: {sorted(missing)}")
        return [v for v in done if v.video_id in wanted]


def software_versions() -> dict[str, str | None]:
    """Versions of what decoded and stored the frames, recorded so that a corpus can be reproduced."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("memae", "numpy", "pyarrow", "decord", "pillow", "ray"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["platform"] = sys.platform
    return versions


def is_plain_name(value: object) -> bool:
    """A split: a plain folder name, since shards are stored under shards/<split>/."""
    return isinstance(value, str) and bool(value) and safe_name(value) == value and not value.startswith(".")


def is_inside(value: str) -> bool:
    """A relative path that stays inside the folder it is relative to."""
    parts = PurePosixPath(value).parts
    return bool(parts) and parts[0] != "/" and ".." not in parts and "\\" not in value


def _migrate_video_ids(videos: list[ManifestEntry], root: str) -> tuple[list[ManifestEntry], list[tuple[str, str]]]:
    """Entries of a `videos`-layout manifest under the ids of today (path under the root, suffix included).

    An entry keeps its shard; an older entry whose new id an up-to-date entry already holds is dropped.
    """
    current = {v.key for v in videos}
    kept, renamed = [], []
    for entry in videos:
        try:
            new_id = videos_layout_id(root, entry.source)
        except ValueError:  # not under the recorded root: an earlier run's archive, left as it was
            new_id = entry.video_id
        if new_id != entry.video_id:
            if (entry.split, new_id) in current:
                continue
            renamed.append((entry.video_id, new_id))
            entry = dataclasses.replace(entry, video_id=new_id)
        kept.append(entry)
    return kept, renamed


def read_entry(data: Any, where: Path) -> ManifestEntry:
    """One video's entry from its JSON object (as a manifest or a sealed shard holds it), checked like the manifest's
    own; `where` names the file in errors."""
    return _read_entry(_Fields(data, where))


def _read_entry(fields: _Fields) -> ManifestEntry:
    """One entry of `videos`: what every status requires, checked."""
    status = fields.choice("status", STATUSES)
    done, failed = status == "done", status == "failed"
    ranges = fields.get("anomaly_ranges", list, optional=True)
    return ManifestEntry(
        video_id=fields.get("video_id", str),
        split=fields.plain_name("split", fields.get("split", str)),
        status=status,
        source=fields.get("source", str),
        num_frames=fields.get("num_frames", int, optional=not done),
        fps=fields.get("fps", float, optional=True),
        notes=tuple(Issue(n.get("file", str), n.get("reason", str)) for n in fields.objects("notes")),
        frame_shape=fields.ints("frame_shape", 3, optional=not done),
        shard=fields.shard("shard", optional=not done),
        encoding=fields.get("encoding", str, optional=True),
        bytes=fields.get("bytes", int, optional=not done),
        labelled=fields.get("labelled", bool, optional=True),
        anomaly_ranges=None if ranges is None else tuple(
            fields.int_list(f"anomaly_ranges[{i}]", r, 2, minimum=0) for i, r in enumerate(ranges)
        ),
        seconds=fields.get("seconds", float, optional=True),
        file=fields.get("file", str, optional=not failed),
        reason=fields.get("reason", str, optional=not failed),
        detail=fields.get("detail", str, optional=True),
        source_stamp=None if (stamp := fields.get("source_stamp", list, optional=True)) is None
        else fields.int_list("source_stamp", stamp, 2, minimum=0),
    )


def _read_preprocessing(fields: _Fields) -> FramePreprocessing:
    return FramePreprocessing(fields.ints("size", 2, optional=True), fields.get("color", str),
                              fields.get("channels", int), fields.get("resize", str), fields.get("gray", str))


class _Fields:
    """Typed access to one JSON object of a manifest; every error names the file and the field's path in it."""

    def __init__(self, data: Any, path: Path, where: str = "") -> None:
        if not isinstance(data, dict):
            what = f"field {where.rstrip('.')} is" if where else "the file is"
            raise ManifestError(f"{path}: {what} not a JSON object")
        self.data, self.path, self.where = data, path, where

    def fail(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.path}: field {self.where}{key}: {problem}")

    def get(self, key: str, kind: type, optional: bool = False) -> Any:
        """`data[key]`, of `kind` (int excludes bool; float accepts int), or None when optional and absent or null."""
        value = self.data.get(key)
        if value is None:
            if optional:
                return None
            raise self.fail(key, "missing" if key not in self.data else "null")
        if not _is(value, kind):
            raise self.fail(key, f"expected {kind.__name__}, found {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.get(key, str)
        if value not in allowed:
            raise self.fail(key, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def plain_name(self, key: str, value: Any) -> str:
        if not is_plain_name(value):
            raise self.fail(key, f"{value!r} is not a plain name")
        return value

    def shard(self, key: str, optional: bool) -> str | None:
        value = self.get(key, str, optional)
        if value is not None and not is_inside(value):
            raise self.fail(key, f"{value!r} is not a path inside {self.path.parent}")
        return value

    def ints(self, key: str, length: int, optional: bool = False) -> tuple[int, ...] | None:
        """A frame size or shape: a list of `length` positive integers, as a tuple."""
        value = self.get(key, list, optional)
        return None if value is None else self.int_list(key, value, length)

    def int_list(self, key: str, value: Any, length: int, minimum: int = 1) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) != length or not all(_is(v, int) and v >= minimum for v in value):
            raise self.fail(key, f"expected {length} integers of at least {minimum}, found {value!r}")
        return tuple(value)

    def object(self, key: str) -> _Fields:
        return _Fields(self.get(key, dict), self.path, f"{self.where}{key}.")

    def objects(self, key: str) -> list[_Fields]:
        return [_Fields(item, self.path, f"{self.where}{key}[{i}].") for i, item in enumerate(self.get(key, list))]


_CHECKS: dict[type, Callable[[Any], bool]] = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _is(value: Any, kind: type) -> bool:
    return _CHECKS.get(kind, lambda v: isinstance(v, kind))(value)
