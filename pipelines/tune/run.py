"""Ray Tune sweeps over MemAE's memory size and entropy weight: each trial is one Ray Train run of pipelines.train.

    from pipelines.tune.run import sweep
    from pipelines.tune.config import TuneConfig
    result = sweep(TuneConfig(shards="data/shards", num_samples=6, epochs=3))

The objective is the training run's: frame AUC (micro) on labelled validation shards, else the reconstruction
error on held-out normal training videos. Each trial is a Tune function that builds its own TorchTrainer (named
after the sweep and the trial, checkpointing under the sweep's folder) and forwards every epoch's report to Tune,
so that ASHA can stop it between epochs. Each trial is a child MLflow run of one parent run for the sweep, which
gets the results table, the best trial's configuration and the memory-size/alpha plot (the paper's Figure 7).
An interrupted sweep resumes with Tune's restore: finished trials are kept, an unfinished one continues its Ray
Train run from its last checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray import tune

from pipelines.common.config import flatten, save_config
from pipelines.common.naming import new_run_name
from pipelines.common.ray_runtime import init_ray
from pipelines.common.tracking import configure_mlflow
from pipelines.ingest.corpus import Corpus
from pipelines.registry.pyfunc import register_checkpoint
from pipelines.train.config import TrainConfig
from pipelines.train.run import calibrate, find_mlflow_run, report_calibration, storage_path_for, validation_corpus
from pipelines.tune.config import TuneConfig
from pipelines.tune.plan import (
    MODES,
    TRIAL_CPU,
    TrialPlan,
    describe,
    plan_trials,
    planned_trials,
    search_space,
    sweep_objective,
    tune_settings,
)
from pipelines.tune.results import (
    child_runs,
    close_stopped_runs,
    log_sweep_artifacts,
    markdown_table,
    table_columns,
    trial_rows,
)
from pipelines.tune.trials import ReleaseStoppedTrials, TrialLines, release_orphaned_placement_groups, run_trial

TRAINER_DIR = "trials"  # under the sweep's folder: one Ray Train run per trial
ENDED = ("finished", "stopped", "failed")  # a trial's end in the results table; others are pending or running


@dataclass
class SweepResult:
    name: str
    path: str  # the Tune experiment folder
    objective: str
    mode: str
    mlflow_run_id: str  # the sweep's parent run
    table: list[dict[str, Any]]  # one row per trial, best first
    best: dict[str, Any] | None  # the best row; None when no trial measured the objective
    complete: bool  # False after an interruption or a time budget: --resume runs the rest
    registered_version: str | None = None


def _sweep_folder(config: TuneConfig) -> tuple[str, Path]:
    """(name, folder) of the sweep to start or resume; refuses to start over an existing one or resume none."""
    if "://" in config.storage_path:
        raise ValueError("sweeps keep their trials in a local or mounted shared folder: give a path as --storage-path")
    if config.resume and not config.name:
        raise ValueError("--resume needs --name: the sweep to continue")
    name = config.name or new_run_name("sweep")
    folder = Path(storage_path_for(config)) / name
    if config.resume and not tune.Tuner.can_restore(str(folder)):
        raise ValueError(f"no sweep called {name!r} to resume in {folder.parent}")
    if not config.resume and folder.exists():
        raise ValueError(f"a sweep called {name!r} already exists in {folder.parent}: pass --resume to continue it")
    return name, folder


def _announce(name: str, config: TuneConfig, objective: str, plan: TrialPlan) -> None:
    held_out = f"the {config.holdout_fraction:g} of normal training videos held out"
    what = {"val_auc_micro": f"frame AUC (micro) on the labelled test split of {config.val_shards}",
            "oracle_val_auc_micro": f"ORACLE: frame AUC on the test videos of {config.val_shards}, which are reported",
            "pseudo_auc": f"AUC between the clips of {held_out} and sped-up or patched copies of them",
            "holdout_error": f"reconstruction error on {held_out}"}[objective]
    spaces = ", ".join(f"{k} {s.kind}:{','.join(f'{v:g}' for v in s.values)}" for k, s in config.spaces().items())
    print(f"sweep {name}: objective {objective} ({MODES[objective]}): {what}", flush=True)
    print(f"{config.search} search over {spaces}; {config.scheduler} scheduler; up to {plan.concurrency} trial(s) "
          f"at once, {max(config.num_workers, 1)} worker(s) x {plan.cpus_per_worker:g} CPU"
          f"{' + 1 GPU' if plan.use_gpu else ''} each", flush=True)


def _tuner(config: TuneConfig, name: str, folder: Path, trial_train: TrainConfig, plan: TrialPlan) -> tune.Tuner:
    """A new sweep's Tuner, or the saved one restored: ended trials kept, unfinished and failed ones run again."""
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep={"name": name, "train": asdict(trial_train)}), {"CPU": TRIAL_CPU}
    )
    if config.resume:
        return tune.Tuner.restore(str(folder), trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=search_space(config),
        tune_config=tune_settings(config, plan),
        run_config=tune.RunConfig(name=name, storage_path=str(folder.parent), verbose=0,
                                  failure_config=tune.FailureConfig(fail_fast=False),
                                  callbacks=[TrialLines(sweep_objective(config), list(config.spaces())),
                                             ReleaseStoppedTrials()]),
    )


