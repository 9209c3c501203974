"""End to end on a real two-node Ray cluster on this machine, built and torn down with infra/local/ scripts.

A head (3 logical CPUs) and a worker node (2) join with token authentication on; an MLflow server with its
authentication on runs on loopback. Jobs go in with `ray job submit`, exactly as on a cloud cluster, the MLflow
credentials in their runtime environment: ingest, then training with two DDP workers of 1.6 CPUs each (two cannot fit
on one node, so one lands on each), which registers a model; then scoring with it.

    .venv/bin/python -m pytest -q tests/infra/test_local_cluster.py      # 5 to 7 minutes on 2 busy cores
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from .conftest import INFRA, REPO, VENV_BIN

pytestmark = pytest.mark.slow

SCRIPTS = INFRA / "local"
PYTHON = str(VENV_BIN / "python")
MODEL = "memae-e2e"
TRAIN_VIDEOS, TEST_VIDEOS, FRAMES = 2, 2, 32
# Variables of a cluster the caller may be using; the test's commands must see only its own.
FOREIGN = ["RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
           "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_env(path: Path) -> dict[str, str]:
    """The `export NAME=VALUE` lines the start scripts write."""
    return dict(line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if line)


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]  # what `source $dir/env; source $dir/mlflow.env` gives a shell

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.dir)

    def ray_json(self, *argv: str) -> list[dict]:
        result = self.run("ray", *argv, "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def submit(self, name: str, *command: str, timeout: float = 300) -> str:
        """`ray job submit` (blocks until the job ends); returns the Ray job id. The job gets the tracking URI and
        credentials through the runtime environment that start-mlflow.sh wrote, as infra/README.md shows."""
        submission = f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            result = self.run("ray", "job", "submit", "--submission-id", submission, "--runtime-env",
                              str(self.dir / "mlflow-runtime-env.yaml"), "--", PYTHON, *command, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.run("ray", "job", "stop", submission)
            raise
        assert result.returncode == 0, f"{name} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        (job,) = [job for job in self.ray_json("list", "jobs") if job["submission_id"] == submission]
        assert job["status"] == "SUCCEEDED"
        return job["job_id"]


def script(name: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(SCRIPTS / name), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> None:
    out, _ = process.communicate(timeout=180)
    assert process.returncode == 0, out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Short and unique: Ray's socket paths under it must stay within 107 characters, and stop.sh ends only
    # processes whose command line names it.
    folder = Path(tempfile.mkdtemp(prefix="memae-e2e-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env |= {
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "MEMAE_CLUSTER_DIR": str(folder),
        "RAY_PORT": str(free_port()), "DASHBOARD_PORT": str(free_port()), "CLIENT_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "HEAD_CPUS": "3", "WORKER_CPUS": "2", "OBJECT_STORE_BYTES": str(512 * 2**20),
        # Nothing to drain at teardown (the jobs are done): stop without Ray's 30 s grace.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    try:
        starting = [script("start-mlflow.sh", env), script("start-head.sh", env)]
        for process in starting:
            finish(process)
        finish(script("start-worker.sh", env, "worker1"))
        yield Cluster(folder, env | read_env(folder / "env") | read_env(folder / "mlflow.env"))
    finally:
        stopped = subprocess.run(["bash", str(SCRIPTS / "stop.sh")], env=env, capture_output=True, text=True,
                                 timeout=180)
        leftovers = subprocess.run(["pgrep", "-f", f"{folder}/"], capture_output=True, text=True).stdout.split()
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not leftovers, f"processes left running: {leftovers}"


def require(job: str) -> None:
    if not (REPO / "jobs" / job).exists():
        pytest.skip(f"jobs/{job} is not written yet")


def http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_two_nodes_with_token_auth(cluster):
    """Both nodes joined; the job server answers with the token only."""
    nodes = cluster.ray_json("list", "nodes")
    assert sorted(node["is_head_node"] for node in nodes) == [False, True]
    jobs_api = f"{cluster.env['RAY_API_SERVER_ADDRESS']}/api/jobs/"
    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    assert http_status(jobs_api, None) == 401
    assert http_status(jobs_api, "wrong-token") == 403
    assert http_status(jobs_api, token) == 200


def test_mlflow_needs_credentials(cluster):
    search = f"{cluster.env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search, None) == 401


@pytest.fixture(scope="module")
def trained(cluster) -> str:
    """Synthesize a small archive, ingest it and train on the cluster; the Ray job id of the training."""
    require("train.py")
    archive, shards = cluster.dir / "archive", cluster.dir / "shards"
    synth = cluster.run(PYTHON, str(REPO / "jobs" / "synth.py"), "--layout", "ucsd-ped2", "--out", str(archive),
                        "--train-videos", str(TRAIN_VIDEOS), "--test-videos", str(TEST_VIDEOS), "--frames", str(FRAMES))
    assert synth.returncode == 0, synth.stderr
    cluster.submit("ingest", str(REPO / "jobs" / "ingest.py"), "--dataset", "ucsd-ped2", "--root", str(archive),
                   "--out", str(shards), "--size", "32x32", "--clip-len", "8")
    return cluster.submit(
        "train", str(REPO / "jobs" / "train.py"), "--shards", str(shards), "--preset", "cpu-tiny", "--epochs", "1",
        "--num-workers", "2", "--cpus-per-worker", "1.6", "--storage-path", str(cluster.dir / "runs"),
        "--register", MODEL, "--alias", "champion", "--seed", "0",
    )


def test_training_runs_ddp_on_both_nodes_and_registers(cluster, trained):
    workers = cluster.ray_json("list", "actors", "--filter", "class_name=RayTrainWorker", "--filter",
                               f"job_id={trained}", "--detail")
    nodes = {node["node_id"] for node in cluster.ray_json("list", "nodes")}
    assert len(workers) == 2
    assert {worker["node_id"] for worker in workers} == nodes

    from mlflow import MlflowClient

    uri = cluster.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry another test set process-wide
    credentials = {key: cluster.env[key] for key in ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]}
    with mock.patch.dict(os.environ, credentials):  # MLflow reads them at each request
        version = client.get_model_version_by_alias(MODEL, "champion")
        run = client.get_run(version.run_id)
    assert "train_loss" in run.data.metrics
    # Artifacts went up through the server (HTTP), into the server's own store.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert any((cluster.dir / "mlflow" / "artifacts").rglob("*")), "no artifact reached the server's store"


def test_scoring_writes_scores(cluster, trained):
    """Nightly-style scoring of the raw archive with the champion: a score for every frame of the test videos."""
    require("score.py")
    import pyarrow.parquet as pq

    scores = cluster.dir / "scores"
    cluster.submit(
        "score", str(REPO / "jobs" / "score.py"), "--model", f"models:/{MODEL}@champion", "--dataset", "ucsd-ped2",
        "--root", str(cluster.dir / "archive"), "--out", str(scores), "--incremental",
        "--settle-s", "0",  # the archive was written a moment ago: a nightly run would leave it for tomorrow
        # One CPU per scoring actor: by default the job sizes its actor from the whole cluster's CPUs, which no
        # single node of this cluster has.
        "--cpus-per-actor", "1",
    )
    table = pq.read_table(scores / "frame_scores.parquet")
    assert table.num_rows == TEST_VIDEOS * FRAMES
    assert set(table.column("split").to_pylist()) == {"test"}
