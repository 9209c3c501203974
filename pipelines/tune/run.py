"""Ray Tune sweeps over MemAE's memory size and entropy weight: each trial is one Ray Train run of pipelines.train.

    from pipelines.tune.run import sweep
    from pipelines.tune.config import TuneConfig
    result = sweep(TuneConfig(shards="data/shards", val_shards="data/shards", num_samples=6, epochs=3))

The objective is the training run's: frame AUC (micro) on labelled validation shards, else the reconstruction
error on held-out normal training videos. Each trial is a Tune function that builds its own TorchTrainer (named
after the sweep and the trial, checkpointing under the sweep's folder) and forwards every epoch's report to Tune,
so that ASHA can stop it between epochs. Each trial is a child MLflow run of one parent run for the sweep, which
gets the results table, the best trial's configuration and the memory-size/alpha plot (the paper's Figure 7).
An interrupted sweep resumes with Tune's restore: finished trials are kept, an unfinished one continues its Ray
Train run from its last checkpoint.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.experiment import Trial

from pipelines.common.config import flatten, save_config
from pipelines.common.ray_runtime import init_ray
from pipelines.common.tracking import configure_mlflow
from pipelines.ingest.corpus import Corpus
from pipelines.registry.pyfunc import register_checkpoint
from pipelines.train.config import TrainConfig
from pipelines.train.run import CHECKPOINT_FILE, calibrate, find_mlflow_run, storage_path_for, train, training_objective
from pipelines.tune.config import Space, TuneConfig
from pipelines.tune.plots import sweep_plot

MODES = {"val_auc_micro": "max", "holdout_error": "min"}
TRIAL_CPU = 0.01  # a trial only waits on its trainer: a token share (0 did not work in probes, ../shared/README.md)
TRAINER_DIR = "trials"  # under the sweep's folder: one Ray Train run per trial
PLOTTED = ("mem_dim", "alpha")
ENDED = ("finished", "stopped", "failed")  # a trial's end in the results table; others are pending or running


@dataclass(frozen=True)
class TrialPlan:
    """How trials share the cluster."""

    concurrency: int
    use_gpu: bool
    cpus_per_worker: float


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


# ---------------------------------------------------------------------------------------------------------------
# Planning


def sweep_objective(config: TuneConfig) -> str:
    """The trials' objective; a sweep refuses the training loss, which rewards a small alpha, not a good model."""
    objective = training_objective(config)
    if objective not in MODES:
        raise ValueError("a sweep needs an objective on unseen clips: give --val-shards or --holdout-fraction > 0")
    return objective


