"""Ray Train runs on tiny shards: DDP replicas agree, resume continues, a killed worker recovers, the registry works."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from ray.train.v2.api.callback import UserCallback

from memae.checkpoint import load_checkpoint
from pipelines.common.config import save_config
from pipelines.train.config import TrainConfig
from pipelines.train.run import TrainResult, train

REPO = Path(__file__).resolve().parents[3]


class RecordReports(UserCallback):
    """Appends every worker's reported metrics (and any worker exception) to a JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(json.dumps({"workers": metrics}) + "\n")

    def after_exception(self, run_context, worker_exceptions):
        with open(self.path, "a") as f:
            f.write(json.dumps({"exception": {str(k): repr(v) for k, v in worker_exceptions.items()}}) + "\n")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tiny_config(shards: Path, folder: Path, **settings) -> TrainConfig:
    # Nothing held out unless a test says so: most tests here are about checkpoints and restarts, not the objective.
    return TrainConfig(**{"shards": str(shards), "preset": "cpu-tiny", "clip_stride": 4, "lr": 1e-3, "epochs": 2,
                          "seed": 3, "storage_path": str(folder / "runs"), "num_workers": 1, "cpus_per_worker": 0.45,
                          "holdout_fraction": 0.0, **settings})


@pytest.fixture
def base(tmp_path, tiny_train_shards, monkeypatch) -> TrainConfig:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tiny_config(tiny_train_shards, tmp_path)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_train_shards) -> TrainResult:
    """Three epochs in one go with `base`'s settings: where the interrupted and resumed runs must end. Nothing an
    epoch does depends on how many epochs follow, so its second epoch is also where a two-epoch run ends."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
        return train(tiny_config(tiny_train_shards, folder, name="straight", epochs=3))


def test_two_worker_ddp_trains_validates_and_registers(base, tmp_path, tiny_train_shards):
    log = tmp_path / "reports.jsonl"
    config = TrainConfig(**{**base.__dict__, "num_workers": 2, "val_shards": str(tiny_train_shards),
                            "register": "tiny-memae", "alias": "champion"})
    with pytest.raises(ValueError, match="--oracle"):  # choosing on the test videos of the corpus trained on
        train(config)
    config.oracle = True
    result = train(config, callbacks=[RecordReports(log)])

    reports = [r["workers"] for r in records(log) if "workers" in r]
    assert len(reports) == 2 and all(len(workers) == 2 for workers in reports)
    for workers in reports:  # DDP kept the two replicas identical after every epoch
        assert workers[0]["replica_checksum"] == workers[1]["replica_checksum"]
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert 0.0 <= result.history[-1]["oracle_val_auc_micro"] <= 1.0 and "val_auc_micro" not in result.history[-1]
    assert result.chosen == "best" and Path(result.checkpoint_path).is_file()
    assert result.registered_version == "1"

    model = mlflow.pyfunc.load_model("models:/tiny-memae@champion")
    clips = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 32, 32)).astype(np.float32)
    scores = model.predict(clips)
    assert list(scores.columns) == ["clip_score"] + [f"frame_{t:02d}" for t in range(8)]
    assert len(scores) == 3 and (scores["clip_score"] > 0).all()
    meta = model.metadata.metadata
    assert meta["preprocessing"]["height"] == 32 and meta["calibration"]["num_clips"] > 0

    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.params["model"] == "memae" and "train_loss" in run.data.metrics
    history = mlflow.tracking.MlflowClient().get_metric_history(result.mlflow_run_id, "mem_active_query_fraction")
    assert len(history) == 2
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(result.mlflow_run_id, "plots")}
    assert "plots/training_curves.png" in artifacts


def test_use_gpu_on_a_cluster_without_one_fails_at_once_naming_the_flag(base, ray_session):
    if ray_session.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("the cluster has a GPU")
    started = time.monotonic()
    with pytest.raises(ValueError, match="--use-gpu was given but the Ray cluster has no GPU"):
        train(TrainConfig(**{**base.__dict__, "use_gpu": True}))
    assert time.monotonic() - started < 60  # not Ray Train waiting for a GPU that never comes


def test_resume_continues_the_epoch_count_and_matches_an_uninterrupted_run(base, tmp_path, uninterrupted):
    train(TrainConfig(**{**base.__dict__, "name": "split", "epochs": 1}))
    log = tmp_path / "resumed.jsonl"
    resumed = train(TrainConfig(**{**base.__dict__, "name": "split", "resume": True}), callbacks=[RecordReports(log)])

    assert [r["workers"][0]["epoch"] for r in records(log)] == [2], "only the missing epoch is trained"
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # Same seed, same data order, optimizer state restored: the weights end where the uninterrupted run's did.
    assert resumed.history[-1]["train_loss"] == pytest.approx(uninterrupted.history[1]["train_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="already exists"):
        train(TrainConfig(**{**base.__dict__, "name": "split"}))


def ray_train_worker_pids() -> list[int]:
    """PIDs of the live Ray Train workers of this test session's Ray (the one run in progress), never those of another
    Ray on the machine: Ray's state API lists only its own cluster's actors."""
    import ray
    from ray.util.state import list_actors

    alive = list_actors(address=ray.get_runtime_context().gcs_address,
                        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [actor.pid for actor in alive]


def test_a_worker_killed_mid_run_is_restarted_from_the_last_checkpoint(base, tmp_path):
    log = tmp_path / "killed.jsonl"
    config = TrainConfig(**{**base.__dict__, "name": "killed", "epochs": 4, "clip_stride": 1, "max_failures": 2})
    outcome: dict = {}
    callbacks = [RecordReports(log)]
    thread = threading.Thread(target=lambda: outcome.setdefault("result", train(config, callbacks=callbacks)))
    thread.start()
    first_checkpoint = tmp_path / "runs" / "killed" / "epoch_0001"
    deadline = time.monotonic() + 240
    while not first_checkpoint.exists() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert first_checkpoint.exists() and thread.is_alive(), "the run should be mid-way when the worker is killed"
    victims = ray_train_worker_pids()
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)

    assert "result" in outcome, "training did not recover"
    assert [h["epoch"] for h in outcome["result"].history] == [1, 2, 3, 4]
    events = records(log)
    assert any("exception" in e for e in events), "the controller saw the worker die"
    epochs_reported = [e["workers"][0]["epoch"] for e in events if "workers" in e]
    assert epochs_reported[-1] == 4 and epochs_reported.count(1) == 1, "epoch 1 was not redone after the restart"


def test_held_out_videos_choose_the_epoch_without_labels_and_calibrate_the_alarm(base, tmp_path):
    # With the memory options that are off by default: k-means initialisation and a one-epoch warm-up.
    result = train(TrainConfig(**{**base.__dict__, "name": "holdout", "register": "tiny-held-out",
                                  "holdout_fraction": TrainConfig.holdout_fraction,  # the default
                                  "memory_init": "kmeans", "warmup_epochs": 1.0}))
    errors = [h["holdout_error"] for h in result.history]
    assert len(errors) == 2 and all(e > 0 for e in errors)
    assert all(0.0 <= h["pseudo_auc"] <= 1.0 for h in result.history)  # logged beside it, for a person to read
    assert all(0.0 <= h["mem_dead_query_fraction"] <= 1.0 for h in result.history)
    assert result.chosen == "best"
    chosen_epoch = int(Path(result.checkpoint_path).parent.name.removeprefix("epoch_"))
    assert errors[chosen_epoch - 1] == min(errors)
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.tags["memae.objective"] == "holdout_error"
    calibration = mlflow.pyfunc.load_model("models:/tiny-held-out/1").metadata.metadata["calibration"]
    # One of the two training videos was held out: the threshold comes from its frames, which training never saw.
    assert calibration["unit"] == "frame" and calibration["source"].startswith("1 held-out normal videos: Train00")
    assert calibration["num_values"] == 24 and calibration["frame_rule"] == "mean"


def test_a_killed_driver_resumes_to_the_same_model_as_an_uninterrupted_run(base, tmp_path, uninterrupted):
    """SIGKILL of the job's own process (what a scheduler's timeout or the OOM killer does), then `--resume`."""
    config = TrainConfig(**{**base.__dict__, "name": "killed-driver", "epochs": 3,
                            "tracking_uri": os.environ["MLFLOW_TRACKING_URI"]})
    save_config(config, tmp_path / "train.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)  # the job starts its own Ray, as a nightly cron job would
    command = [sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(tmp_path / "train.yaml")]
    job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    first_checkpoint = tmp_path / "runs" / "killed-driver" / "epoch_0001" / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 240
        while not first_checkpoint.exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert first_checkpoint.exists() and job.poll() is None, "the run should be mid-way when the driver is killed"
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # what is left of the killed job's own Ray
    assert not (tmp_path / "runs" / "killed-driver" / "epoch_0003").exists()

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300, start_new_session=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    epochs = re.findall(r"^epoch (\d+)/3 ", resumed.stdout, flags=re.M)
    assert epochs and int(epochs[0]) >= 2 and epochs[-1] == "3", resumed.stdout  # went on; did not start over
    final = load_checkpoint(tmp_path / "runs" / "killed-driver" / "epoch_0003" / "checkpoint.pt")
    assert final["extra"]["history"][-1]["train_loss"] == pytest.approx(uninterrupted.history[-1]["train_loss"],
                                                                         rel=1e-5)
