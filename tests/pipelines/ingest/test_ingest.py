import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.synthetic import SynthConfig, write_corpus
from memae.datasets import Preprocess, decode, open_dataset
from memae.datasets.decode import DEFAULT_DECODER, resolve_decoder
from memae.datasets.records import ranges_from_labels
from pipelines.ingest.clips import read_video_frames, read_video_labels
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.run import ingest
from pipelines.ingest.shards import shard_metadata

from ..conftest import TINY, run_ingest

REPO = Path(__file__).resolve().parents[3]


def load_job(name):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses defined by the job look their module up there
    spec.loader.exec_module(module)
    return module


def read_manifest(folder):
    """manifest.json as users' scripts read it."""
    return json.loads((Path(folder) / "manifest.json").read_text())


def assert_round_trip(run, prep):
    """Every stored frame equals the frame decoded straight from the archive, by the decoder its shard names; every
    label is the archive's."""
    manifest = read_manifest(run.out)
    shards = {(v["split"], v["video_id"]): run.out / v["shard"] for v in manifest["videos"]}
    for record in open_dataset(manifest["dataset"], run.root):
        frames = read_video_frames(run.out, record.video_id, record.split)
        decoder = shard_metadata(shards[record.split, record.video_id])["decoder"]
        assert decoder == (resolve_decoder(run.config.decoder) if record.is_video_file else "pillow")
        expected = decode(record, prep, decoder=decoder if record.is_video_file else "auto")
        assert frames.dtype == np.uint8 and np.array_equal(frames, expected)
        labels = read_video_labels(run.out, record.video_id, record.split)
        assert np.array_equal(labels, record.frame_labels(len(expected)))


def test_ped2_round_trip_and_manifest(ingested_ped2):
    run = ingested_ped2
    assert run.result.ok and run.lines[0].startswith("dataset: ucsd-ped2 (found Test/UCSDped2.m)")
    assert_round_trip(run, Preprocess((32, 48), "gray"))
    manifest = read_manifest(run.out)
    assert manifest["complete"] and manifest["dataset"] == manifest["layout"] == "ucsd-ped2"
    assert manifest["preprocessing"]["size"] == [32, 48] and manifest["preprocessing"]["color"] == "gray"
    assert manifest["frame_shape"] == [32, 48, 1] and manifest["clip_len"] == 16
    assert manifest["software"]["memae"] and manifest["software"]["pyarrow"]
    assert manifest["counts"]["frames"] == 4 * TINY.frames and manifest["counts"]["done"] == 4
    for entry, video in zip(manifest["videos"], run.written, strict=True):
        assert (entry["video_id"], entry["split"], entry["num_frames"]) == (video.video_id, video.split, TINY.frames)
        assert entry["labelled"]
        assert entry["anomaly_ranges"] == [list(r) for r in ranges_from_labels(video.labels)]
        assert shard_metadata(run.out / entry["shard"])["video_id"] == video.video_id


def assert_one_row_per_frame(out):
    """Every shard holds each frame of its video exactly once, in order, and no other shard lies about: compressed
    sizes cannot show duplication (zstd shrinks repeated clips below any bound), rows can."""
    import pyarrow.parquet as pq

    manifest = read_manifest(out)
    done = [v for v in manifest["videos"] if v["status"] == "done"]
    for entry in done:
        frame = pq.read_table(out / entry["shard"], columns=["frame"]).column("frame").to_numpy()
        assert np.array_equal(frame, np.arange(entry["num_frames"])), entry["video_id"]
    assert sorted(p.relative_to(out).as_posix() for p in (out / "shards").rglob("*.parquet")) == sorted(
        v["shard"] for v in done)
    assert sum(pq.ParquetFile(out / v["shard"]).metadata.num_rows for v in done) == manifest["counts"]["frames"]


def test_storage_is_not_multiplied_by_the_clip_length(ingested_ped2):
    counts = read_manifest(ingested_ped2.out)["counts"]
    assert counts["frames"] == 4 * TINY.frames and counts["raw_bytes"] == 4 * TINY.frames * 32 * 48
    assert_one_row_per_frame(ingested_ped2.out)
    on_disk = sum(p.stat().st_size for p in (ingested_ped2.out / "shards").rglob("*.parquet"))
    assert on_disk == counts["bytes"] and on_disk <= 1.5 * counts["raw_bytes"]


