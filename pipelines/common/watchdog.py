"""Ends a job's own local Ray however the job ends: normal exit, exception, Ctrl-C, SIGTERM, `timeout`, SIGKILL.

A job that starts its own Ray (no RAY_ADDRESS) owns a dozen processes: GCS, raylet, dashboard, agents, workers.
`ray.shutdown()` stops them when the job ends cleanly, but after a SIGKILL, an OOM kill or a scheduler's timeout
some of them (the dashboard and runtime-env agents ignore SIGTERM) live on, and a nightly cron on one machine
collects them night after night. So `init_ray` starts this watchdog beside the Ray it starts: a small process in a
session of its own (a kill of the job's process group does not reach it) that waits for the job to end, then ends
every process of that Ray session, politely first. Jobs that join a cluster never start one.

    python -m pipelines.common.watchdog --parent PID --session /tmp/ray/session_...
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")


def session_pids(session_dir: str | os.PathLike) -> list[int]:
    """Processes of a Ray session, this one excepted: those whose command line names the session, and those with a
    file open in its folder. Both are needed: Ray's agents retitle themselves (`ray::DashboardAgent`), so their
    command line no longer says which session they serve, but they keep their session's log files open."""
    folder = Path(session_dir)
    name = folder.name.encode()
    return [pid for pid in _pids() if pid != os.getpid() and (name in _cmdline(pid) or _has_open_file_in(pid, folder))]


def end_session(session_dir: str | os.PathLike, grace_s: float = 5.0) -> int:
    """SIGTERM to every process of the session, SIGKILL to those still there after `grace_s`; returns how many
    are left (0 unless a process is not ours to kill)."""
    pids = session_pids(session_dir)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + wait_s
        while (pids := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
    return len(session_pids(session_dir))


def watch(parent: int, session_dir: str, poll_s: float = 0.5) -> None:
    """Waits for the process `parent` to end (its pid reused later does not count), then ends the session."""
    started = _start_time(parent)
    while started is not None and _start_time(parent) == started and _alive(parent):
        time.sleep(poll_s)
    end_session(session_dir)


def start_watchdog(session_dir: str) -> subprocess.Popen:
    """Starts the watchdog of this process's own Ray session; it outlives this process just long enough."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.common.watchdog", "--parent", str(os.getpid()), "--session", session_dir],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],  # finds `pipelines` whatever the job's working directory
    )


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:  # ended while we looked, or not ours to read
        return b""


def _has_open_file_in(pid: int, folder: Path) -> bool:
    prefix = f"{folder}/"
    try:
        return any(os.readlink(fd).startswith(prefix) for fd in (PROC / str(pid) / "fd").iterdir())
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """True for a running process; a zombie (ended, not yet reaped) counts as ended."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid it names one process for good."""
    try:
        return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=int, required=True, help="the job's process id")
    parser.add_argument("--session", required=True, help="the Ray session's folder (/tmp/ray/session_...)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the job must not stop its cleaner
    watch(args.parent, args.session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
