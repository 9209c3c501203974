"""What an unattended nightly ingest of a growing, never-clean archive needs: stable ids, every file accounted for,
one writer per output folder, exit codes a scheduler can act on, and a rerun after a kill that finishes the job (the
kills themselves, by SIGKILL, SIGTERM and `timeout`: test_ingest_kill.py)."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

from experiments.synthetic import render_video, write_video
from memae.datasets import Preprocess
from pipelines.ingest.clips import read_video_frames
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.corpus import Corpus
from pipelines.ingest.run import ingest
from pipelines.ingest.shards import shard_metadata

from ...conftest import TINY, archive_with_bad_links, empty_video, tiny_video
from ..conftest import run_ingest
from .test_ingest import REPO, assert_one_row_per_frame, assert_round_trip, load_job, read_manifest

SIZE = ["--size", "24x32"]


def job_command(root, out, *extra):
    return [sys.executable, str(REPO / "jobs" / "ingest.py"), "--root", str(root), "--out", str(out), *SIZE, *extra]


def job_env(ray_session):
    """A job joining the tests' Ray, as under `ray job submit`: no cluster start-up per job."""
    return {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}


def test_files_that_used_to_share_an_id_are_all_ingested_one_row_per_frame(tmp_path, ray_session):
    root = tmp_path / "archive"
    for index, rel in enumerate(("x/0001.mp4", "x/0001.avi", "cam1__0001.mp4", "cam1/0001.mp4")):
        tiny_video(root / rel, index)
    run = run_ingest(root, tmp_path / "out", dataset="videos", size=(24, 32))
    assert run.result.ok and run.result.report["ingested"] == 4
    manifest = read_manifest(run.out)
    ids = sorted(v["video_id"] for v in manifest["videos"])
    assert ids == ["cam1/0001.mp4", "cam1__0001.mp4", "x/0001.avi", "x/0001.mp4"]
    assert len({v["shard"] for v in manifest["videos"]}) == 4 and manifest["counts"]["frames"] == 4 * TINY.frames
    assert all(shard_metadata(run.out / v["shard"])["source"] == v["source"] for v in manifest["videos"])
    assert_one_row_per_frame(run.out)
    assert_round_trip(run, Preprocess((24, 32), "gray"))


def test_an_odd_archive_is_accounted_for_file_by_file(tmp_path, ray_session, capsys):
    root = tmp_path / "archive"
    bad_links = archive_with_bad_links(root, tmp_path / "elsewhere")
    (root / "cam2" / "x.mp4").mkdir(parents=True)
    empty_video(root / "cam2" / "empty.mp4")
    (root / "cam2" / "notes.txt").write_text("camera moved on Tuesday")

    status = load_job("ingest").main(["--dataset", "videos", "--root", str(root), "--out", str(tmp_path / "out"),
                                      *SIZE])
    assert status == 1  # some inputs failed, the rest was ingested
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    failed = {f["video_id"]: f["reason"] for f in report["failed"]}
    assert failed == {**bad_links, "cam2/empty.mp4": "holds no frames"}
    assert report["skipped_files"] == [
        {"file": str(root / "cam2" / "notes.txt"), "reason": "not a video file (.txt)"},
        {"file": str(root / "cam2" / "x.mp4"),
         "reason": "a folder named like a video file (the files in it are searched)"},
    ]
    assert report["ingested"] == 1 and read_video_frames(tmp_path / "out", "cam1/0001.mp4").shape[0] == TINY.frames
    console = capsys.readouterr().out
    assert f"skipped {root / 'cam2' / 'notes.txt'}: not a video file (.txt)" in console
    assert f"FAILED  train/cam2/empty.mp4: {root / 'cam2' / 'empty.mp4'}: holds no frames" in console


def test_a_frame_size_change_mid_video_is_a_note_on_that_video(fresh_archive, tmp_path, ray_session):
    from PIL import Image

    root, _ = fresh_archive("frames")
    changed = sorted((root / "training" / "frames" / "01").iterdir())[10]
    Image.open(changed).resize((TINY.width * 2, TINY.height * 2)).save(changed)
    run = run_ingest(root, tmp_path / "out", size=(24, 32))
    reason = "frame size changes from 48x64 to 96x128 at frame 10; rescaled to 24x32 like the others"
    assert run.result.ok and run.result.report["warnings"] == [
        {"video_id": "01", "split": "train", "file": str(changed), "reason": reason}]
    entry = next(v for v in read_manifest(run.out)["videos"] if v["video_id"] == "01" and v["split"] == "train")
    assert entry["notes"] == [{"file": str(changed), "reason": reason}]
    assert any(line.startswith("warning train/01: ") for line in run.lines)


