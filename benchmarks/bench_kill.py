"""What a `kill -9` of a nightly ingest costs: videos done again by the rerun, and processes left behind.

An archive of --videos small videos (copies of a few rendered ones, in --cameras folders) is ingested by
`jobs/ingest.py` as a job of its own, starting its own Ray, as a cron job would. After --kill-after-s seconds the
job's process gets SIGKILL. The script then counts what is on disk (complete shards, and how many of them the
manifest had recorded), waits --settle-s seconds, lists the processes of the killed job's Ray session still alive,
reruns the same command to the end and reports how many videos it ingested again beyond those not finished at
the kill (the target is 0), and how many processes were left (the target is 0).

    .venv/bin/python benchmarks/bench_kill.py                       # 1,000 videos, kill after 25 s
    .venv/bin/python benchmarks/bench_kill.py --videos 200 --kill-after-s 12
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.synthetic import SynthConfig, render_video, write_video  # noqa: E402
from pipelines.common.watchdog import session_pids  # noqa: E402

RAY_TMP = Path("/tmp/ray")


def make_archive(root: Path, videos: int, cameras: int) -> None:
    """`videos` files under `cameras` folders, copies of four rendered videos (rendering each would dominate)."""
    cfg = SynthConfig(height=48, width=64, frames=24, seed=1)
    originals = [write_video(root.parent / f"original{i}.mp4", render_video(cfg, "train", i).frames, cfg.fps)
                 for i in range(4)]
    for i in range(videos):
        folder = root / f"cam{i % cameras:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(originals[i % 4], folder / f"{i:05d}.mp4")


def sessions_of(pid: int) -> list[Path]:
    """The Ray sessions a process started: Ray names them after the starting process's id."""
    return list(RAY_TMP.glob(f"session_2*_{pid}")) if RAY_TMP.is_dir() else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--cameras", type=int, default=10)
    parser.add_argument("--kill-after-s", type=float, default=25.0)
    parser.add_argument("--settle-s", type=float, default=30.0, help="how long after the kill processes may live")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "archive", Path(tmp) / "shards"
        make_archive(root, args.videos, args.cameras)
        command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--root", str(root), "--out", str(out),
                   "--dataset", "videos", "--size", "48x64", "--num-cpus", "2"]
        env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": tmp}
        started = time.perf_counter()
        job = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.kill_after_s)
        job.send_signal(signal.SIGKILL)
        job.wait()
        killed_at = time.perf_counter() - started
        time.sleep(2)  # a task finishing as its driver died renames its shard now or never
        on_disk = len(list((out / "shards").rglob("*.parquet"))) if (out / "shards").is_dir() else 0
        manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
        recorded = sum(v.get("status") == "done" for v in manifest.get("videos", []))
        time.sleep(max(0.0, args.settle_s - 2))
        left = [pid for session in sessions_of(job.pid) for pid in session_pids(session)]

        rerun = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        report = json.loads((out / "ingest_report.json").read_text())
        redone = report["ingested"] - (args.videos - on_disk)
        print(f"videos: {args.videos}; killed after {killed_at:.1f} s with {on_disk} complete shards on disk, "
              f"{recorded} of them in the manifest")
        print(f"processes of the killed job's Ray alive {args.settle_s:.0f} s after the kill: {len(left)}")
        print(f"rerun (exit {rerun.returncode}): {report['skipped_already_done']} already done "
              f"({report.get('found_on_disk', 0)} found on disk), {report['ingested']} ingested, "
              f"{len(report['failed'])} failed")
        print(f"videos ingested again although their shard was complete: {redone} (target 0)")
    return 0 if redone == 0 and not left and rerun.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
