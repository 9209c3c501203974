"""Scoring as a nightly job runs it, on archives that keep growing and are never clean: one writer per --out, nothing
deleted without --restart, changed files rescored and files still being written deferred, paths that stay inside --out,
a decoder that dies in calibration costing one video, and the exit status a scheduler acts on.

An untrained cpu-tiny model is enough: these tests are about which videos get scored and what is written where.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.synthetic import SynthConfig, render_video, write_video
from memae.checkpoint import save_checkpoint
from memae.presets import get_preset
from pipelines.common import exit_codes
from pipelines.common.lock import FolderBusy, folder_lock
from pipelines.registry.source import ScoringSettings, load_model_source
from pipelines.score import run as run_module
from pipelines.score.config import ScoreConfig
from pipelines.score.data import VideoUnit
from pipelines.score.isolated import read_each
from pipelines.score.run import score

REPO = Path(__file__).resolve().parents[3]
HOUR = 3600.0
LEAN = ["--mlflow", "false", "--worst-frames", "0", "--review", "false"]  # what these tests do not look at
LEAN_CONFIG = {"mlflow": False, "worst_frames": 0, "review": False}


def load_score_job():
    spec = importlib.util.spec_from_file_location("job_score_nightly", REPO / "jobs" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


score_main = load_score_job()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two untrained cpu-tiny checkpoints: two model versions, so two keys in one output folder."""
    preset = get_preset("cpu-tiny")
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for seed, name in enumerate(("a", "b")):
        torch.manual_seed(seed)
        paths[name] = folder / f"{name}.pt"
        save_checkpoint(paths[name], preset.model.build(), preset.model,
                        config={"preset": preset.name, "error_rule": "l1", "frame_rule": "mean"})
    return paths


def write_videos(root: Path, names: list[str], frames: int = 24, seed: int = 3, age_s: float = HOUR) -> None:
    """Unlabelled .mp4 files, as a camera archive holds them, last modified `age_s` ago."""
    cfg = SynthConfig(height=48, width=64, frames=frames, seed=seed)
    for i, name in enumerate(names):
        path = write_video(root / f"{name}.mp4", render_video(cfg, "train", i).frames, cfg.fps)
        os.utime(path, (os.path.getmtime(path) - age_s,) * 2)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: (size, modification time), to tell whether anything was touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def scored_ids(out: Path) -> list[str]:
    return sorted(pd.read_parquet(out / "frame_scores.parquet").video_id.unique())


def ledger_keys(out: Path, model: Path) -> list[str]:
    """The videos the ledger records for `model`."""
    with closing(sqlite3.connect(out / "ledger.sqlite")) as db:
        rows = db.execute("SELECT key FROM videos WHERE model = ? ORDER BY key", (load_model_source(str(model)).key,))
        return [key for (key,) in rows]


def job_env(ray_session) -> dict[str, str]:
    return {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}


def test_a_second_job_on_the_same_out_exits_4_naming_the_holder_and_the_first_finishes_intact(models, tmp_path,
                                                                                                ray_session):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["a", "b"])
    holding, release = threading.Event(), threading.Event()

    def echo(line: str) -> None:  # the first job pauses while holding the folder, after its start-up clean-up
        if "videos to score" in line:
            holding.set()
            release.wait(300)

    config = ScoreConfig(model=str(models["a"]), dataset="videos", root=str(archive), out=str(out), **LEAN_CONFIG)
    results = []
    first = threading.Thread(target=lambda: results.append(score(config, echo)))
    first.start()
    try:
        assert holding.wait(300)
        before = snapshot(out)
        second = subprocess.run([sys.executable, str(REPO / "jobs" / "score.py"), "--model", str(models["b"]),
                                 "--dataset", "videos", "--root", str(archive), "--out", str(out), *LEAN],
                                env=job_env(ray_session), capture_output=True, text=True, timeout=300)
        after = snapshot(out)
    finally:
        release.set()
        first.join(300)
    assert second.returncode == exit_codes.FOLDER_BUSY, second.stderr
    assert f"is being written by another job (host {socket.gethostname()}, pid {os.getpid()}" in second.stderr
    assert after == before, "the second job wrote and deleted nothing"
    (result,) = results
    assert result.ok and sorted(result.scored) == ["train/a.mp4", "train/b.mp4"]
    assert scored_ids(out) == ["a.mp4", "b.mp4"]
    with folder_lock(out):  # released when the first job finished
        pass


