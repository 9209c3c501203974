"""Planning a sweep: its objective, how trials share the cluster, and the search space Tune draws from."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ray import tune

from pipelines.common.resources import cpu_share, wants_gpu
from pipelines.train.run import training_objective
from pipelines.tune.config import Space, TuneConfig

MODES = {"val_auc_micro": "max", "oracle_val_auc_micro": "max", "pseudo_auc": "max", "holdout_error": "min"}
TRIAL_CPU = 0.01  # a trial only waits on its trainer: a token share (a trial asking for 0 CPUs was never scheduled)


@dataclass(frozen=True)
class TrialPlan:
    """How trials share the cluster."""

    concurrency: int
    use_gpu: bool
    cpus_per_worker: float


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
    use_gpu = wants_gpu(config.use_gpu, cluster)
    spare = cluster.get("CPU", 1) - 1
    concurrency = config.max_concurrent_trials
    if concurrency is None:
        concurrency = max(1, int(spare // (workers * (config.cpus_per_worker or 1.0) + TRIAL_CPU)))
        if use_gpu:
            concurrency = min(concurrency, max(1, int(cluster.get("GPU", 0) // workers)))
    cpus = config.cpus_per_worker
    if cpus is None:
        cpus = cpu_share(spare - TRIAL_CPU * concurrency, concurrency * workers, cap=1.0, minimum=0.0)
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
