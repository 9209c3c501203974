"""What runs on each Ray Train worker: resume, train epochs, validate, checkpoint and report every one.

The driver (pipelines/train/run.py) decides everything once and hands each worker a `WorkerPlan`. Rank 0 validates,
writes the checkpoint and logs the epoch's metrics to the driver's MLflow run, from which the driver prints the
epoch's progress line (pipelines/train/progress.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch

from memae.checkpoint import load_checkpoint, save_checkpoint, unwrap
from memae.evaluation import VideoScorer, model_clip_errors, video_metrics
from memae.memory import set_shrink_threshold
from memae.memory_init import init_memory_from_features
from memae.presets import ModelSpec
from memae.pseudo_anomalies import pseudo_anomaly_auc, pseudo_anomaly_pairs
from memae.training import linear_warmup, memory_format_for, train_one_epoch
from memae.transforms import clips_to_tensor
from pipelines.ingest.clips import clips_from_block, iter_clips
from pipelines.train.batches import Lockstep, batched, block_clips, shuffled
from pipelines.train.config import TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"
HELD_OUT_OBJECTIVES = ("pseudo_auc", "holdout_error")
LABELLED_OBJECTIVES = ("val_auc_micro", "oracle_val_auc_micro")


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a training worker needs, decided once by the driver.

    `objective` is what "best" means (see `checkpoint_score`); the validation fields are filled for the labelled
    objectives.
    """

    config: TrainConfig
    model_spec: ModelSpec
    clip_len: int
    torch_threads: int
    tracking_uri: str
    run_id: str
    objective: str
    shuffle_buffer: int
    deadline: float | None  # time.time() at which to stop, from --max-minutes
    shards: str = ""  # the corpus's absolute path (workers do not share the driver's working directory)
    train_videos: list[str] = field(default_factory=list)  # the training videos not held out
    val_num_frames: dict[str, int] = field(default_factory=dict)
    val_labels: dict[str, np.ndarray] = field(default_factory=dict)


def validation_cut(objective: str, clip_len: int) -> tuple[int, int]:
    """(length, stride) of what validation cuts from its blocks: every clip of the labelled videos (frame scores
    need them all), or, from held-out videos, windows of two clips one clip apart (the first clip is the normal one,
    the whole window makes its sped-up copy)."""
    return (2 * clip_len, clip_len) if objective in HELD_OUT_OBJECTIVES else (clip_len, 1)


def _first_batches(plan: WorkerPlan, device: torch.device) -> Iterator[torch.Tensor]:
    """Batches of non-overlapping clips of the videos trained on, read from the shards in order (not through the
    training dataset, whose split between workers must be consumed whole)."""
    rows = iter_clips(plan.shards, plan.clip_len, stride=plan.clip_len, split="train",
                      video_ids=plan.train_videos)
    for batch in batched((row["clip"] for row in rows), plan.config.resolved_batch_size):
        yield clips_to_tensor(batch).to(device)


def _training_batches(shard: ray.data.DataIterator, plan: WorkerPlan, rng: np.random.Generator
                      ) -> Iterator[torch.Tensor]:
    """This rank's clips of one epoch, cut from whole Ray blocks of frame blocks, shuffled and batched."""
    config = plan.config
    blocks = shard.iter_batches(batch_size=None, batch_format="numpy")
    clips = shuffled(block_clips(blocks, plan.clip_len, config.clip_stride), plan.shuffle_buffer, rng)
    return (clips_to_tensor(batch) for batch in batched(clips, config.resolved_batch_size))