def test_a_job_waits_for_the_folder_only_as_long_as_asked(models, tmp_path):
    out = tmp_path / "out"
    config = ScoreConfig(model=str(models["a"]), dataset="videos", root=str(tmp_path), out=str(out), wait_s=0.3)
    with folder_lock(out), pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
        score(config, echo=lambda _: None)


def test_without_flags_nothing_earlier_is_deleted_and_restart_discards_only_this_models_results(models, tmp_path,
                                                                                                 ray_session):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["a", "c"])
    common = ["--dataset", "videos", "--root", str(archive), "--out", str(out), *LEAN]
    assert score_main(["--model", str(models["a"]), *common]) == exit_codes.OK
    assert score_main(["--model", str(models["b"]), *common]) == exit_codes.OK
    folder_a, folder_b = (out / "scored" / load_model_source(str(models[m])).key for m in "ab")
    files_b = snapshot(folder_b)
    (archive / "c.mp4").unlink()  # gone from tonight's listing
    before = snapshot(folder_a)

    assert score_main(["--model", str(models["a"]), *common]) == exit_codes.OK
    assert snapshot(folder_b) == files_b, "another model's results are never touched"
    after = snapshot(folder_a)
    assert after["train/c.mp4.parquet"] == before["train/c.mp4.parquet"], "a video not listed tonight keeps its results"
    assert after["train/a.mp4.parquet"] != before["train/a.mp4.parquet"], "a listed video is scored again"
    assert ledger_keys(out, models["a"]) == ["train/a.mp4", "train/c.mp4"] and scored_ids(out) == ["a.mp4", "c.mp4"]

    lines: list[str] = []
    config = ScoreConfig(model=str(models["a"]), dataset="videos", root=str(archive), out=str(out), restart=True,
                         **LEAN_CONFIG)
    assert score(config, echo=lines.append).ok
    assert any(line.startswith("--restart: discarded the 2 earlier results of model") for line in lines)
    assert not (folder_a / "train" / "c.mp4.parquet").exists() and snapshot(folder_b) == files_b
    assert ledger_keys(out, models["a"]) == ["train/a.mp4"] and scored_ids(out) == ["a.mp4"]
    assert ledger_keys(out, models["b"]) == ["train/a.mp4", "train/c.mp4"]


def test_a_changed_file_is_rescored_and_a_file_still_being_written_is_deferred(models, tmp_path, ray_session, capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["a", "b"])
    args = ["--model", str(models["a"]), "--dataset", "videos", "--root", str(archive), "--out", str(out),
            "--incremental", *LEAN]
    assert score_main(args) == exit_codes.OK
    assert "has scored nothing into" in capsys.readouterr().out, "the first night says --since would limit it"
    write_videos(archive, ["a"], frames=32, seed=9, age_s=HOUR / 2)  # replaced since: another size and time
    write_videos(archive, ["c"], age_s=10)  # a camera may still be writing it

    assert score_main(args) == exit_codes.OK, "a deferred video is no failure"
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["rescored_changed"] == ["train/a.mp4"]
    assert report["skipped_already_scored"] == 1 and report["failed"] == []
    assert report["alarms"] is None, "no calibration (no normal videos, none in the model): no rate was promised"
    ((deferred),) = report["deferred"]
    assert deferred["video_id"] == "c.mp4" and "less than --settle-s 300" in deferred["reason"]
    printed = capsys.readouterr().out
    assert "deferred train/c.mp4" in printed and "has scored nothing into" not in printed
    frames = pd.read_parquet(out / "frame_scores.parquet")
    assert sorted(frames.video_id.unique()) == ["a.mp4", "b.mp4"] and (frames.video_id == "a.mp4").sum() == 32


