"""MemAE training with Ray Train: DDP over workers, checkpoints every epoch, MLflow tracking, registry.

    from pipelines.train.run import train
    from pipelines.train.config import TrainConfig
    result = train(TrainConfig(shards="data/shards", epochs=5, register="memae-demo", alias="champion"))

Ray Data moves blocks of consecutive frames (`frame_block_dataset`); each worker gets its own share of the blocks and
cuts, shuffles and batches their clips (pipelines/train/batches.py). Rank 0 validates, writes the checkpoint and logs
metrics to the MLflow run that the driver opened; the driver then draws the curves and registers the chosen checkpoint.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
import ray.data
import ray.train
import ray.train.torch
from ray.train.v2.api.callback import UserCallback

from memae.calibration import DEFAULT_ALARM_LEVEL
from memae.checkpoint import load_checkpoint, model_from_checkpoint
from memae.evaluation import calibrate_frames
from pipelines.common.config import flatten, save_config
from pipelines.common.job_env import durable_path
from pipelines.common.naming import new_run_name
from pipelines.common.ray_runtime import init_ray
from pipelines.common.resources import cpu_share, torch_threads, wants_gpu
from pipelines.common.tracking import configure_mlflow
from pipelines.ingest.clips import frame_block_dataset, iter_clips
from pipelines.ingest.corpus import Corpus
from pipelines.registry.pyfunc import register_checkpoint
from pipelines.train.config import TrainConfig
from pipelines.train.plots import training_curves
from pipelines.train.progress import EpochLines
from pipelines.train.worker import (
    CHECKPOINT_FILE,
    HELD_OUT_OBJECTIVES,
    WorkerPlan,
    train_loop_per_worker,
    validation_cut,
)


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



def training_objective(config: TrainConfig, train_videos: int = 2) -> str:
    """What "best" means for this run: labelled validation AUC (oracle_* when the validation videos are the reported
    ones), else --select-by on held-out normal videos (when there are two training videos or more), else the train
    loss."""
    if config.val_shards:
        return "oracle_val_auc_micro" if config.oracle else "val_auc_micro"
    return config.select_by if config.holdout_fraction > 0 and train_videos >= 2 else "train_loss"


def split_holdout(video_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(held out, kept): whole videos, chosen by seed; at least one of each when there are two videos or more."""
    if len(video_ids) < 2:
        raise ValueError(f"holding out videos needs at least 2 training videos, the corpus has {len(video_ids)}")
    order = np.random.default_rng(seed).permutation(len(video_ids))
    count = min(len(video_ids) - 1, max(1, round(fraction * len(video_ids))))
    held = sorted(video_ids[i] for i in order[:count])
    return held, [v for v in video_ids if v not in held]


def validation_corpus(config: TrainConfig, corpus: Corpus) -> Corpus | None:
    """The labelled validation shards, refused when they are the corpus trained on unless --oracle says so."""
    if not config.val_shards:
        return None
    val = Corpus.open(config.val_shards)
    val.check_matches(corpus)
    if val.path == corpus.path and not config.oracle:
        raise ValueError(f"--val-shards is the corpus being trained on ({val.path}): choosing the epoch on its test "
                         "videos and then reporting them overstates what an archive gets. Give labelled videos that "
                         "you will not report, leave --val-shards out (held-out normal videos choose), or pass "
                         "--oracle for an upper bound named as one")
    return val


def held_out_videos(config: TrainConfig, corpus: Corpus, clip_len: int) -> tuple[list[str], list[str]]:
    """(held out, trained on) among the corpus's training videos; nothing held out when the run validates on
    labelled videos or holds out none."""
    train_ids = [v.video_id for v in corpus.videos("train")]
    if training_objective(config, len(train_ids)) not in HELD_OUT_OBJECTIVES:
        return [], train_ids
    held, kept = split_holdout(train_ids, config.holdout_fraction, config.seed)
    short = [v.video_id for v in corpus.videos("train") if v.video_id in held and v.num_frames < 2 * clip_len]
    if short:
        raise ValueError(f"held-out videos need {2 * clip_len} frames or more (a clip and its sped-up copy); "
                         f"too short: {', '.join(short)}. Train on every video with --holdout-fraction 0")
    return held, kept


