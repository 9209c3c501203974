"""MemAE training with Ray Train: DDP over workers, checkpoints every epoch, MLflow tracking, registry.

    from pipelines.train.run import train
    from pipelines.train.config import TrainConfig
    result = train(TrainConfig(shards="data/shards", epochs=5, register="memae-demo", alias="champion"))

Each worker reads its own shard of the clip dataset. Rank 0 validates, writes the checkpoint and logs metrics to the
MLflow run that the driver opened; the driver then draws the curves and registers the chosen checkpoint.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train.v2.api.callback import UserCallback

from memae.calibration import calibrate_errors
from memae.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, unwrap
from memae.evaluation import VideoScorer, model_clip_errors, video_metrics
from memae.presets import ModelSpec
from memae.training import train_one_epoch
from memae.transforms import clips_to_tensor
from pipelines.common.config import flatten, save_config
from pipelines.common.job_env import durable_path
from pipelines.common.ray_runtime import init_ray
from pipelines.common.tracking import configure_mlflow
from pipelines.ingest.clips import clip_dataset, iter_clips
from pipelines.ingest.corpus import Corpus
from pipelines.registry.pyfunc import register_checkpoint
from pipelines.train.config import TrainConfig
from pipelines.train.plots import training_curves

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainResult:
    run_name: str
    mlflow_run_id: str
    checkpoint_path: str  # the checkpoint the run chose (best by validation AUC, else the last)
    chosen: str  # "best" or "last"
    epochs_done: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    registered_version: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Worker side


def _stop_everywhere(local_stop: bool) -> bool:
    """True on every worker as soon as one wants to stop, so no DDP rank waits for a step the others skip."""
    if not (dist.is_available() and dist.is_initialized()):
        return local_stop
    flag = torch.tensor([1.0 if local_stop else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _validate(model: torch.nn.Module, loop: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Frame AUC over labelled validation clips (the paper's protocol), or the mean error on held-out normal clips."""
    config = TrainConfig(**loop["config"])
    scorer = VideoScorer(clip_len=loop["clip_len"], frame_rule=config.frame_rule)
    model = unwrap(model)
    model.eval()
    errors = []
    for batch in ray.train.get_dataset_shard("val").iter_batches(
        batch_size=config.resolved_batch_size * 2, batch_format="numpy"
    ):
        batch_errors = model_clip_errors(model, clips_to_tensor(batch["clip"]).to(device), config.error_rule)
        scorer.add(batch["video_id"], batch["start"], batch_errors)
        errors.append(batch_errors)
    if loop["objective"] == "holdout_error":
        return {"holdout_error": float(torch.cat(errors).mean())}
    labels = {vid: np.asarray(lab) for vid, lab in loop["val_labels"].items()}
    metrics = video_metrics(scorer.frame_errors(loop["val_num_frames"]), labels)
    return {"val_auc_micro": metrics.auc_micro, "val_auc_macro": metrics.auc_macro, "val_eer": metrics.eer}


def checkpoint_score(metrics: dict[str, float], objective: str) -> float:
    """Higher is better. Epochs without validation score lowest, so retention keeps the best validated one
    (Ray always keeps the latest too)."""
    if objective == "val_auc_micro":
        return metrics.get("val_auc_micro", -1.0)
    if objective == "holdout_error":
        return -metrics["holdout_error"] if "holdout_error" in metrics else -np.finfo(np.float32).max
    return -metrics["train_loss"]


def epoch_line(metrics: dict[str, float], epochs: int) -> str:
    """One progress line per epoch: the numbers a person watches."""
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"loss {metrics['train_loss']:.5f}",
             f"{metrics['train_clips_per_s']:.1f} clips/s"]
    if "mem_active_query_fraction" in metrics:
        parts.append(f"memory: {100 * metrics['mem_active_query_fraction']:.0f}% queries active, "
                     f"{metrics['mem_mean_active_slots_when_active']:.1f} slots each, "
                     f"{metrics['mem_distinct_slots']:.0f} slots used")
    if "val_auc_micro" in metrics:
        parts.append(f"val AUC {metrics['val_auc_micro']:.3f} (macro {metrics['val_auc_macro']:.3f})")
    if "holdout_error" in metrics:
        parts.append(f"held-out error {metrics['holdout_error']:.5f}")
    return " | ".join(parts)