def test_a_video_deleted_while_the_run_goes_on_is_deferred_not_failed(models, tmp_path, ray_session, monkeypatch,
                                                                       capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["a", "b"])
    args = ["--model", str(models["a"]), "--dataset", "videos", "--root", str(archive), "--out", str(out),
            "--incremental", *LEAN]
    moved = tmp_path / "b.mp4"
    select = run_module.select_videos

    def select_then_delete(*a, **kw):  # a retention job takes b.mp4 away once the run has chosen it
        chosen = select(*a, **kw)
        (archive / "b.mp4").rename(moved)
        return chosen

    monkeypatch.setattr(run_module, "select_videos", select_then_delete)
    assert score_main(args) == exit_codes.OK, "a video gone since it was listed needs no person"
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["failed"] == [] and report["new_alarms"]["videos"] == 1
    ((deferred),) = report["deferred"]
    assert deferred["video_id"] == "b.mp4" and deferred["reason"].startswith("deleted or moved while the run went on")
    assert "deferred train/b.mp4" in capsys.readouterr().out and scored_ids(out) == ["a.mp4"]

    monkeypatch.setattr(run_module, "select_videos", select)
    moved.rename(archive / "b.mp4")
    assert score_main(args) == exit_codes.OK
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["deferred"] == [] and scored_ids(out) == ["a.mp4", "b.mp4"]


def test_results_deleted_by_hand_are_scored_again_or_left_out_never_a_failed_night(models, tmp_path, ray_session,
                                                                                     capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["a", "b"])
    args = ["--model", str(models["a"]), "--dataset", "videos", "--root", str(archive), "--out", str(out),
            "--incremental", *LEAN]
    assert score_main(args) == exit_codes.OK
    per_video = {p.name: p for p in (out / "scored").rglob("*.parquet")}
    per_video["a.mp4.parquet"].unlink()  # someone frees disk space in --out
    assert score_main(args) == exit_codes.OK
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["results_lost"] == [] and scored_ids(out) == ["a.mp4", "b.mp4"]

    per_video["a.mp4.parquet"].unlink()
    (archive / "a.mp4").unlink()  # and the archive's retention takes the video too
    capsys.readouterr()
    assert score_main(args) == exit_codes.OK, "the tables are rebuilt without it: the nights go on"
    report = json.loads((out / "score_report.json").read_text())
    assert report["results_lost"] == ["train/a.mp4"] and scored_ids(out) == ["b.mp4"]
    assert "1 videos scored earlier are left out of the tables, as train/a.mp4" in capsys.readouterr().out

    damaged = per_video["b.mp4.parquet"]
    damaged.write_bytes(b"damaged on disk")
    assert score_main([*args, "--calibrate-on-archive"]) == exit_codes.NOT_STARTED, "no scored frames left to read"
    assert score_main(args) == exit_codes.OK
    report = json.loads((out / "score_report.json").read_text())
    assert sorted(report["results_lost"]) == ["train/a.mp4", "train/b.mp4"] and scored_ids(out) == []
    aside = damaged.with_name("b.mp4.parquet.damaged")
    assert report["results_set_aside"] == {str(damaged): str(aside)} and aside.read_bytes() == b"damaged on disk"
    assert f"damaged, moved aside to be scored again: {damaged} -> {aside}" in capsys.readouterr().out

    assert score_main(args) == exit_codes.OK, "the next night scores the damaged one's video again"
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["results_lost"] == ["train/a.mp4"] and scored_ids(out) == ["b.mp4"]
    assert report["results_set_aside"] == {} and aside.is_file()


