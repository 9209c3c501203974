"""What a `kill -9` of a nightly job costs: videos done again by the rerun, and processes left behind.

An archive of --videos small videos (copies of a few rendered ones, in --cameras folders) is ingested by
`jobs/ingest.py` (--stage ingest) or scored by `jobs/score.py --incremental` with an untrained cpu-tiny model
(--stage score), as a job of its own, starting its own Ray, as a cron job would. After --kill-after-s seconds, or
once --kill-after-videos outputs are on disk, the job's process gets SIGKILL. The script then counts what is on disk
(complete shards or per-video score files, and how many of them the manifest or ledger had recorded), waits
--settle-s seconds, lists the processes of the killed job's Ray session still alive, reruns the same command to the
end and reports how many videos it did again beyond those not finished at the kill (the target is 0), and how many
processes were left (the target is 0).

    .venv/bin/python benchmarks/bench_kill.py                       # ingest 1,000 videos, kill after 25 s
    .venv/bin/python benchmarks/bench_kill.py --videos 200 --kill-after-s 12
    .venv/bin/python benchmarks/bench_kill.py --stage score --kill-after-videos 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.synthetic import SynthConfig, render_video, write_video  # noqa: E402
from pipelines.common.watchdog import session_pids  # noqa: E402

RAY_TMP = Path("/tmp/ray")
KILL_AFTER_S = {"ingest": 25.0, "score": 60.0}  # the score job imports torch and starts its model actor first


def make_archive(root: Path, videos: int, cameras: int) -> None:
    """`videos` files under `cameras` folders, copies of four rendered videos (rendering each would dominate)."""
    cfg = SynthConfig(height=48, width=64, frames=24, seed=1)
    originals = [write_video(root.parent / f"original{i}.mp4", render_video(cfg, "train", i).frames, cfg.fps)
                 for i in range(4)]
    for i in range(videos):
        folder = root / f"cam{i % cameras:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(originals[i % 4], folder / f"{i:05d}.mp4")


def make_model(path: Path) -> None:
    """An untrained cpu-tiny checkpoint: what is measured is which videos are scored, not how well."""
    import torch

    from memae.checkpoint import save_checkpoint
    from memae.presets import get_preset

    preset = get_preset("cpu-tiny")
    torch.manual_seed(0)
    save_checkpoint(path, preset.model.build(), preset.model,
                    config={"preset": preset.name, "error_rule": "l1", "frame_rule": "mean"})


def sessions_of(pid: int) -> list[Path]:
    """The Ray sessions a process started: Ray names them after the starting process's id."""
    return list(RAY_TMP.glob(f"session_2*_{pid}")) if RAY_TMP.is_dir() else []


@dataclass
class Stage:
    """A job to kill, and how to read what it left."""

    command: list[str]
    on_disk: Callable[[], int]  # complete per-video outputs
    recorded: Callable[[], int]  # of them, those the job's manifest or ledger had recorded
    rerun: Callable[[], tuple[int, int, int, int]]  # from the rerun's report: done, skipped, found on disk, failed


def ingest_stage(tmp: Path, root: Path) -> Stage:
    out = tmp / "shards"
    command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--root", str(root), "--out", str(out),
               "--dataset", "videos", "--size", "48x64", "--num-cpus", "2"]

    def on_disk() -> int:
        return len(list((out / "shards").rglob("*.parquet"))) if (out / "shards").is_dir() else 0

    def recorded() -> int:
        manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
        return sum(v.get("status") == "done" for v in manifest.get("videos", []))

    def rerun() -> tuple[int, int, int, int]:
        report = json.loads((out / "ingest_report.json").read_text())
        return (report["ingested"], report["skipped_already_done"], report.get("found_on_disk", 0),
                len(report["failed"]))

    return Stage(command, on_disk, recorded, rerun)


def score_stage(tmp: Path, root: Path) -> Stage:
    """As `ingest_stage`, for `jobs/score.py --incremental` (the nightly mode, the one that resumes)."""
    out, model = tmp / "scores", tmp / "tiny.pt"
    make_model(model)
    command = [sys.executable, str(REPO / "jobs" / "score.py"), "--model", str(model), "--dataset", "videos",
               "--root", str(root), "--out", str(out), "--incremental", "--settle-s", "0", "--num-cpus", "2",
               "--mlflow", "false", "--review", "false", "--worst-frames", "0"]

    def on_disk() -> int:
        return len(list((out / "scored").rglob("*.parquet"))) if (out / "scored").is_dir() else 0

    def recorded() -> int:
        if not (out / "ledger.sqlite").is_file():
            return 0
        with closing(sqlite3.connect(out / "ledger.sqlite")) as db:
            return db.execute("SELECT COUNT(*) FROM videos WHERE file IS NOT NULL").fetchone()[0]

    def rerun() -> tuple[int, int, int, int]:
        report = json.loads((out / "score_report.json").read_text())
        return (report["scored"], report["skipped_already_scored"], report.get("found_on_disk", 0),
                len(report["failed"]))

    return Stage(command, on_disk, recorded, rerun)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=sorted(KILL_AFTER_S), default="ingest")
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--cameras", type=int, default=10)
    parser.add_argument("--kill-after-s", type=float, default=None, help="default: 25 (ingest), 60 (score)")
    parser.add_argument("--kill-after-videos", type=int, default=None,
                        help="kill once this many outputs are on disk instead (start-up time varies with the load)")
    parser.add_argument("--settle-s", type=float, default=30.0, help="how long after the kill processes may live")
    args = parser.parse_args()
    kill_after_s = args.kill_after_s if args.kill_after_s is not None else KILL_AFTER_S[args.stage]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        make_archive(root, args.videos, args.cameras)
        stage = (ingest_stage if args.stage == "ingest" else score_stage)(Path(tmp), root)
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": tmp}
        started = time.perf_counter()
        job = subprocess.Popen(stage.command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.kill_after_videos is None:
            time.sleep(kill_after_s)
        else:
            while job.poll() is None and stage.on_disk() < args.kill_after_videos:
                time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
        job.wait()
        killed_at = time.perf_counter() - started
        time.sleep(2)  # an ingest task finishing as its driver died renames its shard now or never
        on_disk, recorded = stage.on_disk(), stage.recorded()
        time.sleep(max(0.0, args.settle_s - 2))
        left = [pid for session in sessions_of(job.pid) for pid in session_pids(session)]

        rerun = subprocess.run(stage.command, cwd=tmp, env=env, capture_output=True, text=True)
        done, skipped, found, failed = stage.rerun()
        redone = done - (args.videos - on_disk)
        verb = "ingested" if args.stage == "ingest" else "scored"
        print(f"{args.stage}: {args.videos} videos; killed after {killed_at:.1f} s with {on_disk} complete "
              f"{'shards' if args.stage == 'ingest' else 'per-video score files'} on disk, {recorded} of them "
              f"{'in the manifest' if args.stage == 'ingest' else 'in the ledger'}")
        print(f"processes of the killed job's Ray alive {args.settle_s:.0f} s after the kill: {len(left)}")
        print(f"rerun (exit {rerun.returncode}): {skipped} already done ({found} found on disk), {done} {verb}, "
              f"{failed} failed")
        print(f"videos {verb} again although their output was complete: {redone} (target 0)")
    return 0 if redone == 0 and not left and rerun.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
