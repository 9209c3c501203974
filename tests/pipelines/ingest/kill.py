"""Ending jobs mid-run the ways a machine or a scheduler does, for the tests that then rerun them (test_ingest_kill.py,
tests/pipelines/score/test_score_kill.py).

Each job starts its own Ray, as a cron job does, and is ended the moment its first per-video output is on disk (not
after a fixed sleep, which a loaded machine turns into "before it started" or "after it finished"):

- SIGKILL or SIGTERM to the job's process;
- `timeout -s TERM` running out: the wrapper learns that its time is up from a SIGALRM, so sending it one makes the
  timeout expire at that moment; the wrapper then sends SIGTERM to the job and to its process group, and exits with
  124, as on a real expiry.

The jobs of one test module run side by side: most of a job's time is Ray starting and stopping, which overlaps well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..common.test_watchdog import job_env, wait_until_gone

HOW = ["SIGKILL", "SIGTERM", "timeout"]
RAY_TMP = Path("/tmp/ray")
LEFT_AFTER_S = 30.0  # no process of a killed job's Ray may be alive this long after the kill


@dataclass
class Killed:
    """How a job ended, and what of its own Ray outlived it."""

    how: str
    log: Path
    returncode: int | None = None
    session: str | None = None  # the job's own Ray session; None when the job was never killed
    killed_at: float | None = None  # time.monotonic() of the kill
    left: list[int] = field(default_factory=list)  # processes of its Ray alive LEFT_AFTER_S after the kill

    @property
    def ended_by_the_kill(self) -> bool:
        """Killed mid-run, and the status is none of the job's own (0-4, pipelines/common/exit_codes.py).

        After SIGTERM it is -15, or 15 when Ray's handler in the driver turned the signal into an exit, or -6 when
        Ray's core worker aborted on the way out; a `timeout` that ran out says 124 whatever the job did.
        """
        if self.killed_at is None:
            return False
        if self.how == "timeout":
            return self.returncode == 124
        if self.how == "SIGKILL":
            return self.returncode == -signal.SIGKILL
        return self.returncode not in range(5)

    def describe(self) -> str:
        return f"{self.how}: exit status {self.returncode}, Ray session {self.session}\n{self.log.read_text()}"


def kill_mid_run(jobs: Mapping[str, tuple[list[str], Callable[[], int]]], logs: Path,
                 limit_s: float = 240) -> dict[str, Killed]:
    """Starts the jobs {how: (command, count of its outputs on disk)} side by side, ends each as `how` says once its
    count is 1 or more, then waits until every process of their Ray sessions has ended, or LEFT_AFTER_S after each
    kill. A job that ended by itself, or had no output within `limit_s`, comes back with `killed_at` None."""
    runs, procs, drivers = {}, {}, {}
    started = time.time()
    for how, (command, _) in jobs.items():
        runs[how] = Killed(how, logs / f"{how}.log")
        wrapper = ["timeout", "-s", "TERM", str(int(limit_s) + 60)] if how == "timeout" else []
        with open(runs[how].log, "w") as sink:
            procs[how] = subprocess.Popen([*wrapper, *command], env=job_env(), stdout=sink, stderr=subprocess.STDOUT)
        drivers[how] = _child(procs[how].pid) if wrapper else procs[how].pid
    try:
        waiting, deadline = set(jobs), time.monotonic() + limit_s
        while waiting and time.monotonic() < deadline:
            for how in sorted(waiting):
                if procs[how].poll() is not None:
                    waiting.discard(how)  # it ended by itself
                elif jobs[how][1]() >= 1:
                    sessions = ray_sessions_of(drivers[how], started)
                    procs[how].send_signal(signal.SIGALRM if how == "timeout" else getattr(signal, how))
                    runs[how].killed_at = time.monotonic()
                    runs[how].session = str(sessions[0]) if len(sessions) == 1 else None
                    waiting.discard(how)
            time.sleep(0.01)
        for job in procs.values():
            job.wait(timeout=60)
    finally:
        for how, job in procs.items():
            if job.poll() is None:  # something above failed: end the job and its wrapper
                with contextlib.suppress(ProcessLookupError):
                    os.kill(drivers[how], signal.SIGKILL)
                job.kill()
                job.wait(timeout=60)
    for how, run in runs.items():
        run.returncode = procs[how].returncode
        if run.session is not None:
            run.left = wait_until_gone(run.session, max(0.0, run.killed_at + LEFT_AFTER_S - time.monotonic()))
    return runs


def ray_sessions_of(pid: int, since: float) -> list[Path]:
    """The Ray sessions process `pid` started: Ray names each after the id of the process that started it; those
    made before `since` (time.time()) belong to an earlier process that had the same id."""
    return sorted(s for s in RAY_TMP.glob(f"session_2*_{pid}") if s.stat().st_mtime >= since - 1)


def _child(pid: int) -> int:
    """The one child of process `pid` (the job a `timeout` wrapper runs)."""
    for _ in range(500):
        children = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat") if _parent(p) == pid]
        if children:
            return children[0]
        time.sleep(0.01)
    raise AssertionError(f"process {pid} has no child")


def _parent(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