def retrain_config(config: TuneConfig, best: dict[str, Any]) -> TrainConfig:
    """The best trial's settings as a training job of their own: `python jobs/train.py --config best_config.yaml`."""
    return config.train_config(**{k: best[k] for k in config.spaces()}, name=None, resume=False, register=None,
                               alias=None, mlflow_parent_run=None, experiment=TrainConfig().experiment)


def sweep(config: TuneConfig) -> SweepResult:
    """Runs (or resumes) the sweep on the cluster Ray is connected to, tracks it in MLflow, optionally registers."""
    import mlflow

    if not config.shards:
        raise ValueError("no --shards given: ingest a corpus first (python jobs/ingest.py ...)")
    objective, searched = sweep_objective(config), list(config.spaces())
    if config.scheduler == "asha" and config.val_every != 1:
        raise ValueError("ASHA compares trials after every epoch: it needs --val-every 1")
    corpus = Corpus.open(config.shards)
    clip_len = config.preset_spec().clip_len
    corpus.check_fits(clip_len)
    validation_corpus(config.train_config(), corpus)  # refused before any trial when it is the corpus trained on
    name, folder = _sweep_folder(config)

    init_ray()
    tracking_uri = configure_mlflow(config.tracking_uri, config.experiment)
    plan = plan_trials(config, ray.cluster_resources())
    parent_id = find_mlflow_run(config.experiment, name) if config.resume else None
    tags = {"memae.run_name": name, "memae.objective": objective, "memae.kind": "sweep"}
    if config.mlflow_parent_run:
        tags["mlflow.parentRunId"] = config.mlflow_parent_run
    with mlflow.start_run(run_id=parent_id, run_name=name, tags=tags) as parent:
        if parent_id is None:
            mlflow.log_params({k: v for k, v in flatten(config).items() if v is not None})
            mlflow.log_params({"trials_at_once": plan.concurrency, "trial_cpus_per_worker": plan.cpus_per_worker,
                               "trial_use_gpu": plan.use_gpu})
        folder.mkdir(parents=True, exist_ok=True)
        save_config(replace(config, name=name, resume=False), folder / "tune_config.yaml")  # what --resume needs
        _announce(name, config, objective, plan)
        trial_train = config.train_config(
            name=None, resume=False, register=None, alias=None, storage_path=str(folder / TRAINER_DIR),
            tracking_uri=tracking_uri, mlflow_parent_run=parent.info.run_id, cpus_per_worker=plan.cpus_per_worker,
            use_gpu=plan.use_gpu,
        )
        _tuner(config, name, folder, trial_train, plan).fit()
        release_orphaned_placement_groups()  # of trials stopped as the sweep ended, before anything else runs

        runs = child_runs(config.experiment, parent.info.run_id, name)
        rows = trial_rows(str(folder), objective, searched, runs)
        close_stopped_runs(runs)
        to_run = planned_trials(config) - sum(r["status"] in ENDED for r in rows)
        best = rows[0] if rows and rows[0][objective] is not None else None
        table = markdown_table(rows, table_columns(objective, searched))
        log_sweep_artifacts(rows, table, retrain_config(config, best) if best else None, objective, searched)
        mlflow.set_tag("memae.sweep_complete", str(to_run == 0).lower())
        print(table, flush=True)
        version = None
        if best is not None:
            mlflow.log_metric(f"best_{objective}", best[objective])
            mlflow.set_tags({"memae.best_trial": best["trial"], "memae.checkpoint": best["checkpoint"]})
            print(f"best trial {best['trial']} by {objective} ({MODES[objective]}): "
                  f"{describe({k: best[k] for k in searched})} -> {best[objective]:.4g} at epoch {best['best_epoch']}",
                  flush=True)
        if to_run:
            print(f"sweep {name} stopped with {to_run} of {planned_trials(config)} trial(s) to run; continue it: "
                  f"python jobs/tune.py --config {folder / 'tune_config.yaml'} --resume", flush=True)
        elif best is None:
            print(f"sweep {name}: no trial measured {objective}", flush=True)
        elif config.register:
            calibration = calibrate(best["checkpoint"], corpus, clip_len, config.train_config())
            report_calibration(calibration, lambda line: print(line, flush=True))
            version = register_checkpoint(
                best["checkpoint"], config.register,
                corpus.model_preprocessing(clip_len, config.error_rule, config.frame_rule),
                calibration=calibration, alias=config.alias,
            )
            print(f"registered trial {best['trial']}'s checkpoint as {config.register} v{version}", flush=True)
    return SweepResult(name=name, path=str(folder), objective=objective, mode=MODES[objective],
                       mlflow_run_id=parent.info.run_id, table=rows, best=best, complete=to_run == 0,
                       registered_version=version)
