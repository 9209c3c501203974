"""Which videos each model version has scored into an output folder, and with which settings.

OUT/ledger.json is the scoring job's memory between runs: per model key its scoring settings, the calibration
computed on the data (when the model carries none) and one entry per finished video. A video is recorded only after
its per-video file is in place, so an incremental run, or a rerun after a kill, skips exactly the finished videos.
The file is rewritten atomically after every video; its JSON stays inside this module.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memae.files import write_json_atomic

LEDGER_FILE, LEDGER_FORMAT = "ledger.json", "memae-score-ledger/1"
SCORED_DIR = "scored"


@dataclass(frozen=True)
class LedgerEntry:
    """One finished video: what it held, and where its scores are (None: too short for one clip)."""

    video_id: str
    split: str
    source: str
    num_frames: int
    num_clips: int
    fps: float | None
    file: str | None  # relative to the output folder
    scored_at: str

    @property
    def scored(self) -> bool:
        return self.file is not None


@dataclass
class LedgerSection:
    """What one model version did in this folder: its settings, its calibration, the videos it finished."""

    model: dict[str, str]
    settings: dict[str, Any]
    calibration: dict[str, Any] | None = None
    videos: dict[str, LedgerEntry] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LedgerSection:
        videos = {key: LedgerEntry(**entry) for key, entry in raw["videos"].items()}
        return cls(dict(raw["model"]), dict(raw["settings"]), raw.get("calibration"), videos)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "settings": self.settings, "calibration": self.calibration,
                "videos": {key: asdict(entry) for key, entry in self.videos.items()}}


class Ledger:
    """The ledger of one output folder, read when opened and saved after every change."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / LEDGER_FILE
        self.sections: dict[str, LedgerSection] = {}
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            if data.get("format") != LEDGER_FORMAT:
                raise ValueError(f"{self.path}: not a {LEDGER_FORMAT} ledger; choose an empty --out folder")
            try:
                self.sections = {key: LedgerSection.from_json(raw) for key, raw in data["models"].items()}
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}: a damaged ledger ({type(exc).__name__}: {exc}); choose an empty "
                                 "--out folder") from None

    def open_section(self, key: str, model: Mapping[str, str], settings: Mapping[str, Any],
                     fresh: bool) -> LedgerSection:
        """The model's section; `fresh` starts it over (its earlier per-video files are deleted).

        Raises:
            ValueError: when resuming a section scored with other settings (the outputs would mix two definitions).
        """
        section = self.sections.get(key)
        if section is not None and not fresh and section.settings != dict(settings):
            was = section.settings
            changed = {k: (was.get(k), v) for k, v in settings.items() if was.get(k) != v}
            raise ValueError(f"{self.path}: model {key} was scored here with other settings {changed} (was, now); "
                             "use the same flags, another --out, or run without --incremental to start over")
        if section is None or fresh:
            shutil.rmtree(self.folder(key), ignore_errors=True)
            section = LedgerSection(dict(model), dict(settings))
            self.sections[key] = section
            self.save()
        return section

    def folder(self, key: str) -> Path:
        """Where the per-video files of model `key` live."""
        return self.out / SCORED_DIR / key

    def done_videos(self, section: LedgerSection) -> set[str]:
        """Keys of the videos `section` records as finished whose files are still there."""
        return {key for key, entry in section.videos.items()
                if not entry.scored or (self.out / entry.file).is_file()}

    def record(self, section: LedgerSection, key: str, entry: LedgerEntry) -> None:
        """Marks video `key` finished (its file, if any, must already be in place)."""
        section.videos[key] = entry
        self.save()

    def keep_calibration(self, section: LedgerSection, calibration: dict[str, Any]) -> None:
        """Stores a calibration computed on the data, so that the next run of the model need not compute it."""
        section.calibration = calibration
        self.save()

    def save(self) -> None:
        models = {key: section.to_json() for key, section in self.sections.items()}
        write_json_atomic(self.path, {"format": LEDGER_FORMAT, "models": models})