def test_the_row_check_catches_a_clip_duplicating_shard(ingested_ped2, tmp_path):
    """What the check above guards against: a writer that stores every frame once per clip containing it."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "copy"
    shutil.copytree(ingested_ped2.out, out)
    shard = out / read_manifest(out)["videos"][0]["shard"]
    table = pq.read_table(shard)
    pq.write_table(pa.concat_tables([table] * 16), shard)
    with pytest.raises(AssertionError):
        assert_one_row_per_frame(out)


def test_image_column_is_raw_bytes_or_on_request_an_arrow_tensor(ingested_ped2, ingested_avenue, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_manifest(ingested_ped2.out)
    assert manifest["storage"]["encoding"] == "binary" and manifest["storage"]["compression"] == "none"
    shard = ingested_ped2.out / manifest["videos"][0]["shard"]
    field = pq.read_schema(shard).field("image")
    assert field.type == pa.binary(32 * 48) and json.loads(field.metadata[b"memae.shape"]) == [32, 48, 1]
    assert pq.ParquetFile(shard).metadata.row_group(0).column(2).compression == "UNCOMPRESSED"
    entry = read_manifest(ingested_avenue.out)["videos"][0]
    assert shard_metadata(ingested_avenue.out / entry["shard"])["decoder"] == DEFAULT_DECODER  # what scoring uses
    # the encoding written before issue 14, through decord: still written on request, and read back alike
    tensor = run_ingest(ingested_avenue.root, tmp_path / "tensor", size=(24, 32), encoding="tensor", decoder="decord")
    assert tensor.result.ok and read_manifest(tensor.out)["storage"]["encoding"] == "tensor"
    column = pq.read_schema(tensor.out / entry["shard"]).field("image").type
    assert isinstance(column, pa.FixedShapeTensorType) and list(column.shape) == [24, 32, 1]
    assert_round_trip(tensor, Preprocess((24, 32), "gray"))


def test_avenue_videos_round_trip_in_rgb_at_their_own_size(ingested_avenue):
    assert ingested_avenue.result.ok
    assert read_manifest(ingested_avenue.out)["frame_shape"] == [TINY.height, TINY.width, 3]
    assert_round_trip(ingested_avenue, Preprocess(None, "rgb"))


def _wait_for_idle_cpus(ray, timeout_s: float = 60.0) -> None:
    """Waits until the tests' Ray runs no task, so that what is on disk stops changing."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        assert time.monotonic() < deadline, "tasks of the interrupted ingest still running"
        time.sleep(0.2)


def test_resume_after_an_interrupted_run(tmp_path, ray_session):
    root = tmp_path / "archive"
    write_corpus("frames", root, SynthConfig(**{**TINY.__dict__, "train_videos": 3, "test_videos": 3}))
    out = tmp_path / "shards"

    def interrupt(entry):
        raise KeyboardInterrupt  # as if Ctrl-C arrived just after the first video finished

    with pytest.raises(KeyboardInterrupt):
        ingest(IngestConfig(root=root, out=out, size=(24, 32)), on_video=interrupt, echo=lambda line: None)
    manifest = read_manifest(out)
    done = [v for v in manifest["videos"] if v["status"] == "done"]
    assert not manifest["complete"] and 1 <= len(done) < 6
    _wait_for_idle_cpus(ray_session)  # a task already running when the driver stopped may still seal its shard
    visible = sorted(p.name for p in (out / "shards").rglob("*.parquet"))
    assert all(read_video_frames(out, v["video_id"], v["split"]).shape[0] == TINY.frames for v in done)
    stale = out / "shards" / "test" / ".01.parquet.tmp-deadbeef"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")

    rerun = run_ingest(root, out, size=(24, 32))
    # Every finished shard counts, also those finished after the manifest was last saved.
    assert rerun.result.ok and rerun.result.report["skipped_already_done"] == len(visible)
    assert rerun.result.report["found_on_disk"] == len(visible) - len(done)
    assert rerun.result.report["ingested"] == 6 - len(visible)
    assert not stale.exists() and any("half-written" in line for line in rerun.lines)
    assert read_manifest(out)["complete"] and len(visible) >= len(done)
    assert_round_trip(rerun, Preprocess((24, 32), "gray"))


def test_a_finished_output_is_skipped_entirely(ingested_ped2, tmp_path):
    again = run_ingest(ingested_ped2.root, ingested_ped2.out, dataset="auto", size=(32, 48))
    assert again.result.ok and again.result.report["skipped_already_done"] == 4 and again.result.report["ingested"] == 0


