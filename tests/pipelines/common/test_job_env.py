"""Paths that would vanish with a submitted job's temporary working directory are refused, with the fix named."""

import json

import pytest

from pipelines.common.job_env import JOB_CONFIG_ENV, durable_path, submitted_with_working_dir
from pipelines.common.tracking import resolve_tracking_uri


@pytest.fixture
def submitted(monkeypatch):
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_relative_paths_are_resolved_locally(tmp_path, monkeypatch):
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not submitted_with_working_dir()
    assert durable_path("runs", "x", "--flag") == tmp_path / "runs"
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("store.db").startswith("file://")


def test_relative_paths_inside_a_submitted_job_are_errors(submitted):
    assert submitted_with_working_dir()
    with pytest.raises(ValueError, match="--storage-path"):
        durable_path("runs", "the checkpoint folder", "--storage-path")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        resolve_tracking_uri()
    assert resolve_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