def test_a_manifest_with_the_old_ids_is_migrated_keeping_its_shards(tmp_path, ray_session):
    root = tmp_path / "archive"
    for index, rel in enumerate(("cam1/0001.mp4", "cam2/0001.mp4", "0002.mp4")):
        tiny_video(root / rel, index)
    out = tmp_path / "out"
    assert run_ingest(root, out, dataset="videos", size=(24, 32)).result.ok
    data = read_manifest(out)
    old_ids = {"cam1/0001.mp4": "cam1__0001", "cam2/0001.mp4": "cam2__0001", "0002.mp4": "0002"}
    for video in data["videos"]:  # as the previous version wrote them: stem ids, shards named after them
        old = old_ids[video["video_id"]]
        old_shard = f"shards/train/{old}.parquet"
        (out / video["shard"]).rename(out / old_shard)
        video["video_id"], video["shard"] = old, old_shard
    (out / "manifest.json").write_text(json.dumps(data))

    assert sorted(v.video_id for v in Corpus.open(out).videos()) == sorted(old_ids)  # read under the new ids
    tiny_video(root / "cam3" / "0001.mp4", 3)  # and the archive grew meanwhile
    rerun = run_ingest(root, out, dataset="videos", size=(24, 32))
    assert rerun.result.ok and rerun.result.report["skipped_already_done"] == 3 and rerun.result.report["ingested"] == 1
    notes = [line for line in rerun.lines if line.startswith("note: ")]
    assert len(notes) == 1 and "3 video id(s) of the manifest renamed" in notes[0]
    assert "('0002' is now '0002.mp4')" in notes[0]
    manifest = read_manifest(out)
    assert [v["video_id"] for v in manifest["videos"]] == ["0002.mp4", "cam1/0001.mp4", "cam2/0001.mp4",
                                                           "cam3/0001.mp4"]
    assert manifest["videos"][0]["shard"] == "shards/train/0002.parquet"  # kept where it was
    assert_one_row_per_frame(out)
    assert_round_trip(rerun, Preprocess((24, 32), "gray"))
    assert not any(line.startswith("note: ") for line in run_ingest(root, out, dataset="videos", size=(24, 32)).lines)


def test_a_second_ingest_on_the_same_out_exits_4_naming_the_holder_or_waits(tmp_path, ray_session):
    root, out = tmp_path / "archive", tmp_path / "out"
    for index in range(3):
        tiny_video(root / f"{index:02d}.mp4", index)
    contenders = {}

    def contend(entry):
        """While this process ingests into `out`, two more jobs start on it: one gives up, one waits."""
        if not contenders:
            env = job_env(ray_session)
            contenders["busy"] = subprocess.run(job_command(root, out), env=env, capture_output=True, text=True,
                                                timeout=120)
            contenders["waiting"] = subprocess.Popen(job_command(root, out, "--wait-s", "120"), env=env, text=True,
                                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    holder = ingest(IngestConfig(root=root, out=out, size=(24, 32)), on_video=contend, echo=lambda _: None)
    assert holder.ok
    busy = contenders["busy"]
    assert busy.returncode == 4, busy.stdout + busy.stderr
    assert f"is being written by another job (host {socket.gethostname()}, pid {os.getpid()}, started" in busy.stderr
    waited = contenders["waiting"].communicate(timeout=120)[0]
    assert contenders["waiting"].returncode == 0, waited
    assert "3 videos listed: 3 already ingested, 0 to ingest" in waited


def test_exit_3_when_the_job_itself_fails_not_its_inputs(tmp_path, ray_session, monkeypatch, capsys):
    root = tmp_path / "archive"
    tiny_video(root / "0001.mp4")
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "train").write_text("a file where the shard folder should be")  # --out will not take shards
    job = load_job("ingest")
    assert job.main(["--root", str(root), "--out", str(out), *SIZE]) == 3
    assert f"cannot write {out / 'shards' / 'train' / '0001.mp4.parquet'}" in capsys.readouterr().err
    assert read_manifest(out)["videos"][0]["status"] == "pending"  # not blamed on the video: a rerun retries it

    def cluster_gone(*args, **kwargs):
        raise ConnectionError("the Ray cluster went away")

    monkeypatch.setattr(job, "ingest", cluster_gone)
    assert job.main(["--root", str(root), "--out", str(tmp_path / "other"), *SIZE]) == 3
    assert "the ingest itself failed (ConnectionError: the Ray cluster went away)" in capsys.readouterr().err