def test_an_alarm_line_drawn_from_the_archive_is_kept_for_the_nights_after(models, tmp_path, ray_session, capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["cam1/a", "cam1/b", "cam1/c"], frames=40)  # enough frames for a line of cam1's own
    args = ["--model", str(models["a"]), "--dataset", "videos", "--root", str(archive), "--out", str(out),
            "--incremental", *LEAN]
    assert score_main([*args, "--calibrate-on-archive"]) == exit_codes.NOT_STARTED
    assert "has scored 0 videos with scored frames" in capsys.readouterr().err
    assert score_main(args) == exit_codes.OK
    assert json.loads((out / "score_report.json").read_text())["alarms"] is None, "no line yet: nothing promised"

    assert score_main([*args, "--calibrate-on-archive"]) == exit_codes.OK
    printed = capsys.readouterr().out
    assert "calibrated on 3 videos scored into --out" in printed
    assert ", the newest tenth passed the line of the older ones on " in printed
    share = json.loads((out / "score_report.json").read_text())["alarms"]
    # Every flagged frame lies above the release line (the 0.95 quantile of these very frames): at most 5% of them.
    assert 0 <= share["share"] <= 0.05 and share["nominal_false_alarm_rate"] == pytest.approx(0.01)
    line = json.loads((out / "video_summary.json").read_text())["threshold"]
    errors = pd.read_parquet(out / "frame_scores.parquet").error.dropna()
    assert line["source"] == "calibrated on 3 videos scored into --out"
    assert line["error"] == pytest.approx(errors.quantile(0.99)), "the 0.99 quantile of the archive's frame errors"

    assert "no alarm line of their own" not in printed
    write_videos(archive, ["cam2/d"], seed=7)  # a camera added after the line was drawn
    assert score_main(args) == exit_codes.OK
    printed = capsys.readouterr().out
    assert "calibrated on 3 videos scored into --out" in printed, "kept for the nights after"
    assert "1 cameras have no alarm line of their own and are judged by the line of all cameras pooled: cam2 (" \
        in printed
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["new_alarms"]["share"]["frames_scored"] == 24, "the night's own frames"
    assert "alarms in this run's videos: " in printed and "alarms in every video scored into --out: " in printed
    assert "like the archive's footage the line was drawn on" in printed and report["alarms"]["line_from_archive"]
    assert {(c["camera"], c["own_line"]) for c in report["alarms"]["cameras"]} == {("cam1", True), ("cam2", False)}


def test_a_new_model_version_started_with_since_scores_recent_footage_and_leaves_the_rest_alone(models, tmp_path,
                                                                                                 ray_session, capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    write_videos(archive, ["old1", "old2"], age_s=10 * 24 * HOUR)
    write_videos(archive, ["new"], seed=5)
    args = ["--model", str(models["b"]), "--dataset", "videos", "--root", str(archive), "--out", str(out),
            "--incremental", *LEAN]
    capsys.readouterr()
    assert score_main([*args, "--since", "7d"]) == exit_codes.OK, "videos left alone are no failure"
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["older_than_since"] == 2 and report["failed"] == []
    assert scored_ids(out) == ["new.mp4"]
    first_alarms = report["new_alarms"]
    assert first_alarms["count"] >= 1 and {a["video_id"] for a in first_alarms["listed"]} == {"new.mp4"}
    printed = capsys.readouterr().out
    assert "1 videos to score, 0 already scored" in printed and ", 2 older than --since " in printed
    assert "has scored nothing into" not in printed, "no hint when --since is given"

    assert score_main(args) == exit_codes.OK  # without --since the backlog is scored, and only the backlog
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 2 and report["skipped_already_scored"] == 1 and report["older_than_since"] == 0
    assert scored_ids(out) == ["new.mp4", "old1.mp4", "old2.mp4"]
    assert {a["video_id"] for a in report["new_alarms"]["listed"]} <= {"old1.mp4", "old2.mp4"}, "this night's only"
    assert report["new_alarms"]["videos"] == 2


def claim_frames(avi: Path, count: int) -> None:
    """Rewrites the frame counts an AVI's headers declare (avih and strh), as a damaged or hostile file might."""
    data = bytearray(avi.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32)):
        at = data.find(tag) + 8 + offset
        data[at : at + 4] = struct.pack("<I", count)
    avi.write_bytes(bytes(data))


