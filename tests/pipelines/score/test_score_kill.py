"""A killed scoring job loses no finished video and leaves no process behind.

The job (`--incremental`, as nightly) starts its own Ray, and its driver is ended mid-run (once its first per-video
file is on disk) by SIGKILL, by SIGTERM and by a `timeout` wrapper running out; the three jobs run side by side
(tests/pipelines/ingest/kill.py). Then no process of that Ray may be alive 30 s after the kill, and a rerun scores
exactly the videos whose per-video file was not complete, whether or not the killed driver had recorded the others in
its ledger, and ends with the frame scores of an uninterrupted run.
A per-video file whose ledger row never came is recorded from its own footer; one that is damaged or was made
otherwise is scored again, and said so.

An untrained cpu-tiny model is enough: these tests are about which videos get scored again.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from contextlib import closing
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from experiments.synthetic import SynthConfig, render_video, write_video
from memae.checkpoint import save_checkpoint
from memae.presets import get_preset
from pipelines.registry.source import load_model_source
from pipelines.score.config import ScoreConfig
from pipelines.score.outputs import RECORD_KEY
from pipelines.score.run import score

from ..ingest.kill import HOW, LEFT_AFTER_S, Killed, kill_mid_run

REPO = Path(__file__).resolve().parents[3]
VIDEOS = 12
LEAN = {"mlflow": False, "worst_frames": 0, "review": False}  # what these tests do not look at


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    preset = get_preset("cpu-tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, preset.model.build(), preset.model,
                    config={"preset": preset.name, "error_rule": "l1", "frame_rule": "mean"})
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """VIDEOS unlabelled .mp4 files in two camera folders: copies of three rendered videos."""
    base = tmp_path_factory.mktemp("score-kill")
    cfg = SynthConfig(height=48, width=64, frames=24, seed=3)
    originals = [write_video(base / f"original{i}.mp4", render_video(cfg, "train", i).frames, cfg.fps)
                 for i in range(3)]
    root = base / "archive"
    for i in range(VIDEOS):
        (root / f"cam{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(originals[i % 3], root / f"cam{i % 2}" / f"{i:03d}.mp4")
    return root


def config(model: Path, archive: Path, out: Path) -> ScoreConfig:
    # --settle-s 0: the archive was just written, and the nightly default would defer every video
    return ScoreConfig(model=str(model), dataset="videos", root=str(archive), out=str(out), incremental=True,
                       settle_s=0, **LEAN)


@pytest.fixture(scope="module")
def reference(model, archive, tmp_path_factory, ray_session) -> Path:
    """What an uninterrupted run writes."""
    out = tmp_path_factory.mktemp("reference")
    result = score(config(model, archive, out), echo=lambda _: None)
    assert result.ok and len(result.scored) == VIDEOS
    return out


@pytest.fixture(scope="module")
def killed(model, archive, tmp_path_factory) -> dict[str, tuple[Killed, Path, int, int]]:
    """{how: (the killed job, its output folder, complete per-video files and ledger rows it left)}; the jobs run side
    by side (tests/pipelines/ingest/kill.py)."""
    base = tmp_path_factory.mktemp("killed")
    jobs = {how: ([sys.executable, str(REPO / "jobs" / "score.py"), "--model", str(model), "--dataset", "videos",
                   "--root", str(archive), "--out", str(base / how), "--incremental", "--settle-s", "0",
                   "--num-cpus", "1", "--mlflow", "false", "--worst-frames", "0", "--review", "false"],
                  partial(scored_files, base / how, model))
            for how in HOW}
    runs = kill_mid_run(jobs, base)
    return {how: (run, base / how, scored_files(base / how, model), len(ledger_rows(base / how, model)))
            for how, run in runs.items()}


@pytest.mark.parametrize("how", HOW)
def test_a_killed_scoring_job_leaves_no_process_and_its_rerun_redoes_no_finished_video(killed, model, archive,
                                                                                        reference, how):
    run, out, at_kill, recorded = killed[how]
    assert run.ended_by_the_kill and run.session, run.describe()
    assert run.left == [], f"processes of the killed job's Ray alive {LEFT_AFTER_S:g} s after the kill ({how})"
    assert 1 <= at_kill < VIDEOS, f"killed with {at_kill} of {VIDEOS} videos scored"
    assert not (out / "frame_scores.parquet").exists(), "the killed run never came to its tables"

    result = score(config(model, archive, out), echo=lambda _: None)  # on the tests' Ray
    report = json.loads((out / "score_report.json").read_text())
    assert result.ok and report["scored"] == VIDEOS - at_kill, "not one complete per-video file is scored again"
    assert report["skipped_already_scored"] == at_kill and report["found_on_disk"] == at_kill - recorded
    assert report["redone"] == []
    assert ledger_rows(out, model) == ledger_rows(reference, model)
    assert_same_frame_scores(out, reference)
    assert not list(out.rglob(".*.tmp-*")), "a half-written file of the killed run is left"


def test_files_the_ledger_never_recorded_are_recorded_from_their_footer_and_the_others_rescored(
        model, archive, reference, tmp_path, ray_session):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    folder = out / "scored" / load_model_source(str(model)).key / "train"
    files = sorted(folder.glob("*.parquet"))
    with closing(sqlite3.connect(out / "ledger.sqlite")) as db, db:
        db.execute("DELETE FROM videos")  # as a driver killed after each file's rename, before its ledger row
    damaged, foreign, bare = files[:3]
    damaged.write_bytes(damaged.read_bytes()[:200])  # half a file, as a disk that lost its tail leaves it
    table = pq.read_table(foreign)
    record = json.loads(table.schema.metadata[RECORD_KEY])
    record["settings"]["stride"] = 2
    pq.write_table(table.replace_schema_metadata({RECORD_KEY: json.dumps(record)}), foreign)
    pq.write_table(table.replace_schema_metadata({}), bare)  # written by a version without footers
    leftover = folder / f".{files[3].name}.tmp-0123abcd"
    leftover.write_bytes(b"half")
    kept = {p: p.stat().st_mtime_ns for p in files[3:]}

    lines: list[str] = []
    assert score(config(model, archive, out), echo=lines.append).ok
    report = json.loads((out / "score_report.json").read_text())
    assert report["found_on_disk"] == report["skipped_already_scored"] == VIDEOS - 3 and report["scored"] == 3
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "a file recorded from its footer is not written again"
    redone = dict(item.split(": ", 1) for item in report["redone"])
    assert redone.keys() == {str(damaged), str(foreign), str(bare)}
    assert redone[str(damaged)].startswith("unreadable (")
    assert redone[str(foreign)] == "written with other settings"
    assert redone[str(bare)] == "written without its ledger row (by an earlier version)"
    assert f"rescoring {damaged}: unreadable (" in "\n".join(lines)
    assert any(f"{VIDEOS - 3} already scored by" in line and f"({VIDEOS - 3} found complete on disk and recorded now)"
               in line for line in lines)
    assert f"removed a half-written file from an interrupted run: {leftover}" in lines and not leftover.exists()
    assert ledger_rows(out, model) == ledger_rows(reference, model)
    assert_same_frame_scores(out, reference)

    again = score(config(model, archive, out), echo=lambda _: None)
    assert again.ok and again.report["scored"] == again.report["found_on_disk"] == 0


def scored_files(out: Path, model: Path) -> int:
    folder = out / "scored" / load_model_source(str(model)).key
    return len(list(folder.rglob("*.parquet"))) if folder.is_dir() else 0


def ledger_rows(out: Path, model: Path) -> list[tuple]:
    """The ledger's rows for `model` (what the video held and where its file is), in key order."""
    if not (out / "ledger.sqlite").is_file():
        return []
    with closing(sqlite3.connect(out / "ledger.sqlite")) as db:
        rows = db.execute("SELECT key, video_id, split, source, num_frames, num_clips, file, size, mtime_ns "
                          "FROM videos WHERE model = ? ORDER BY key", (load_model_source(str(model)).key,))
        return rows.fetchall()


def assert_same_frame_scores(out: Path, reference: Path) -> None:
    got, want = (pd.read_parquet(folder / "frame_scores.parquet") for folder in (out, reference))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
