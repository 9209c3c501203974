"""Ray Tune sweeps: search spaces and trial planning, then tiny sweeps on 2 CPUs: trials nest under one MLflow parent,
the best is picked by the stated objective, a failed trial does not end the sweep, an interrupted sweep resumes
without rerunning finished trials."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from jobs.tune import main
from pipelines.common.config import save_config
from pipelines.train.run import find_mlflow_run
from pipelines.tune.config import TuneConfig, parse_space
from pipelines.tune.plan import plan_trials, planned_trials, sweep_objective, tune_domain
from pipelines.tune.plots import sweep_plot
from pipelines.tune.results import child_runs, trial_rows
from pipelines.tune.run import TRAINER_DIR, sweep

REPO = Path(__file__).resolve().parents[3]

# ---------------------------------------------------------------------------------------------------------------
# Without Ray


def test_search_spaces_parse_and_grid_as_documented():
    assert parse_space("loguniform:1e-5,1e-2").grid(4) == [1e-5, 1e-4, 1e-3, 1e-2]
    assert parse_space("choice:250,500", integer=True).values == (250, 500)
    assert parse_space("loguniform:100,3000", integer=True).grid(3) == [100, 548, 3000]
    for bad in ("uniform:1", "loguniform:0,1", "choice:a,b", "between:1,2", "uniform:2,1"):
        with pytest.raises(ValueError, match="search space"):
            parse_space(bad)
    with pytest.raises(ValueError, match="whole numbers"):
        parse_space("choice:250.5", integer=True)


def test_default_space_is_the_issue_s_and_a_single_value_is_not_a_dimension():
    spaces = TuneConfig().spaces()
    assert list(spaces) == ["mem_dim", "alpha"]
    assert tune_domain(spaces["mem_dim"], "grid", 4) == {"grid_search": [250, 500, 1000, 2000, 3000]}
    alpha = tune_domain(spaces["alpha"], "random", 4)
    draws = np.array(alpha.sample(size=3000, random_state=0))
    assert draws.min() >= 1e-5 and draws.max() <= 1e-2
    assert 0.28 < np.mean(draws < 1e-4) < 0.39, "log-uniform: a third of the draws in each decade"
    assert tune_domain(parse_space("choice:0.001"), "random", 4) == 0.001
    assert planned_trials(TuneConfig(search="grid")) == 5 * 4 and planned_trials(TuneConfig()) == 8


def test_objective_is_validation_auc_else_held_out_videos_never_the_training_loss():
    assert sweep_objective(TuneConfig(val_shards="x")) == "val_auc_micro"
    assert sweep_objective(TuneConfig(val_shards="x", oracle=True)) == "oracle_val_auc_micro"
    assert sweep_objective(TuneConfig()) == "holdout_error"
    assert sweep_objective(TuneConfig(select_by="pseudo_auc")) == "pseudo_auc"
    with pytest.raises(ValueError, match="unseen clips"):
        sweep_objective(TuneConfig(holdout_fraction=0.0))


@pytest.mark.parametrize(
    ("settings", "cluster", "expected"),
    [
        ({}, {"CPU": 2}, (1, False, 0.95)),  # one whole CPU stays free for Ray Data's reads
        ({"max_concurrent_trials": 2}, {"CPU": 2}, (2, False, 0.45)),
        ({}, {"CPU": 16}, (14, False, 1.0)),
        ({"num_workers": 2}, {"CPU": 16, "GPU": 4}, (2, True, 1.0)),
    ],
)
def test_trials_are_planned_to_fit_the_cluster(settings, cluster, expected):
    plan = plan_trials(TuneConfig(**settings), cluster)
    assert (plan.concurrency, plan.use_gpu, plan.cpus_per_worker) == expected


def test_a_plan_the_cluster_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        plan_trials(TuneConfig(max_concurrent_trials=2, cpus_per_worker=0.9), {"CPU": 2})


def test_help_lists_the_sweep_and_the_training_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--mem-dim-space", "--alpha-space", "--search", "--scheduler", "--num-samples",
                 "--max-concurrent-trials", "--register", "--shards", "--val-shards", "--preset", "--max-steps"):
        assert flag in out


def test_sweep_plot_draws_a_panel_per_setting(tmp_path):
    trials = [{"mem_dim": m, "alpha": a, "val_auc_micro": v}
              for m, a, v in [(250, 1e-5, 0.7), (500, 1e-3, 0.8), (500, 1e-2, 0.75), (2000, 1e-4, 0.78)]]
    path = sweep_plot(trials + [{"mem_dim": 100, "alpha": 1e-4, "val_auc_micro": None}], "val_auc_micro",
                      ["mem_dim", "alpha"], tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# ---------------------------------------------------------------------------------------------------------------
# Sweeps on Ray (2 CPUs)


@pytest.fixture
def base(tmp_path, tiny_train_shards, monkeypatch) -> TuneConfig:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return TuneConfig(shards=str(tiny_train_shards), preset="cpu-tiny", clip_stride=4, lr=1e-3, epochs=2, seed=3,
                      max_failures=0, search="grid", mem_dim_space="choice:50,100", alpha_space="choice:0.0002",
                      storage_path=str(tmp_path / "sweeps"), tracking_uri=uri)


def children_of(parent_run_id: str) -> list:
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_grid_sweep_nests_trials_survives_failed_ones_picks_the_best_auc_and_registers(base, tiny_train_shards, capsys):
    with pytest.raises(ValueError, match="--oracle"):
        sweep(replace(base, name="refused", val_shards=str(tiny_train_shards)))
    # Three trials, two at a time: two learning rates that train and one that fails at once (a failed trial is as
    # cheap as can be)
    config = replace(base, name="grid", val_shards=str(tiny_train_shards), oracle=True, mem_dim_space="choice:50",
                     lr_space="choice:0.001,0.003,-1", max_concurrent_trials=2, register="tiny-sweep",
                     alias="champion")
    result = sweep(config)
    out = capsys.readouterr().out

    assert "objective oracle_val_auc_micro (max)" in out and result.objective == "oracle_val_auc_micro"
    assert result.complete and len(result.table) == 3
    finished = [r for r in result.table if r["status"] == "finished"]
    failed = [r for r in result.table if r["status"] == "failed"]
    assert sorted(r["lr"] for r in finished) == [0.001, 0.003] and all(r["mem_dim"] == 50 for r in finished)
    assert len(failed) == 1 and failed[0]["lr"] == -1 and "Invalid learning rate" in failed[0]["error"]
    assert out.count(" ended: ") == 2 and out.count(" failed: ") == 1, "a line per trial as it ends"

    # The best trial is the one whose best epoch has the highest AUC; its checkpoint is that epoch's.
    assert result.best["oracle_val_auc_micro"] == max(r["oracle_val_auc_micro"] for r in finished)
    assert result.table[0] == result.best
    assert Path(result.best["checkpoint"]).is_file()
    assert Path(result.best["checkpoint"]).parent.name == f"epoch_{result.best['best_epoch']:04d}"

    # Every trial is a child run of the sweep's parent, with its settings as params and metrics per epoch.
    client = MlflowClient()
    children = {run.info.run_id: run for run in children_of(result.mlflow_run_id)}
    assert set(children) == {r["mlflow_run"] for r in result.table}
    for row in finished:
        run = children[row["mlflow_run"]]
        assert run.info.status == "FINISHED" and float(run.data.params["lr"]) == row["lr"]
        assert len(client.get_metric_history(run.info.run_id, "oracle_val_auc_micro")) == 2
    assert all(children[r["mlflow_run"]].info.status == "FAILED" for r in failed)

    parent = client.get_run(result.mlflow_run_id)
    assert parent.data.tags["memae.objective"] == "oracle_val_auc_micro"
    assert parent.data.metrics["best_oracle_val_auc_micro"] == pytest.approx(result.best["oracle_val_auc_micro"])
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    artifacts |= {a.path for a in client.list_artifacts(result.mlflow_run_id, "plots")}
    assert {"sweep_results.csv", "sweep_results.md", "best_config.yaml", "plots/sweep.png"} <= artifacts
    table = Path(client.download_artifacts(result.mlflow_run_id, "sweep_results.md")).read_text()
    assert table.count("| failed |") == 1 and table.count("| finished |") == 2
    best_config = yaml.safe_load(Path(client.download_artifacts(result.mlflow_run_id, "best_config.yaml")).read_text())
    assert (best_config["mem_dim"], best_config["lr"]) == (50, result.best["lr"])
    assert best_config["name"] is None and best_config["mlflow_parent_run"] is None, "a config to retrain with"

    assert result.registered_version == "1"
    model = mlflow.pyfunc.load_model("models:/tiny-sweep@champion")
    assert model.metadata.metadata["model_spec"]["mem_dim"] == result.best["mem_dim"]
    assert model.metadata.metadata["calibration"]["num_clips"] > 0


def interrupt_mid_second_trial(job: subprocess.Popen, sweep_folder: Path) -> None:
    """Sends the sweep's process SIGINT (a Ctrl-C, which Tune catches, saving the sweep) once a second trial has
    checkpointed an epoch: one trial at a time, so the first trial has ended by then. Checkpoints, not Tune's
    result files, which are buffered and may reach the disk only as the sweep stops."""
    end = time.monotonic() + 600
    while time.monotonic() < end and job.poll() is None:
        if sum(any(trial.glob("epoch_*")) for trial in (sweep_folder / TRAINER_DIR).glob("*")) >= 2:
            job.send_signal(signal.SIGINT)
            return
        time.sleep(0.1)


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(base, tmp_path, capsys):
    # No labelled shards: held-out normal videos are the objective. Epochs are short: enough of them to interrupt one.
    # The first sweep runs as the job does, in a process of its own (with its own Ray) that gets the Ctrl-C.
    config = replace(base, name="resumable", epochs=8)
    save_config(config, tmp_path / "sweep.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, str(REPO / "jobs" / "tune.py"), "--config", str(tmp_path / "sweep.yaml")]
    job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        interrupt_mid_second_trial(job, Path(base.storage_path) / "resumable")
        first_out, _ = job.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)  # whatever of its Ray is left
    folder = Path(base.storage_path) / "resumable"
    mlflow.set_tracking_uri(config.tracking_uri)  # an earlier test may have pointed this process at its own store
    parent = find_mlflow_run(config.experiment, "resumable")
    table = trial_rows(str(folder), "holdout_error", list(config.spaces()),
                       child_runs(config.experiment, parent, "resumable"))

    assert job.returncode == 1, first_out[-3000:]  # not complete: nothing a retry of the same command fixes
    assert "objective holdout_error (min)" in first_out and "--resume" in first_out
    assert len(table) == 2, table
    done = next((r for r in table if r["status"] == "finished"), None)
    assert done is not None, (table, first_out[-3000:])
    cut = next(r for r in table if r is not done)
    # Cut short after checkpointing an epoch (which Tune itself may not have heard of yet when the Ctrl-C came)
    assert cut["status"] not in ("finished", "failed") and cut["epochs"] < 8, "the second trial was cut short"
    assert any((folder / TRAINER_DIR / f"resumable-{cut['trial']}").glob("epoch_*")), "it had checkpointed"
    checkpoint = Path(done["checkpoint"])
    written = checkpoint.stat().st_mtime_ns

    resumed = sweep(replace(config, resume=True))
    resumed_out = capsys.readouterr().out

    assert resumed.complete and [r["status"] for r in resumed.table] == ["finished", "finished"]
    assert resumed.mlflow_run_id == parent
    assert {r["mlflow_run"] for r in resumed.table} == {done["mlflow_run"], cut["mlflow_run"]}
    assert len(children_of(resumed.mlflow_run_id)) == 2
    # The finished trial did not run again; the interrupted one went on from its last checkpoint, not epoch 1.
    assert f"trial {done['trial']} ended" not in resumed_out and f"trial {cut['trial']} ended" in resumed_out
    assert checkpoint.stat().st_mtime_ns == written
    client = MlflowClient(base.tracking_uri)
    assert [m.step for m in client.get_metric_history(done["mlflow_run"], "epoch")] == list(range(1, 9))
    steps = [m.step for m in client.get_metric_history(cut["mlflow_run"], "epoch")]
    assert sorted(set(steps)) == list(range(1, 9)) and steps.count(1) == 1
    errors = [r["holdout_error"] for r in resumed.table]
    assert resumed.best["holdout_error"] == min(errors) and resumed.mode == "min"