def test_a_training_video_that_crashes_the_decoder_is_one_reported_failure(models, fresh_archive, tmp_path,
                                                                           ray_session):
    root, _ = fresh_archive("avenue")
    bad = root / "training_videos" / "01.avi"
    claim_frames(bad, 0xFFFFFFFF)  # decord reserves room for every frame it is promised: std::bad_alloc, abort
    out = tmp_path / "out"
    job = subprocess.run([sys.executable, str(REPO / "jobs" / "score.py"), "--model", str(models["a"]),
                          "--dataset", "avenue", "--root", str(root), "--out", str(out), *LEAN],
                         env=job_env(ray_session), capture_output=True, text=True, timeout=300)
    assert job.returncode == exit_codes.INPUTS_FAILED, job.stdout + job.stderr
    report = json.loads((out / "score_report.json").read_text())
    ((failure),) = report["failed"]
    assert (failure["split"], failure["video_id"], failure["file"]) == ("train", "01", str(bad))
    assert failure["reason"].startswith("calibration: ")
    assert report["scored"] == 2, "the test videos are scored"
    summary = json.loads((out / "video_summary.json").read_text())
    assert summary["threshold"]["source"].startswith("calibrated on"), "on the training video that could be read"
    assert "calibration skips train/01" in job.stdout


def test_a_read_whose_process_dies_is_that_videos_failure_and_the_others_are_read(ray_session):
    def read(unit: VideoUnit, settings: ScoringSettings, request: str) -> str:  # runs in a Ray worker
        if unit.video_id == "bad":
            os.abort()  # as decord does on std::bad_alloc
        return request

    units = [VideoUnit("train", video_id, f"/srv/{video_id}.mp4") for video_id in ("a", "bad", "c")]
    settings = ScoringSettings(8, 32, 32, 1, 1, "l1", "mean")
    config = ScoreConfig(model="m", out="o", dataset="videos", root="r")
    read_back = [(unit.video_id, value, failure) for unit, value, failure in
                 read_each([(u, u.video_id.upper()) for u in units], read, settings, config)]
    assert [(video_id, value) for video_id, value, _ in read_back] == [("a", "A"), ("bad", None), ("c", "C")]
    failure = read_back[1][2]
    assert (failure.status, failure.file) == ("failed", "/srv/bad.mp4") and "crashed" in failure.reason


def test_manifest_fields_never_lead_writes_outside_out(models, ingested_ped2, tmp_path, ray_session, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(ingested_ped2.out, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    original = json.dumps(manifest)
    out = tmp_path / "a" / "b" / "out"
    args = ["--model", str(models["a"]), "--shards", str(shards), "--out", str(out), *LEAN]
    outside = snapshot(tmp_path)

    manifest["videos"][0]["split"] = "../../../escaped"
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert score_main(args) == exit_codes.NOT_STARTED
    assert "split: '../../../escaped' is not a plain name" in capsys.readouterr().err

    manifest = json.loads(original)
    done = [v for v in manifest["videos"] if v["status"] == "done" and v["split"] == "test"]
    done[0]["video_id"] = "../../../escaped"
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert score_main(args) == exit_codes.OK
    written = snapshot(tmp_path)
    new = {path for path in written if path not in outside and not path.startswith("shards/")}
    assert new and all(path.startswith("a/b/out/") for path in new), sorted(new)
    assert "../../../escaped" in set(pd.read_parquet(out / "frame_scores.parquet").video_id)


def test_exit_status_2_when_the_job_cannot_start_and_3_when_it_fails_while_running(models, tmp_path, monkeypatch,
                                                                                   capsys):
    archive = tmp_path / "archive"
    write_videos(archive, ["a"])
    common = ["--dataset", "videos", "--root", str(archive), "--out", str(tmp_path / "out"), *LEAN]
    assert score_main(["--model", str(tmp_path / "missing.pt"), *common]) == exit_codes.NOT_STARTED
    assert "no such model file" in capsys.readouterr().err

    def broken(*_args, **_kwargs):
        raise RuntimeError("the cluster went away")

    monkeypatch.setattr("pipelines.score.run._score_videos", broken)
    assert score_main(["--model", str(models["a"]), *common]) == exit_codes.JOB_FAILED
    assert "scoring failed: RuntimeError: the cluster went away" in capsys.readouterr().err


def test_help_explains_the_modes_and_the_exit_status():
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "score.py"), "--help"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0
    for text in ("--incremental", "--restart", "--settle-s", "--hash", "--wait-s", "(default)", "deferred",
                 "1  some inputs failed", "3  the job itself failed", "4  another job is writing --out"):
        assert text in result.stdout, text