def _log_to_mlflow(loop: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=loop["tracking_uri"])
    stamp = int(time.time() * 1000)
    client.log_batch(
        loop["run_id"],
        metrics=[Metric(key, float(value), stamp, step) for key, value in metrics.items() if np.isfinite(value)],
    )


def train_loop_per_worker(loop: dict[str, Any]) -> list[dict[str, float]]:
    """The per-worker loop: resume from Ray Train's checkpoint, train epochs, report and checkpoint each one."""
    config = TrainConfig(**loop["config"])
    spec = ModelSpec(**loop["model_spec"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(loop["torch_threads"])
    torch.manual_seed(config.seed)

    model = spec.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start_epoch, steps_done, history = 0, 0, []
    best = {"score": -np.inf, "epoch": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            data = load_checkpoint(Path(directory) / CHECKPOINT_FILE)
        model.load_state_dict(data["model"])
        optimizer.load_state_dict(data["optimizer"])
        start_epoch, steps_done = data["epoch"], data["extra"]["steps"]
        history, best = data["extra"]["history"], data["extra"]["best"]
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")

    for epoch in range(start_epoch, config.epochs):

        def should_stop(steps_in_epoch: int, done_before: int = steps_done) -> bool:
            out_of_steps = config.max_steps is not None and done_before + steps_in_epoch >= config.max_steps
            out_of_time = loop["deadline"] is not None and time.time() >= loop["deadline"]
            return _stop_everywhere(out_of_steps or out_of_time)

        batches = (
            clips_to_tensor(batch["clip"])
            for batch in train_shard.iter_torch_batches(
                batch_size=config.resolved_batch_size,
                local_shuffle_buffer_size=loop["shuffle_buffer"],
                local_shuffle_seed=config.seed * 1000 + epoch,
            )
        )
        result = train_one_epoch(
            model, optimizer, batches, alpha=config.effective_alpha, device=device, bf16=config.bf16,
            should_stop=should_stop,
        )
        steps_done += result.steps
        metrics = {"epoch": epoch + 1, "steps": steps_done, **result.metrics()}
        # Equal on every rank while DDP keeps the replicas in sync; reported per worker, not logged to MLflow.
        replica_checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        validate_now = loop["objective"] != "train_loss" and (
            (epoch + 1) % config.val_every == 0 or result.stopped_early or epoch + 1 == config.epochs
        )
        if rank == 0 and validate_now:
            metrics.update(_validate(model, loop, device))
        score = checkpoint_score(metrics, loop["objective"])
        if score > best["score"]:
            best = {"score": score, "epoch": epoch + 1}
        history.append(metrics)
        with tempfile.TemporaryDirectory() as directory:
            ckpt = None
            if rank == 0:
                save_checkpoint(
                    Path(directory) / CHECKPOINT_FILE,
                    model,
                    spec,
                    optimizer,
                    epoch + 1,
                    config=loop["config"],
                    extra={"steps": steps_done, "history": history, "best": best},
                )
                _log_to_mlflow(loop, metrics, step=epoch + 1)
                print(epoch_line(metrics, config.epochs), flush=True)
                ckpt = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(
                {**metrics, "score": score, "replica_checksum": replica_checksum},
                checkpoint=ckpt,
                checkpoint_dir_name=f"epoch_{epoch + 1:04d}",
            )
        if result.stopped_early:
            break
    return history


# ---------------------------------------------------------------------------------------------------------------
# Driver side


def training_objective(config: TrainConfig) -> str:
    """What "best" means for this run: labelled validation AUC, else held-out normal error, else the train loss."""
    if config.val_shards:
        return "val_auc_micro"
    return "holdout_error" if config.holdout_fraction > 0 else "train_loss"


def split_holdout(video_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(held out, kept): whole videos, chosen by seed; at least one of each when there are two videos or more."""
    if len(video_ids) < 2:
        raise ValueError(f"holding out videos needs at least 2 training videos, the corpus has {len(video_ids)}")
    order = np.random.default_rng(seed).permutation(len(video_ids))
    count = min(len(video_ids) - 1, max(1, round(fraction * len(video_ids))))
    held = sorted(video_ids[i] for i in order[:count])
    return held, [v for v in video_ids if v not in held]


def worker_resources(config: TrainConfig) -> tuple[bool, dict[str, float], int]:
    """(use_gpu, resources per worker, torch threads), fitted to the cluster.

    On CPUs each worker gets at most one CPU and one whole CPU stays free: Ray Data's read tasks need it, and
    without it a 2-CPU machine hangs with "Cluster resources are not enough".
    """
    cluster = ray.cluster_resources()
    use_gpu = config.use_gpu if config.use_gpu is not None else cluster.get("GPU", 0) >= 1
    workers = max(config.num_workers, 1)
    if config.cpus_per_worker is not None:
        cpus = config.cpus_per_worker
    elif use_gpu:
        cpus = 1.0
    else:
        cpus = max(0.1, min(1.0, (cluster.get("CPU", 1) - 1) / workers))
        cpus = float(np.floor(cpus * 20) / 20)  # 0.05 steps keep the request exact
    threads = config.torch_threads or max(1, round(cpus))
    return use_gpu, {"CPU": cpus}, threads


def configure_ray_data() -> None:
    """No progress bars or plan dumps from Ray Data: a job's log is for epochs and results. Blocks keep their
    order, so that a CPU run is deterministic given its seed."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _new_run_name() -> str:
    return f"memae-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def storage_path_for(config: TrainConfig) -> str:
    """A URI as given; a local folder made absolute (and refused when it would vanish with a submitted job)."""
    if "://" in config.storage_path:
        return config.storage_path
    return str(durable_path(config.storage_path, "the checkpoint folder", "--storage-path"))


def find_mlflow_run(experiment: str, run_name: str) -> str | None:
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.`memae.run_name` = '{run_name}'", output_format="list"
    )
    return runs[0].info.run_id if runs else None


def train(config: TrainConfig, callbacks: list[UserCallback] | None = None) -> TrainResult:
    """Trains on the cluster Ray is connected to (a local one is started if none), tracks and registers the run.

    `callbacks` are Ray Train callbacks run on the controller (Tune's report callback, test probes).
    """
    import mlflow

    if not config.shards:
        raise ValueError("no --shards given: ingest a corpus first (python jobs/ingest.py ...)")
    corpus = Corpus.open(config.shards)
    preset = config.preset_spec()
    corpus.check_fits(preset.clip_len)
    spec = config.model_spec(corpus.channels)
    storage = storage_path_for(config)
    if config.resume and not config.name:
        raise ValueError("--resume needs --name: the run to continue")
    name = config.name or _new_run_name()
    run_dir = Path(storage) / name
    if not config.resume and "://" not in storage and run_dir.exists():
        raise ValueError(f"a run called {name!r} already exists in {storage}: pass --resume to continue it")

    init_ray()
    configure_ray_data()
    tracking_uri = configure_mlflow(config.tracking_uri, config.experiment)
    use_gpu, resources, threads = worker_resources(config)
    datasets = {
        "train": clip_dataset(corpus.path, preset.clip_len, config.clip_stride, split="train").select_columns(["clip"])
    }
    loop: dict[str, Any] = {
        "config": asdict(config),
        "model_spec": asdict(spec),
        "clip_len": preset.clip_len,
        "torch_threads": threads,
        "tracking_uri": tracking_uri,
        "objective": training_objective(config),
        "shuffle_buffer": 4 * config.resolved_batch_size,
        "deadline": time.time() + 60 * config.max_minutes if config.max_minutes else None,
    }
    if config.val_shards:
        val = Corpus.open(config.val_shards)
        val.check_matches(corpus)
        datasets["val"] = clip_dataset(val.path, preset.clip_len, 1, split="test").select_columns(
            ["video_id", "start", "clip"]
        )
        loop["val_num_frames"], loop["val_labels"] = val.labelled_videos("test")
    elif config.holdout_fraction > 0:
        train_ids = [v["video_id"] for v in corpus.videos("train")]
        held, kept = split_holdout(train_ids, config.holdout_fraction, config.seed)
        train_clips = clip_dataset(corpus.path, preset.clip_len, config.clip_stride, split="train", video_ids=kept)
        datasets["train"] = train_clips.select_columns(["clip"])
        datasets["val"] = clip_dataset(corpus.path, preset.clip_len, preset.clip_len, split="train",
                                       video_ids=held).select_columns(["video_id", "start", "clip"])
        print(f"holding out {len(held)} of {len(held) + len(kept)} training videos: {', '.join(held)}", flush=True)

    run_id = find_mlflow_run(config.experiment, name) if config.resume else None
    tags = {"memae.run_name": name, "memae.objective": loop["objective"]}
    if config.mlflow_parent_run:
        tags["mlflow.parentRunId"] = config.mlflow_parent_run
    with mlflow.start_run(run_id=run_id, run_name=name, tags=tags) as run:
        loop["run_id"] = run.info.run_id
        if run_id is None:
            mlflow.log_params({k: v for k, v in flatten(config).items() if v is not None})
            mlflow.log_params(
                {f"model.{k}": v for k, v in asdict(spec).items()}
                | {"use_gpu": use_gpu, "cpus_per_worker": resources["CPU"], "torch_threads": threads}
            )
        with tempfile.TemporaryDirectory() as tmp:
            save_config(config, Path(tmp) / "train_config.yaml")
            mlflow.log_artifact(str(Path(tmp) / "train_config.yaml"))

        trainer = ray.train.torch.TorchTrainer(
            train_loop_per_worker,
            train_loop_config=loop,
            scaling_config=ray.train.ScalingConfig(
                num_workers=config.num_workers, use_gpu=use_gpu, resources_per_worker=resources
            ),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="score"),
                callbacks=callbacks,
            ),
            datasets=datasets,
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        )
        result = trainer.fit()
        history = checkpoint_history(result.checkpoint)
        chosen, checkpoint = "last", result.checkpoint
        if loop["objective"] != "train_loss" and result.best_checkpoints:
            chosen = "best"
            checkpoint = max(result.best_checkpoints, key=lambda pair: pair[1]["score"])[0]
        checkpoint_file = str(Path(checkpoint.path) / CHECKPOINT_FILE)
        mlflow.set_tags({"memae.checkpoint": checkpoint_file, "memae.checkpoint_chosen": chosen})
        log_history_plots(history)
        version = None
        if config.register:
            version = register_checkpoint(
                checkpoint_file,
                config.register,
                corpus.model_preprocessing(preset.clip_len, config.error_rule, config.frame_rule),
                calibration=calibrate(checkpoint_file, corpus.path, preset.clip_len, config),
                alias=config.alias,
            )
        registered = f"registered as {config.register} version {version}" if version else "not registered"
        print(f"run {name}: {len(history)} epochs; chose the {chosen} checkpoint ({loop['objective']}); {registered}",
              flush=True)
    return TrainResult(
        run_name=name,
        mlflow_run_id=loop["run_id"],
        checkpoint_path=checkpoint_file,
        chosen=chosen,
        epochs_done=len(history),
        metrics=history[-1] if history else {},
        history=history,
        registered_version=version,
    )


def checkpoint_history(checkpoint: ray.train.Checkpoint | None) -> list[dict[str, float]]:
    """The per-epoch metrics saved inside a checkpoint (they survive restarts, unlike a worker's memory)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as directory:
        return list(load_checkpoint(Path(directory) / CHECKPOINT_FILE)["extra"]["history"])


def log_history_plots(history: list[dict[str, float]]) -> None:
    """Loss curves and memory diagnostics per epoch, as PNGs in the active MLflow run."""
    import mlflow

    if not history:
        return
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(training_curves(history, Path(tmp) / "training_curves.png")), "plots")


def calibrate(checkpoint_file: str, shards: Path, clip_len: int, config: TrainConfig,
              max_clips: int = 512) -> dict[str, Any]:
    """The chosen model's error distribution on normal training clips (non-overlapping), for unlabelled runs."""
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint_file))
    model.eval()
    errors: list[torch.Tensor] = []
    batch: list[np.ndarray] = []
    clips = iter_clips(shards, clip_len=clip_len, stride=clip_len, split="train")
    for row in itertools.islice(clips, max_clips):
        batch.append(row["clip"])
        if len(batch) == config.resolved_batch_size:
            errors.append(model_clip_errors(model, clips_to_tensor(np.stack(batch)), config.error_rule))
            batch = []
    if batch:
        errors.append(model_clip_errors(model, clips_to_tensor(np.stack(batch)), config.error_rule))
    return calibrate_errors(torch.cat(errors).numpy(), config.error_rule)
