"""A job that starts its own Ray leaves no process behind, however it ends; a job that joins a cluster never
touches the cluster's processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.common.watchdog import session_pids

REPO = Path(__file__).resolve().parents[3]
# A job in miniature: start (or join) Ray the way every job does, say which session, run a task, say so, then work
# until killed. The signal comes once the task is done: a job mid-way through its work, not one still starting Ray's
# first worker (which, on a loaded machine, can outlast the test's patience).
JOB = """
import sys, time
import ray
from pipelines.common.ray_runtime import init_ray
init_ray(num_cpus=1)
print(ray._private.worker.global_worker.node.get_session_dir_path(), flush=True)
ray.get(ray.remote(lambda: 1).remote())
print("working", flush=True)
time.sleep(600)
"""


def start_job(tmp_path: Path, wrapper: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    # Ctrl-C as from a terminal: a test run started in the background (`cmd &` in a script) ignores SIGINT, and its
    # children would inherit that and never see the signal.
    job = subprocess.Popen([*wrapper, sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    session = job.stdout.readline().strip()
    assert Path(session).name.startswith("session_"), "the job did not start Ray"
    assert job.stdout.readline().strip() == "working", "the job's first task did not run"
    return job, session


def wait_until_gone(session: str, limit_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + limit_s
    while (left := session_pids(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def job_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "timeout"])
def test_no_process_of_the_jobs_own_ray_outlives_it(tmp_path, how):
    # `timeout` learns that its time is up from a SIGALRM: sending it one expires it now, as a real expiry would
    # (tests/pipelines/ingest/kill.py), without waiting out a limit long enough for Ray to start on a loaded machine.
    wrapper = ["timeout", "-s", "TERM", "300"] if how == "timeout" else []
    job, session = start_job(tmp_path, wrapper, job_env())
    assert len(session_pids(session)) >= 3, "Ray's processes should be running while the job runs"
    job.send_signal(signal.SIGALRM if how == "timeout" else getattr(signal, how))
    job.wait(timeout=60)
    assert wait_until_gone(session) == [], f"left behind 30 s after the job ended ({how})"


def test_a_job_that_joins_a_cluster_leaves_the_cluster_running(tmp_path, ray_session):
    import ray

    env = {**job_env(), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    job, session = start_job(tmp_path, [], env)
    job.kill()
    job.wait(timeout=30)
    time.sleep(3)  # what a watchdog, had one been started, would have done by now
    assert session_pids(session), "the cluster's processes must survive a job that only joined it"
    assert ray.get(ray.remote(lambda: 2).remote()) == 2