def plan_trials(config: TuneConfig, cluster: dict[str, float]) -> TrialPlan:
    """Trials at once and CPUs per training worker, fitted to the cluster.

    One whole CPU stays free for Ray Data's read tasks (without it a 2-CPU machine hangs); the concurrent trials
    share the rest, at most one CPU per worker. On GPUs each worker takes a GPU.
    """
    workers = max(config.num_workers, 1)
    use_gpu = config.use_gpu if config.use_gpu is not None else cluster.get("GPU", 0) >= 1
    spare = cluster.get("CPU", 1) - 1
    concurrency = config.max_concurrent_trials
    if concurrency is None:
        concurrency = max(1, int(spare // (workers * (config.cpus_per_worker or 1.0) + TRIAL_CPU)))
        if use_gpu:
            concurrency = min(concurrency, max(1, int(cluster.get("GPU", 0) // workers)))
    cpus = config.cpus_per_worker
    if cpus is None:
        cpus = min(1.0, math.floor((spare - TRIAL_CPU * concurrency) / (concurrency * workers) * 20) / 20)
    if cpus < 0.05 or concurrency * (workers * cpus + TRIAL_CPU) > spare + 1e-9:
        raise ValueError(f"{concurrency} trial(s) of {workers} worker(s) at {cpus:g} CPU do not fit "
                         f"{cluster.get('CPU', 0):g} CPUs with one left free for Ray Data")
    return TrialPlan(concurrency, use_gpu, cpus)


def tune_domain(space: Space, search: str, grid_points: int) -> Any:
    """The Tune search domain of one setting; a single value is a constant, not a dimension."""
    if search == "grid" or space.kind == "choice":
        values = space.grid(grid_points)
        if len(values) == 1:
            return values[0]
        return tune.grid_search(values) if search == "grid" else tune.choice(values)
    low, high = space.values
    if space.integer:
        sampler = tune.lograndint if space.kind == "loguniform" else tune.randint
        return sampler(int(low), int(high) + 1)
    return tune.loguniform(low, high) if space.kind == "loguniform" else tune.uniform(low, high)


def search_space(config: TuneConfig) -> dict[str, Any]:
    return {name: tune_domain(space, config.search, config.grid_points) for name, space in config.spaces().items()}


def num_samples(config: TuneConfig) -> int:
    return config.num_samples or (1 if config.search == "grid" else 8)


def planned_trials(config: TuneConfig) -> int:
    """How many trials the sweep runs in all. Tune creates them only as slots free up, so the trials of a stopped
    sweep are not all there to count."""
    grids = [d["grid_search"] for d in search_space(config).values() if isinstance(d, dict) and "grid_search" in d]
    return num_samples(config) * math.prod(len(values) for values in grids)


def tune_settings(config: TuneConfig, plan: TrialPlan) -> tune.TuneConfig:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    objective = sweep_objective(config)
    scheduler = None
    if config.scheduler == "asha":
        # max_t past the last epoch: ASHA stops only the trials it finds poor at a rung, while a trial that reaches
        # the end finishes its training run itself (registering its best checkpoint, closing its MLflow run).
        scheduler = ASHAScheduler(time_attr="epoch", metric=objective, mode=MODES[objective], max_t=config.epochs + 1,
                                  grace_period=config.grace_period, reduction_factor=config.reduction_factor)
    # The generator limits concurrency itself: Tune ignores max_concurrent_trials beside a generator.
    search = BasicVariantGenerator(max_concurrent=plan.concurrency, random_state=config.seed)
    return tune.TuneConfig(num_samples=num_samples(config), scheduler=scheduler, search_alg=search,
                           time_budget_s=60 * config.sweep_minutes if config.sweep_minutes else None)


def describe(settings: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


# ---------------------------------------------------------------------------------------------------------------
# Trial side


def run_trial(trial: dict[str, Any], sweep: dict[str, Any]) -> None:
    """One trial: the sweep's training settings with this trial's values, each epoch reported to Tune.

    The trainer's name is fixed by the trial id, so a trial restarted by a resumed sweep continues its own
    Ray Train run (and MLflow run) from the last checkpoint instead of starting over; for a new trial there is
    nothing to resume and `resume` starts it afresh.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    name = f"{sweep['name']}-{tune.get_context().get_trial_id()}"
    config = TrainConfig(**(sweep["train"] | trial | {"name": name, "resume": True}))
    train(config, callbacks=[TuneReportCallback()])


def trial_error(trial: Trial) -> str:
    """The last `SomeError: message` line of a failed trial's traceback (Tune wraps the worker's)."""
    local = Path(trial.error_file) if trial.error_file else None
    text = local.read_text() if local and local.exists() else trial.get_error() or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (named or lines or ["unknown error"])[-1][:300]


class TrialLines(tune.Callback):
    """A line per ended or failed trial, as it happens (the table at the end says which finished, which stopped)."""

    def __init__(self, objective: str, searched: list[str]) -> None:
        self.objective = objective
        self.searched = searched

    def _settings(self, trial: Trial) -> str:
        return describe({k: trial.config[k] for k in self.searched if k in trial.config})

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        result = trial.last_result
        value = result.get(self.objective)
        measured = f"{self.objective} {value:.4g}" if value is not None else f"no {self.objective}"
        print(f"trial {trial.trial_id} ended: {self._settings(trial)} -> {measured} at epoch {result.get('epoch')}",
              flush=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        print(f"trial {trial.trial_id} failed: {self._settings(trial)}: {trial_error(trial)}", flush=True)


def release_orphaned_placement_groups() -> int:
    """Removes this job's placement groups whose creating actor has died, freeing their CPUs; returns how many.

    Stopping a trial (ASHA, a time budget, Ctrl-C) kills its Ray Train controller, and the placement group holding
    the trial's workers outlives the controller for as long as this driver's job runs. Ray Train's own cleaner
    removes it through the state API, which fails without the dashboard and on a host running several Ray clusters
    (the cleaner cannot tell which one is its own: seen on the shared dev machine); the next trial then waits for
    those CPUs for ever. Who created a placement group is only in the GCS table, hence the private accessor.
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    removed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if (group.creator_job_id.hex() == job and group.creator_actor_dead and not group.is_detached
                and not ray.ActorID(group.creator_actor_id).is_nil()
                and group.state != gcs_pb2.PlacementGroupTableData.REMOVED):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(group.placement_group_id)))
            removed += 1
    return removed


class ReleaseStoppedTrials(tune.Callback):
    """Every few seconds of the sweep, frees the workers' CPUs of trials stopped mid-run (see above)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.last = 0.0

    def on_step_begin(self, iteration: int, trials: list[Trial], **info) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            release_orphaned_placement_groups()


# ---------------------------------------------------------------------------------------------------------------
# Results


def child_runs(experiment: str, parent_run_id: str, sweep_name: str) -> dict[str, Any]:
    """Trial id -> its MLflow run (nested under the sweep's parent run)."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", output_format="list")
    prefix = f"{sweep_name}-"
    return {run.data.tags["memae.run_name"].removeprefix(prefix): run for run in runs
            if run.data.tags.get("memae.run_name", "").startswith(prefix)}


def best_epoch(frame: pd.DataFrame, objective: str) -> pd.Series | None:
    """The epoch the trial's training run chose: best by the objective, ties to the later epoch (as Ray Train's
    checkpoint retention keeps it)."""
    if objective not in frame:
        return None
    measured = frame.dropna(subset=[objective])
    if measured.empty:
        return None
    sign = 1 if MODES[objective] == "max" else -1
    order = sorted(measured.index, key=lambda i: (sign * measured.at[i, objective], measured.at[i, "epoch"]))
    return measured.loc[order[-1]]


def trial_rows(experiment_path: str, objective: str, searched: list[str], runs: dict[str, Any]) -> list[dict]:
    """One row per trial: how it ended, its settings, its best epoch and that epoch's checkpoint; best first.

    A trial ended by Tune without error "finished" when its training run did (its MLflow run is FINISHED), else it
    was "stopped" from outside: by ASHA, a time budget or an interruption.
    """
    analysis = tune.ExperimentAnalysis(experiment_path)
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        run = runs.get(trial.trial_id)
        status = trial.status.lower()
        if trial.status == "TERMINATED":
            status = "finished" if run is not None and run.info.status == "FINISHED" else "stopped"
        elif trial.status == "ERROR":
            status = "failed"
        row: dict[str, Any] = {"trial": trial.trial_id, "status": status}
        row |= {k: trial.config.get(k) for k in searched}
        frame = frames.get(trial.trial_id, pd.DataFrame())
        row["epochs"] = int(frame["epoch"].max()) if "epoch" in frame and len(frame) else 0
        row[objective] = None
        best = best_epoch(frame, objective)
        if best is not None:
            row |= {objective: float(best[objective]), "best_epoch": int(best["epoch"]),
                    "train_loss": float(best["train_loss"])}
            row |= {k: float(best[k]) for k in ("val_auc_macro", "val_eer") if k in best}
            row["checkpoint"] = str(Path(best["checkpoint_path"]) / CHECKPOINT_FILE)
        row["mlflow_run"] = run.info.run_id if run is not None else None
        if status == "failed":
            row["error"] = trial_error(trial)
        rows.append(row)
    sign = -1 if MODES[objective] == "max" else 1
    return sorted(rows, key=lambda r: sign * r[objective] if r[objective] is not None else math.inf)


def close_stopped_runs(runs: dict[str, Any]) -> None:
    """Once Tune has returned no trial runs: a child run still marked running was stopped from outside before
    train() could end it, and says so."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in runs.values():
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")


def table_columns(objective: str, searched: list[str]) -> list[str]:
    extra = ["val_auc_macro", "val_eer"] if objective == "val_auc_micro" else []
    return ["trial", "status", *searched, "epochs", objective, "best_epoch", *extra, "train_loss"]


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def log_sweep_artifacts(rows: list[dict[str, Any]], table: str, best_config: TrainConfig | None, objective: str,
                        searched: list[str]) -> None:
    """The results table (CSV and Markdown), the best trial's training config and the sweep plot, on the parent."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pd.DataFrame(rows).to_csv(folder / "sweep_results.csv", index=False)
        (folder / "sweep_results.md").write_text(table + "\n")
        mlflow.log_artifact(str(folder / "sweep_results.csv"))
        mlflow.log_artifact(str(folder / "sweep_results.md"))
        if best_config is not None:
            save_config(best_config, folder / "best_config.yaml")
            mlflow.log_artifact(str(folder / "best_config.yaml"))
        if any(r[objective] is not None for r in rows):
            plotted = [k for k in searched if k in PLOTTED] or searched
            mlflow.log_artifact(str(sweep_plot(rows, objective, plotted, folder / "sweep.png")), "plots")


# ---------------------------------------------------------------------------------------------------------------
# Driver


def _new_sweep_name() -> str:
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _sweep_folder(config: TuneConfig) -> tuple[str, Path]:
    """(name, folder) of the sweep to start or resume; refuses to start over an existing one or resume none."""
    if "://" in config.storage_path:
        raise ValueError("sweeps keep their trials in a local or mounted shared folder: give a path as --storage-path")
    if config.resume and not config.name:
        raise ValueError("--resume needs --name: the sweep to continue")
    name = config.name or _new_sweep_name()
    folder = Path(storage_path_for(config)) / name
    if config.resume and not tune.Tuner.can_restore(str(folder)):
        raise ValueError(f"no sweep called {name!r} to resume in {folder.parent}")
    if not config.resume and folder.exists():
        raise ValueError(f"a sweep called {name!r} already exists in {folder.parent}: pass --resume to continue it")
    return name, folder


def _announce(name: str, config: TuneConfig, objective: str, plan: TrialPlan) -> None:
    what = (f"frame AUC (micro) on the labelled test split of {config.val_shards}" if objective == "val_auc_micro"
            else f"reconstruction error on the {config.holdout_fraction:g} of normal training videos held out")
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
            version = register_checkpoint(
                best["checkpoint"], config.register,
                corpus.model_preprocessing(clip_len, config.error_rule, config.frame_rule),
                calibration=calibrate(best["checkpoint"], corpus.path, clip_len, config),
                alias=config.alias,
            )
            print(f"registered trial {best['trial']}'s checkpoint as {config.register} v{version}", flush=True)
    return SweepResult(name=name, path=str(folder), objective=objective, mode=MODES[objective],
                       mlflow_run_id=parent.info.run_id, table=rows, best=best, complete=to_run == 0,
                       registered_version=version)