def test_a_sealed_shard_the_manifest_never_recorded_counts_as_done_and_a_mismatched_one_is_redone(tmp_path,
                                                                                                   ray_session):
    root = tmp_path / "archive"
    for i in range(3):
        tiny_video(root / f"{i}.mp4", i)
    out = tmp_path / "out"
    assert run_ingest(root, out, size=(24, 32)).result.ok
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["videos"] = [{**v, "status": "pending"} for v in manifest["videos"]]  # as a killed driver left it
    (out / "manifest.json").write_text(json.dumps(manifest))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.parquet")}

    again = run_ingest(root, out, size=(24, 32)).result
    assert again.report["ingested"] == 0 and again.report["found_on_disk"] == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "no shard was written again"
    assert read_manifest(out)["complete"] and read_manifest(out)["counts"]["frames"] > 0

    other = run_ingest(root, tmp_path / "other", size=(24, 32), color="rgb").result  # other settings, same ids
    shutil.copytree(tmp_path / "other" / "shards", out / "shards", dirs_exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    redone = run_ingest(root, out, size=(24, 32)).result
    assert other.ok and redone.report["ingested"] == 3 and len(redone.report["redone"]) == 3
    assert "written with other preprocessing" in redone.report["redone"][0]


def test_a_video_that_changed_since_it_was_ingested_is_ingested_again_and_only_that_one(tmp_path, ray_session):
    root, out = tmp_path / "archive", tmp_path / "out"
    for i in range(2):
        tiny_video(root / f"{i}.mp4", i)
    assert run_ingest(root, out, size=(24, 32)).result.ok
    first = {v["video_id"]: v for v in read_manifest(out)["videos"]}
    assert first["0.mp4"]["source_stamp"] == [(root / "0.mp4").stat().st_size, (root / "0.mp4").stat().st_mtime_ns]
    kept = (out / first["1.mp4"]["shard"]).stat().st_mtime_ns
    longer = dataclasses.replace(TINY, frames=2 * TINY.frames)  # the recorder went on writing it
    write_video(root / "0.mp4", render_video(longer, "train", 0).frames, TINY.fps)

    again = run_ingest(root, out, size=(24, 32))
    report = again.result.report
    assert report["ingested"] == 1 and report["skipped_already_done"] == 1
    assert [r for r in report["redone"] if "its source changed since it was ingested" in r] == report["redone"]
    assert len(report["redone"]) == 1 and "0.mp4.parquet: " in report["redone"][0]
    videos = {v["video_id"]: v for v in read_manifest(out)["videos"]}
    assert videos["0.mp4"]["num_frames"] == 2 * first["0.mp4"]["num_frames"]
    assert (out / videos["1.mp4"]["shard"]).stat().st_mtime_ns == kept, "the unchanged video was not written again"
    assert_one_row_per_frame(out)

    # A manifest from before sources were stamped: its videos count as unchanged and take their stamps now.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["videos"] = [{k: v for k, v in video.items() if k != "source_stamp"} for video in manifest["videos"]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    adopted = run_ingest(root, out, size=(24, 32)).result
    assert adopted.report["ingested"] == 0 and adopted.report["skipped_already_done"] == 2
    assert all(v["source_stamp"] for v in read_manifest(out)["videos"])


def test_with_settle_s_a_file_perhaps_still_being_written_is_deferred_not_failed(tmp_path, ray_session):
    root, out = tmp_path / "archive", tmp_path / "out"
    for i in range(2):
        tiny_video(root / f"{i}.mp4", i)
    hour_ago = (root / "0.mp4").stat().st_mtime - 3600
    os.utime(root / "0.mp4", (hour_ago, hour_ago))
    lines: list[str] = []
    first = ingest(IngestConfig(root=root, out=out, size=(24, 32), settle_s=300), echo=lines.append)
    assert first.ok and first.report["ingested"] == 1, "a deferred video is no failure"
    ((deferred),) = first.report["deferred"]
    assert deferred["video_id"] == "1.mp4" and "less than --settle-s 300" in deferred["reason"]
    assert any(line.startswith("deferred train/1.mp4: ") for line in lines)
    assert not read_manifest(out)["complete"], "the deferred video is still to ingest"

    os.utime(root / "1.mp4", (hour_ago, hour_ago))  # the camera finished it
    second = ingest(IngestConfig(root=root, out=out, size=(24, 32), settle_s=300), echo=lambda _: None)
    assert second.ok and second.report["ingested"] == 1 and second.report["deferred"] == []
    assert read_manifest(out)["complete"]


def test_a_video_deleted_while_the_run_goes_on_is_deferred_not_failed(tmp_path, ray_session, monkeypatch):
    from pipelines.ingest import run as ingest_run

    root, out, moved = tmp_path / "archive", tmp_path / "out", tmp_path / "1.mp4"
    for i in range(2):
        tiny_video(root / f"{i}.mp4", i)
    plan = ingest_run._plan

    def plan_then_delete(*args, **kwargs):  # a retention job takes 1.mp4 away once the run has planned it
        planned = plan(*args, **kwargs)
        (root / "1.mp4").rename(moved)
        return planned

    monkeypatch.setattr(ingest_run, "_plan", plan_then_delete)
    lines: list[str] = []
    first = ingest(IngestConfig(root=root, out=out, size=(24, 32)), echo=lines.append)
    assert first.ok and first.report["ingested"] == 1 and first.report["failed"] == []
    ((deferred),) = first.report["deferred"]
    assert deferred["video_id"] == "1.mp4" and deferred["reason"].startswith("deleted or moved while the run went on")
    assert any(line.startswith("deferred train/1.mp4: ") for line in lines)
    assert not read_manifest(out)["complete"], "still to ingest, not failed"

    monkeypatch.setattr(ingest_run, "_plan", plan)
    moved.rename(root / "1.mp4")
    second = ingest(IngestConfig(root=root, out=out, size=(24, 32)), echo=lambda _: None)
    assert second.ok and second.report["ingested"] == 1 and read_manifest(out)["complete"]