def test_each_kind_of_bad_input_is_reported_and_everything_else_ingested(tmp_path, ray_session, capsys):
    root = tmp_path / "avenue"
    write_corpus("avenue", root, SynthConfig(**{**TINY.__dict__, "train_videos": 3, "test_videos": 4}))
    train, test = root / "training_videos", root / "testing_videos"
    data = (train / "02.avi").read_bytes()
    (train / "02.avi").write_bytes(data[: len(data) // 2])  # truncated
    (train / "03.avi").write_bytes(b"")  # empty
    (test / "02.avi").write_bytes(b"RIFF\xf8\x0f\x00\x00AVI " + os.urandom(4084))  # corrupt, header intact
    labels = root / "ground_truth_demo" / "testing_label_mask"
    (labels / "1_label.mat").unlink()  # missing ground truth
    (labels / "3_label.mat").write_bytes((labels / "4_label.mat").read_bytes())
    vol_short = _short_vol_label(labels / "3_label.mat")  # labels of the wrong length
    expected = {
        ("train", "02"): (train / "02.avi", "truncated"),
        ("train", "03"): (train / "03.avi", "file is empty"),
        ("test", "01"): (labels / "1_label.mat", "label file not found"),
        ("test", "02"): (test / "02.avi", f"not a video {DEFAULT_DECODER} can read (corrupt or truncated)"),
        ("test", "03"): (vol_short, "20 frame labels for 03, which has 24 frames"),
    }
    if os.geteuid() != 0:  # root reads any file; the permission check itself is unit-tested in tests/datasets
        (test / "04.avi").chmod(0)
        expected[("test", "04")] = (test / "04.avi", "not readable")

    status = load_job("ingest").main(["--root", str(root), "--out", str(tmp_path / "out"), "--size", "24x32"])
    assert status == 1
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    failed = {(f["split"], f["video_id"]): f for f in report["failed"]}
    assert set(failed) == set(expected)
    for key, (path, reason) in expected.items():
        assert failed[key]["file"] == str(path) and reason in failed[key]["reason"]
    assert failed[("test", "02")]["detail"] and "Error" not in failed[("test", "02")]["reason"]
    console = capsys.readouterr().out
    assert all(f"FAILED  {s}/{v}: {path}" in console for (s, v), (path, _) in expected.items())
    manifest = read_manifest(tmp_path / "out")
    done = {(v["split"], v["video_id"]) for v in manifest["videos"] if v["status"] == "done"}
    assert done == {("train", "01"), ("test", "04")} - set(expected)
    assert not manifest["complete"]
    assert read_video_frames(tmp_path / "out", "01", "train").shape == (TINY.frames, 24, 32, 1)


def _short_vol_label(path):
    from scipy.io import savemat

    vol = np.empty((1, TINY.frames - 4), dtype=object)
    for i in range(vol.shape[1]):
        vol[0, i] = np.zeros((TINY.height, TINY.width), np.uint8)
    savemat(path, {"volLabel": vol})
    return path


def test_exit_status_zero_when_all_ingested_and_two_when_it_cannot_start(ingested_ped2, tmp_path, capsys):
    job = load_job("ingest")
    out = str(ingested_ped2.out)
    assert job.main(["--root", str(ingested_ped2.root), "--out", out, "--size", "32x48"]) == 0
    assert job.main(["--root", str(ingested_ped2.root), "--out", out, "--size", "64x64"]) == 2
    assert "use the same options to resume" in capsys.readouterr().err
    assert job.main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2


def test_help_of_both_jobs():
    for job, words in (("ingest", ["--dataset", "shanghaitech", "--split", "Exit status"]), ("synth", ["--layout"])):
        result = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), "--help"], capture_output=True)
        assert result.returncode == 0
        assert all(word in result.stdout.decode() for word in words)


def test_the_job_joins_a_running_cluster_and_resolves_relative_paths(ingested_ped2, ray_session, tmp_path):
    """As under `ray job submit`: RAY_ADDRESS names the cluster and the working directory is somewhere else."""
    from ray._private.state import jobs

    address = ray_session.get_runtime_context().gcs_address
    drivers_before = len(jobs())
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    root = os.path.relpath(ingested_ped2.root, tmp_path)
    command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--root", root, "--out", "out", "--size", "16x16"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = read_manifest(tmp_path / "out")
    assert manifest["complete"] and manifest["root"] == str(ingested_ped2.root)
    assert len(jobs()) == drivers_before + 1  # its driver registered with this cluster: it did not start its own


def test_synth_job_writes_the_layout_it_is_asked_for(tmp_path, capsys):
    from memae.datasets import detect_layout

    argv = ["--layout", "shanghaitech", "--out", str(tmp_path), "--frames", "20", "--size", "48x64"]
    assert load_job("synth").main([*argv, "--train-videos", "1", "--test-videos", "2", "--seed", "7"]) == 0
    assert detect_layout(tmp_path)[0] == "shanghaitech"
    assert "3 videos, 60 frames" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        load_job("synth").main(["--layout", "frames", "--out", str(tmp_path), "--size", "10x10"])
