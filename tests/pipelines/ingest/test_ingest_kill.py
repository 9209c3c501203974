"""A killed ingest loses no finished video and leaves no process behind.

The job starts its own Ray, as a cron job does, and its driver is ended mid-run (once its first shard is on disk) by
SIGKILL, by SIGTERM and by a `timeout` wrapper running out; the three jobs run side by side (kill.py). Then no
process of that Ray may be alive 30 s after the kill, and a rerun ingests exactly the videos whose shard was not
complete, whether or not the killed driver had recorded the others, and ends with the manifest and shards an
uninterrupted run writes.
"""

from __future__ import annotations

import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from pipelines.ingest.shards import read_shard

from ...conftest import tiny_video
from ..conftest import run_ingest
from .kill import HOW, LEFT_AFTER_S, Killed, kill_mid_run
from .test_ingest import REPO, assert_one_row_per_frame, read_manifest

VIDEOS, SIZE = 24, (24, 32)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """VIDEOS small videos in four camera folders: copies of three rendered ones (rendering each would dominate)."""
    base = tmp_path_factory.mktemp("kill-archive")
    originals = [tiny_video(base / f"original{i}.mp4", i) for i in range(3)]
    root = base / "archive"
    for i in range(VIDEOS):
        (root / f"cam{i % 4}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(originals[i % 3], root / f"cam{i % 4}" / f"{i:04d}.mp4")
    return root


@pytest.fixture(scope="module")
def reference(archive, tmp_path_factory, ray_session) -> Path:
    """What an uninterrupted ingest of the archive writes."""
    out = tmp_path_factory.mktemp("reference")
    assert run_ingest(archive, out, size=SIZE).result.ok
    return out


@pytest.fixture(scope="module")
def killed(archive, tmp_path_factory) -> dict[str, tuple[Killed, Path, int, int]]:
    """{how: (the killed job, its output folder, complete shards and manifest entries it left)}; the jobs run side by
    side (kill.py)."""
    base = tmp_path_factory.mktemp("killed")
    jobs = {how: ([sys.executable, str(REPO / "jobs" / "ingest.py"), "--root", str(archive), "--out", str(base / how),
                   "--size", "x".join(map(str, SIZE)), "--num-cpus", "1"], partial(shards, base / how))
            for how in HOW}
    runs = kill_mid_run(jobs, base)
    # Counted once the killed jobs' Ray is gone: no task of theirs can still rename a shard into place.
    return {how: (run, base / how, shards(base / how), recorded(base / how)) for how, run in runs.items()}


@pytest.mark.parametrize("how", HOW)
def test_a_killed_ingest_leaves_no_process_and_its_rerun_redoes_no_finished_video(killed, archive, reference, how):
    run, out, at_kill, recorded_at_kill = killed[how]
    assert run.ended_by_the_kill and run.session, run.describe()
    assert run.left == [], f"processes of the killed job's Ray alive {LEFT_AFTER_S:g} s after the kill ({how})"
    assert 1 <= at_kill < VIDEOS, f"killed with {at_kill} of {VIDEOS} shards written"
    assert not read_manifest(out)["complete"]

    rerun = run_ingest(archive, out, size=SIZE)  # on the tests' Ray
    report = rerun.result.report
    assert rerun.result.ok and report["ingested"] == VIDEOS - at_kill, "not one complete shard is written again"
    assert report["skipped_already_done"] == at_kill and report["found_on_disk"] == at_kill - recorded_at_kill
    assert entries(out) == entries(reference)
    for entry in read_manifest(out)["videos"]:
        frames, labels = read_shard(out / entry["shard"])
        expected_frames, expected_labels = read_shard(reference / entry["shard"])
        assert np.array_equal(frames, expected_frames) and np.array_equal(labels, expected_labels)
    assert_one_row_per_frame(out)
    assert not list(out.rglob(".*.tmp-*")), "a half-written file of the killed run is left"


def shards(out: Path) -> int:
    return len(list((out / "shards").rglob("*.parquet"))) if (out / "shards").is_dir() else 0


def recorded(out: Path) -> int:
    """Videos the manifest records as done."""
    return sum(v["status"] == "done" for v in read_manifest(out)["videos"]) if (out / "manifest.json").is_file() else 0


def entries(out: Path) -> list[dict]:
    """The manifest's per-video entries without their timings."""
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in read_manifest(out)["videos"]]