def worker_resources(config: TrainConfig) -> tuple[bool, dict[str, float], int]:
    """(use_gpu, resources per worker, torch threads), fitted to the cluster.

    On CPUs each worker gets at most one CPU and one whole CPU stays free: Ray Data's read tasks need it, and
    without it a 2-CPU machine hangs with "Cluster resources are not enough".
    """
    cluster = ray.cluster_resources()
    use_gpu = wants_gpu(config.use_gpu, cluster)
    if config.cpus_per_worker is not None:
        cpus = config.cpus_per_worker
    elif use_gpu:
        cpus = 1.0
    else:
        cpus = cpu_share(cluster.get("CPU", 1) - 1, max(config.num_workers, 1), cap=1.0)
    return use_gpu, {"CPU": cpus}, torch_threads(config.torch_threads, cpus)


def configure_ray_data() -> None:
    """No progress bars or plan dumps from Ray Data: a job's log is for epochs and results. Blocks keep their
    order, so that a CPU run is deterministic given its seed."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False


# How often Ray Train's controller polls its workers (Ray's default: every 2 s). Each step of a run (workers started,
# workers done) waits for the next poll; at 0.5 s a run ends 2-5 s sooner, for a poll per worker twice a second.
# Set before the trainer is made, which passes it on to the controller; a value in the environment wins.
HEALTH_CHECK_INTERVAL_S = "0.5"


def configure_ray_train() -> None:
    """Ray Train's controller notices finished and failed workers within half a second (HEALTH_CHECK_INTERVAL_S)."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)


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