def _validation_clips(plan: WorkerPlan) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(video id, starts, clips) of each block of the "val" dataset, cut as `validation_cut` says."""
    length, stride = validation_cut(plan.objective, plan.clip_len)
    for batch in ray.train.get_dataset_shard("val").iter_batches(batch_size=None, batch_format="numpy"):
        for video_id, start, frames in zip(batch["video_id"], batch["start"], batch["frames"], strict=True):
            clips = clips_from_block(frames, length, stride)
            yield str(video_id), int(start) + stride * np.arange(len(clips)), clips


def _validate(model: torch.nn.Module, plan: WorkerPlan, device: torch.device) -> dict[str, float]:
    """The objective's numbers: frame AUC over labelled validation videos (the paper's protocol; named oracle_* when
    they are the reported ones), or, on held-out normal videos, the pseudo-anomaly AUC and the mean error."""
    config = plan.config
    model = unwrap(model)
    model.eval()
    blocks = _validation_clips(plan)
    if plan.objective in HELD_OUT_OBJECTIVES:
        return _held_out_metrics(model, np.concatenate([clips for _, _, clips in blocks]), plan, device)
    scorer = VideoScorer(clip_len=plan.clip_len, frame_rule=config.frame_rule)
    size = config.resolved_batch_size * 2
    for video_id, starts, clips in blocks:
        for i in range(0, len(clips), size):
            batch_errors = model_clip_errors(model, clips_to_tensor(clips[i:i + size]).to(device), config.error_rule)
            scorer.add([video_id] * len(batch_errors), starts[i:i + size], batch_errors)
    metrics = video_metrics(scorer.frame_errors(plan.val_num_frames), plan.val_labels)
    prefix = "oracle_" if plan.objective.startswith("oracle_") else ""
    return {f"{prefix}val_auc_micro": metrics.auc_micro, f"{prefix}val_auc_macro": metrics.auc_macro,
            f"{prefix}val_eer": metrics.eer}


def _held_out_metrics(model: torch.nn.Module, windows: np.ndarray, plan: WorkerPlan,
                      device: torch.device) -> dict[str, float]:
    """Mean error of held-out normal clips, and how well their errors separate them from pseudo-anomalies made of
    them (the same edits every epoch: the generator is seeded by the run's seed)."""
    config = plan.config
    normal, edited = pseudo_anomaly_pairs(windows, plan.clip_len, np.random.default_rng(config.seed))

    def errors(clips: np.ndarray) -> np.ndarray:
        batch = config.resolved_batch_size * 2
        return torch.cat([model_clip_errors(model, clips_to_tensor(clips[i:i + batch]).to(device), config.error_rule)
                          for i in range(0, len(clips), batch)]).numpy()

    normal_errors = errors(normal)
    return {"holdout_error": float(normal_errors.mean()),
            "pseudo_auc": pseudo_anomaly_auc(normal_errors, errors(edited))}


def checkpoint_score(metrics: dict[str, float], objective: str) -> float:
    """Higher is better. Epochs without validation score lowest, so retention keeps the best validated one
    (Ray always keeps the latest too)."""
    if objective in LABELLED_OBJECTIVES or objective == "pseudo_auc":
        return metrics.get(objective, -1.0)
    if objective == "holdout_error":
        return -metrics["holdout_error"] if "holdout_error" in metrics else -np.finfo(np.float32).max
    return -metrics["train_loss"]


def epoch_line(metrics: dict[str, float], epochs: int) -> str:
    """One progress line per epoch: the numbers a person watches."""
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"loss {metrics['train_loss']:.5f}",
             f"{metrics['train_clips_per_s']:.1f} clips/s"]
    if "mem_active_query_fraction" in metrics:
        parts.append(f"memory: {100 * (1 - metrics['mem_active_query_fraction']):.0f}% queries dead, "
                     f"{metrics['mem_mean_active_slots_when_active']:.1f} slots each, "
                     f"{metrics['mem_distinct_slots']:.0f} slots used")
    for prefix, name in (("", "val AUC"), ("oracle_", "ORACLE val AUC (test labels)")):
        if f"{prefix}val_auc_micro" in metrics:
            parts.append(f"{name} {metrics[f'{prefix}val_auc_micro']:.3f} "
                         f"(macro {metrics[f'{prefix}val_auc_macro']:.3f})")
    if "pseudo_auc" in metrics:
        parts.append(f"pseudo-anomaly AUC {metrics['pseudo_auc']:.3f}")
    if "holdout_error" in metrics:
        parts.append(f"held-out error {metrics['holdout_error']:.5f}")
    return " | ".join(parts)


def _log_to_mlflow(plan: WorkerPlan, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=plan.tracking_uri)
    stamp = int(time.time() * 1000)
    client.log_batch(
        plan.run_id,
        metrics=[Metric(key, float(value), stamp, step) for key, value in metrics.items() if np.isfinite(value)],
    )


def train_loop_per_worker(loop_config: dict[str, WorkerPlan]) -> list[dict[str, float]]:
    """The per-worker loop: resume from Ray Train's checkpoint, train epochs, report and checkpoint each one."""
    plan = loop_config["plan"]
    config, spec = plan.config, plan.model_spec
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(plan.torch_threads)
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
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # clip shapes are fixed: cuDNN times its kernels once, keeps the best
    model = ray.train.torch.prepare_model(model.to(memory_format=memory_format_for(device, config.channels_last)))
    train_shard = ray.train.get_dataset_shard("train")
    if config.memory_init == "kmeans" and checkpoint is None and unwrap(model).uses_memory:
        init_memory_from_features(model, _first_batches(plan, device), seed=config.seed)

    for epoch in range(start_epoch, config.epochs):

        def budget_spent(steps_in_epoch: int, done_before: int = steps_done) -> bool:
            out_of_steps = config.max_steps is not None and done_before + steps_in_epoch >= config.max_steps
            out_of_time = plan.deadline is not None and time.time() >= plan.deadline
            return out_of_steps or out_of_time

        rng = np.random.default_rng((config.seed, epoch, rank))
        steps = Lockstep(_training_batches(train_shard, plan, rng), budget_spent)
        if config.warmup_epochs:
            set_shrink_threshold(model, linear_warmup(spec.shrink_thres, epoch, config.warmup_epochs))
        result = train_one_epoch(
            model, optimizer, steps, alpha=linear_warmup(config.effective_alpha, epoch, config.warmup_epochs),
            device=device, bf16=config.bf16, should_stop=steps.should_stop, channels_last=config.channels_last,
        )
        steps_done += result.steps
        metrics = {"epoch": epoch + 1, "steps": steps_done, **result.metrics()}
        # Equal on every rank while DDP keeps the replicas in sync; reported per worker, not logged to MLflow.
        replica_checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        validate_now = plan.objective != "train_loss" and (
            (epoch + 1) % config.val_every == 0 or result.stopped_early or epoch + 1 == config.epochs
        )
        if rank == 0 and validate_now:
            metrics.update(_validate(model, plan, device))
        score = checkpoint_score(metrics, plan.objective)
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
                    config=asdict(config),
                    extra={"steps": steps_done, "history": history, "best": best},
                )
                _log_to_mlflow(plan, metrics, step=epoch + 1)
                ckpt = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(
                {**metrics, "score": score, "replica_checksum": replica_checksum},
                checkpoint=ckpt,
                checkpoint_dir_name=f"epoch_{epoch + 1:04d}",
            )
        if result.stopped_early:
            break
    return history
