"""The design card's headline, for real: `ray start --head`, then `ray job submit -- python jobs/train.py`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_processes_mentioning(marker: str) -> None:
    """Stops only the Ray processes of this test's head (their command lines name its temp dir); `ray stop`
    would stop every Ray on the machine."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture
def ray_head(tmp_path_factory):
    """A real head node on this machine, with token authentication on (Ray's default for local clusters)."""
    temp_dir = f"/tmp/memae-head-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        ["ray", "start", "--head", "--num-cpus=2", f"--port={port}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--object-store-memory=300000000", f"--temp-dir={temp_dir}",
         "--include-dashboard=true", "--disable-usage-stats",
         # Own ports for the per-node agents: the defaults may be held by another Ray on this machine, and then
         # the job agent never starts ("No available agent to submit job").
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        env=env, check=True, capture_output=True, timeout=180,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        kill_processes_mentioning(temp_dir)


@pytest.mark.slow
def test_ray_job_submit_trains_and_registers(ray_head, tiny_train_shards, tmp_path):
    address, env = ray_head
    db = tmp_path / "mlflow.db"
    runtime_env = json.dumps({"env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}})
    job_id = f"memae-train-{time.monotonic_ns()}"
    command = ["python", "jobs/train.py", "--shards", str(tiny_train_shards), "--preset", "cpu-tiny", "--epochs", "1",
               "--max-steps", "3", "--cpus-per-worker", "0.45", "--storage-path", str(tmp_path / "runs"),
               "--register", "submitted-memae", "--alias", "champion"]
    for _ in range(30):  # a fresh head's job agent takes a few seconds to accept submissions
        submit = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--submission-id", job_id, "--no-wait",
             "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--", *command],
            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        if submit.returncode == 0 or "No available agent" not in submit.stderr + submit.stdout:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    logs = subprocess.run(["ray", "job", "logs", "--address", address, "--follow", job_id],
                          env=env, capture_output=True, text=True, timeout=600)
    status = subprocess.run(["ray", "job", "status", "--address", address, job_id],
                            env=env, capture_output=True, text=True, timeout=60)
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs.stdout[-3000:] + status.stdout

    # Both URIs: the registry would otherwise default to whatever an earlier test set process-wide.
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    version = client.get_model_version_by_alias("submitted-memae", "champion")
    assert int(version.version) == 1
    assert list((tmp_path / "runs").glob("*/epoch_0001/checkpoint.pt")), "the checkpoint went to the absolute path"
