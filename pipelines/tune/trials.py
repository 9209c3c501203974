"""What runs for each trial of a sweep, and the callbacks that watch trials from the sweep's driver."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.experiment import Trial

from pipelines.train.config import TrainConfig
from pipelines.train.run import train
from pipelines.tune.plan import describe


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