def train(config: TrainConfig, callbacks: list[UserCallback] | None = None,
          echo: Callable[[str], None] = print) -> TrainResult:
    """Trains on the cluster Ray is connected to (a local one is started if none), tracks and registers the run.

    `callbacks` are Ray Train callbacks run on the controller (Tune's report callback, test probes); `echo` takes
    the console lines (one per epoch, then a summary).
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
    name = config.name or new_run_name("memae")
    run_dir = Path(storage) / name
    if not config.resume and "://" not in storage and run_dir.exists():
        raise ValueError(f"a run called {name!r} already exists in {storage}: pass --resume to continue it")
    val = validation_corpus(config, corpus)
    held, kept = held_out_videos(config, corpus, preset.clip_len)

    init_ray()
    configure_ray_data()
    configure_ray_train()
    tracking_uri = configure_mlflow(config.tracking_uri, config.experiment)
    use_gpu, resources, threads = worker_resources(config)
    train_ids = [v.video_id for v in corpus.videos("train")]
    objective = training_objective(config, len(train_ids))
    # Ray moves blocks of frames; workers cut the clips. Ray Train splits the training blocks equally between the
    # workers, so their count is made a multiple of the workers' and none is dropped.
    datasets = {"train": frame_block_dataset(corpus.path, preset.clip_len, config.clip_stride, split="train",
                                             video_ids=kept, multiple_of=max(1, config.num_workers))
                .select_columns(["frames"])}
    val_length, val_stride = validation_cut(objective, preset.clip_len)
    val_num_frames, val_labels = {}, {}
    if config.val_shards:
        datasets["val"] = frame_block_dataset(val.path, val_length, val_stride, split="test").select_columns(
            ["video_id", "start", "frames"]
        )
        val_num_frames, val_labels = val.labelled_videos("test")
    elif held:
        datasets["val"] = frame_block_dataset(corpus.path, val_length, val_stride, split="train", video_ids=held
                                              ).select_columns(["video_id", "start", "frames"])
        echo(f"holding out {len(held)} of {len(train_ids)} training videos to choose the epoch ({objective}) and "
             f"calibrate the alarm: {', '.join(held)}")
    elif config.holdout_fraction > 0:
        echo("one training video: nothing to hold out, so the last epoch is kept and the alarm is calibrated on the "
             "video trained on (expect more alarms than the threshold level says)")

    run_id = find_mlflow_run(config.experiment, name) if config.resume else None
    tags = {"memae.run_name": name, "memae.objective": objective}
    if config.mlflow_parent_run:
        tags["mlflow.parentRunId"] = config.mlflow_parent_run
    with mlflow.start_run(run_id=run_id, run_name=name, tags=tags) as run:
        plan = WorkerPlan(
            config=config, model_spec=spec, clip_len=preset.clip_len, torch_threads=threads,
            tracking_uri=tracking_uri, run_id=run.info.run_id, objective=objective,
            shuffle_buffer=4 * config.resolved_batch_size,
            deadline=time.time() + 60 * config.max_minutes if config.max_minutes else None,
            shards=str(corpus.path), train_videos=kept, val_num_frames=val_num_frames, val_labels=val_labels,
        )
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
            train_loop_config={"plan": plan},
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
        with EpochLines(tracking_uri, plan.run_id, config.epochs, echo):
            result = trainer.fit()
        history = checkpoint_history(result.checkpoint)
        chosen, checkpoint = "last", result.checkpoint
        if objective != "train_loss" and result.best_checkpoints:
            chosen = "best"
            checkpoint = max(result.best_checkpoints, key=lambda pair: pair[1]["score"])[0]
        checkpoint_file = str(Path(checkpoint.path) / CHECKPOINT_FILE)
        mlflow.set_tags({"memae.checkpoint": checkpoint_file, "memae.checkpoint_chosen": chosen})
        log_history_plots(history)
        version = None
        if config.register:
            calibration = calibrate(checkpoint_file, corpus, preset.clip_len, config)
            report_calibration(calibration, echo)
            version = register_checkpoint(
                checkpoint_file,
                config.register,
                corpus.model_preprocessing(preset.clip_len, config.error_rule, config.frame_rule),
                calibration=calibration,
                alias=config.alias,
            )
        registered = f"registered as {config.register} version {version}" if version else "not registered"
        echo(f"run {name}: {len(history)} epochs; chose the {chosen} checkpoint ({objective}); {registered}")
    return TrainResult(
        run_name=name,
        mlflow_run_id=plan.run_id,
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


def report_calibration(calibration: dict | None, echo: Callable[[str], None]) -> None:
    """Says, and logs to the active MLflow run, how often each calibration video passed the alarm line the others
    set: the false-alarm rate to expect on new normal footage, measured without a label."""
    import mlflow

    exceedance = (calibration or {}).get("unseen_video_exceedance")
    if not exceedance:
        return
    mlflow.log_metrics({f"calib_unseen_video_exceedance_{level}": share for level, share in exceedance.items()})
    share, nominal = exceedance[str(DEFAULT_ALARM_LEVEL)], 1 - DEFAULT_ALARM_LEVEL
    advice = ("" if share <= 3 * nominal else
              ": the calibration videos differ from one another more than the line allows, so expect more alarms on "
              "new normal footage than the level says; calibrate on more normal video (--holdout-fraction)")
    echo(f"alarm check without labels: each calibration video passed the {DEFAULT_ALARM_LEVEL} line of the others on "
         f"{100 * share:.1f}% of its frames (nominal {100 * nominal:.1f}%){advice}")


def log_history_plots(history: list[dict[str, float]]) -> None:
    """Loss curves and memory diagnostics per epoch, as PNGs in the active MLflow run."""
    import mlflow

    if not history:
        return
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(training_curves(history, Path(tmp) / "training_curves.png")), "plots")


def calibrate(checkpoint_file: str, corpus: Corpus, clip_len: int, config: TrainConfig,
              max_clips: int = 4096) -> dict | None:
    """The chosen model's per-frame error distribution on normal training videos, made as the scoring job makes
    frame errors, for thresholds on unlabelled footage: on the run's held-out videos when it has any (the model has
    not fitted them, so the threshold keeps its promise), else on the videos trained on. Whole videos, in order,
    until about `max_clips` clips."""
    held, kept = held_out_videos(config, corpus, clip_len)
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint_file))
    lengths = {v.video_id: v.num_frames for v in corpus.videos("train")}
    chosen, clips = [], 0
    for video_id in held or kept:
        if clips >= max_clips:
            break
        chosen.append(video_id)
        clips += max(0, lengths[video_id] - clip_len + 1)
    what = "held-out normal" if held else "normal training (fitted: expect more alarms than the level says)"
    rows = iter_clips(corpus.path, clip_len=clip_len, stride=1, split="train", video_ids=chosen)
    return calibrate_frames(model, rows, lengths, clip_len, config.error_rule, config.frame_rule,
                            config.resolved_batch_size, source=f"{len(chosen)} {what} videos: {', '.join(chosen)}")
