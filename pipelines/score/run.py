"""Batch scoring of whole archives with Ray Data: per-frame scores, events, AUC and plots, tracked in MLflow.

    from pipelines.score.run import score
    from pipelines.score.config import ScoreConfig
    result = score(ScoreConfig(model="models:/memae-demo@champion", dataset="auto", root="/data/ped2", out="scores"))

The pipeline streams: one Ray task per video decodes it (or reads its shard) and cuts clips (score_data.py); a pool
of `ScoringActor`s, each holding the model (on a GPU when the cluster has them), turns batches of clips into clip
errors and, with --save-maps, per-pixel error maps; the driver gathers each video's clips and, as soon as a video is
complete, writes its per-frame scores and records it in the ledger (score_outputs.py). A corrupt video ends in a
"failed" row and is reported; the others are scored. At the end the tables, metrics and plots are rebuilt from the
per-video files and logged to one MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memae.calibration import calibrate_errors, threshold
from memae.evaluation import model_clip_errors
from memae.files import remove_temporary_files, write_json_atomic
from memae.scoring import anomaly_score, clip_errors, error_maps, frames_from_clips
from memae.transforms import clips_to_tensor
from pipelines.common.config import flatten, save_config
from pipelines.registry.source import MLFLOW_SCHEMES, ModelSource, ScoringSettings, load_model_source, scoring_settings
from pipelines.score.config import ScoreConfig
from pipelines.score.data import (
    Listing,
    VideoUnit,
    clips_at,
    list_archive,
    list_shards,
    normal_clips,
    video_clip_batches,
)
from pipelines.score.outputs import (
    Ledger,
    MapSpool,
    Outputs,
    Threshold,
    done_videos,
    plot_outputs,
    rebuild_outputs,
    video_path,
    write_video_scores,
)

REPORT_FILE = "score_report.json"


@dataclass
class ScoreResult:
    """What one scoring job did; `ok` is False when any video failed (the others are scored)."""

    out: Path
    model_key: str
    scored: list[str]
    skipped: int
    failed: list[dict]
    short: list[str]
    outputs: Outputs
    mlflow_run_id: str | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


# ---------------------------------------------------------------------------------------------------------------
# Actor side


class ScoringActor:
    """Holds the model on its device; turns batches of clip rows into clip errors (and centre-frame error maps)."""

    def __init__(self, weights: Any, settings: dict, device: str, threads: int, save_maps: bool) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model = weights["spec"].build()
        self.model.load_state_dict(weights["state"])
        self.model.to(self.device).eval()
        self.settings = ScoringSettings(**settings)
        self.save_maps = save_maps

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips = batch["start"] >= 0  # the end row of each video carries no clip
        n = len(batch["start"])
        errors = np.full(n, np.nan)
        out = {"key": batch["key"], "start": batch["start"], "end": batch["end"]}
        centre = self.settings.clip_len // 2
        maps = np.zeros((n, self.settings.height, self.settings.width), dtype=np.float16) if self.save_maps else None
        if clips.any():
            x = clips_to_tensor(batch["clip"][clips]).to(self.device, non_blocking=True)
            if self.save_maps:
                recon = self.model(x)["output"].to(x.dtype)
                errors[clips] = clip_errors(x, recon, self.settings.error_rule).double().cpu().numpy()
                maps[clips] = error_maps(x[:, :, centre], recon[:, :, centre]).cpu().numpy()
            else:
                errors[clips] = model_clip_errors(self.model, x, self.settings.error_rule).double().numpy()
        out["error"] = errors
        if maps is not None:
            out["map"] = maps
        return out


# ---------------------------------------------------------------------------------------------------------------
# Driver side


@dataclass
class _Video:
    """Clips of one video gathered in the driver until its end row and all its clips have arrived."""

    starts: list[np.ndarray] = field(default_factory=list)
    errors: list[np.ndarray] = field(default_factory=list)
    received: int = 0
    end: dict | None = None
    maps: MapSpool | None = None

    def add(self, starts: np.ndarray, errors: np.ndarray) -> None:
        self.starts.append(starts)
        self.errors.append(errors)
        self.received += len(starts)

    def clip_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, errors), sorted, with clips a retried task delivered twice counted once."""
        starts = np.concatenate(self.starts) if self.starts else np.zeros(0, np.int64)
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        starts, first = np.unique(starts, return_index=True)
        return starts, errors[first]

    @property
    def complete(self) -> bool:
        """A failed video is complete at its end row (its clips are dropped); another once every clip is in."""
        if self.end is None:
            return False
        if self.end["status"] == "failed":
            return True
        return self.received >= self.end["num_clips"] and len(self.clip_errors()[0]) == self.end["num_clips"]


class ScoreSetupError(ValueError):
    """The job cannot start: bad flags, model or data not found, settings that contradict earlier runs."""


@dataclass
class _Plan:
    """Everything decided before any video is scored."""

    out: Path
    source: ModelSource
    listing: Listing
    settings: ScoringSettings
    ledger: Ledger
    section: dict
    todo: list[VideoUnit]
    skipped: int
    limit: Threshold


def score(config: ScoreConfig, echo: Callable[[str], None] = print) -> ScoreResult:
    """Scores the videos `config` selects into `config.out`; see the module docstring.

    Raises:
        ScoreSetupError: when the job cannot start. Failures of single videos are reported in the result instead.
    """
    started = time.perf_counter()
    try:
        plan = _prepare(config, echo)
    except ValueError as exc:
        raise ScoreSetupError(str(exc)) from None
    out, source, listing, settings = plan.out, plan.source, plan.listing, plan.settings
    tags = {**source.tags, "memae.dataset": listing.dataset, "memae.data": str(config.root or config.shards),
            "memae.incremental": str(config.incremental)}
    with _mlflow_run(config, tags) as active:
        scored, failed, short, clips = _score_videos(plan, config, echo)
        outputs = rebuild_outputs(out, plan.section, plan.limit, asdict(settings), config.plot_videos,
                                  config.worst_frames, config.fps)
        plots = plot_outputs(out, outputs, plan.limit, _worst_images(outputs, listing, source, settings))
        elapsed = time.perf_counter() - started
        failed = listing.problems + failed
        report = _report(config, plan, scored, failed, short, clips, elapsed, outputs)
        write_json_atomic(out / REPORT_FILE, report)
        if active is not None:
            _log_run(config, out, outputs, plots, report, settings, plan.limit)
    for item in failed:
        echo(f"FAILED  {item['split']}/{item['video_id']}: {item['file']}: {item['reason']}")
    if outputs.metrics is not None:
        m = outputs.metrics
        echo(f"frame AUC micro {m['auc_micro']:.4f} (the paper's), macro {m['auc_macro']:.4f}, EER {m['eer']:.4f}, "
             f"AP {m['average_precision']:.4f}; global normalisation: AUC micro {m['global']['auc_micro']:.4f}")
    else:
        echo(outputs.metrics_note)
    echo(f"{'ok' if not failed else 'FAILED'}: {len(scored)} scored, {plan.skipped} skipped (already scored), "
         f"{len(failed)} failed, {len(short)} too short; {report['frames_scored']} frames in {elapsed:.1f}s; "
         f"outputs in {out}")
    run_id = active.info.run_id if active is not None else None
    return ScoreResult(out, source.key, scored, plan.skipped, failed, short, outputs, run_id, report)


def _prepare(config: ScoreConfig, echo: Callable[[str], None]) -> _Plan:
    """Model, videos, settings, ledger and threshold; raises ValueError when the job cannot start."""
    config.check()
    if config.mlflow or config.model.startswith(MLFLOW_SCHEMES):
        from pipelines.common.tracking import configure_mlflow

        configure_mlflow(config.tracking_uri, config.experiment)
    source = load_model_source(config.model)
    listing = _list(config)
    settings = scoring_settings(source, config, listing.stored_shape)
    echo(f"model: {source.uri} ({source.kind}, key {source.key}); clips of {settings.clip_len} frames of "
         f"{settings.height}x{settings.width} {settings.color}, {settings.error_rule} error, "
         f"{settings.frame_rule} rule")
    echo(f"data: {listing.dataset} ({listing.evidence}): {len(listing.units)} videos to consider, "
         f"{len(listing.problems)} unusable")
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    section = ledger.open_section(source.key, source.tags, asdict(settings), fresh=not config.incremental)
    for stale in remove_temporary_files(out):
        echo(f"removed a half-written file from an interrupted run: {stale}")
    done = done_videos(section, out)
    todo = [u for u in listing.units if u.key not in done]
    skipped = len(listing.units) - len(todo)
    echo(f"{len(todo)} videos to score, {skipped} already scored by {source.key}")
    limit = _threshold(config, source, settings, listing, section, ledger, echo)
    return _Plan(out, source, listing, settings, ledger, section, todo, skipped, limit)


def _list(config: ScoreConfig) -> Listing:
    try:
        if config.shards:
            return list_shards(config.shards, config.split)
        return list_archive(config.dataset, config.root, config.split)
    except (FileNotFoundError, KeyError) as exc:
        raise ValueError(str(exc).strip("'\"")) from None


def _threshold(config: ScoreConfig, source: ModelSource, settings: ScoringSettings, listing: Listing,
               section: dict, ledger: Ledger, echo: Callable[[str], None]) -> Threshold:
    """The calibrated threshold: stored with the model, else computed here on normal training clips (and kept in the
    ledger for the next run), else none (frames are then flagged by the per-video score)."""
    calibration, origin = source.calibration, "model calibration"
    if calibration and calibration.get("error_rule", settings.error_rule) != settings.error_rule:
        echo(f"the model's calibration is for the {calibration['error_rule']} error; recalibrating")
        calibration = None
    if not calibration:
        calibration, origin = section.get("calibration"), "calibrated by an earlier run"
    if not calibration and listing.normal:
        echo(f"calibrating on up to {config.calibration_clips} clips of {len(listing.normal)} normal training videos")
        model, device = _driver_model(source)
        errors = [model_clip_errors(model, clips_to_tensor(np.stack(batch)).to(device), settings.error_rule)
                  for batch in _batches(normal_clips(listing.normal, settings, config.calibration_clips),
                                        config.batch_size)]
        if errors:
            calibration = calibrate_errors(torch.cat(errors).numpy(), settings.error_rule)
            section["calibration"] = calibration
            ledger.save()
            origin = f"calibrated on {calibration['num_clips']} normal training clips"
    if not calibration:
        echo("no calibration (the model has none and the data has no normal training videos): frames are flagged "
             "where the per-video score is at least 0.5, and score_global is min-max over this run")
        return Threshold(None, None, config.threshold_level, "none: per-video score >= 0.5")
    value = threshold(calibration, config.threshold_level)
    low = threshold(calibration, 0.5)
    echo(f"threshold: error > {value:.5g} (the {config.threshold_level} quantile of normal clips; {origin})")
    return Threshold(value, low, config.threshold_level, origin)


def _driver_model(source: ModelSource) -> tuple[torch.nn.Module, torch.device]:
    """The model in this process (calibration, worst frames), on its GPU when it has one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return source.build().to(device), device


def _batches(rows: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def actor_plan(config: ScoreConfig) -> tuple[str, int, dict[str, float], int]:
    """(device, actors, resources per actor, torch threads), fitted to the cluster.

    On CPUs the actors share what the decoding tasks leave: on 2 CPUs one actor of 1.5 CPUs beside one decoding task
    of 0.5 (two one-CPU actors would starve Ray Data and hang). A GPU is asked for only when the cluster has one:
    `num_gpus=1` on a CPU-only cluster waits for ever instead of failing.
    """
    import ray

    cluster = ray.cluster_resources()
    gpus = int(cluster.get("GPU", 0))
    use_gpu = config.use_gpu if config.use_gpu is not None else gpus >= 1
    if use_gpu and gpus < 1:
        raise ScoreSetupError("--use-gpu was given but the Ray cluster has no GPU")
    actors = config.concurrency or (gpus if use_gpu else 1)
    if config.cpus_per_actor is not None:
        cpus = config.cpus_per_actor
    elif use_gpu:
        cpus = 1.0
    else:  # an actor lives on one node: never ask for more than the largest node has
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = max(0.1, min(largest, cluster.get("CPU", 1) - config.decode_cpus) / actors)
        cpus = float(np.floor(cpus * 20) / 20)  # 0.05 steps keep the request exact
    threads = config.torch_threads or max(1, round(cpus))
    resources = {"num_cpus": cpus, **({"num_gpus": 1} if use_gpu else {})}
    return ("cuda" if use_gpu else "cpu"), actors, resources, threads


def score_batches(todo: list[VideoUnit], source: ModelSource, settings: ScoringSettings, config: ScoreConfig,
                  echo: Callable[[str], None]) -> Iterator[dict[str, np.ndarray]]:
    """Batches of scored rows (key, start, error, end[, map]) as the actors finish them."""
    import ray
    import ray.data

    from pipelines.common.ray_runtime import init_ray

    init_ray(config.num_cpus)
    device, actors, resources, threads = actor_plan(config)
    echo(f"scoring with {actors} actor(s) on {device}, {resources['num_cpus']} CPUs and {threads} torch threads each; "
         f"batches of {config.batch_size} clips")
    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start
    # One block per video: if a decoder crashes its worker, only that video is lost, and it is reported.
    context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start = len(todo), False, False
    weights = {"spec": source.spec, "state": source.state}
    try:
        units = ray.data.from_items([{"unit": pickle.dumps(u)} for u in todo], override_num_blocks=len(todo))
        with warnings.catch_warnings():
            # Ray Data retries a task whose worker died for ever: a decoder crashing on one file would hang the job.
            # `max_retries` is only reachable through the deprecated ray_remote_args (as in pipelines/ingest/run.py).
            warnings.simplefilter("ignore", DeprecationWarning)
            clips = units.map_batches(video_clip_batches, fn_kwargs={"settings": settings}, batch_size=1,
                                      num_cpus=config.decode_cpus, max_retries=1)
        scored = clips.map_batches(
            ScoringActor,
            fn_constructor_kwargs={"weights": weights, "settings": asdict(settings), "device": device,
                                   "threads": threads, "save_maps": config.save_maps},
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=config.batch_size,
            batch_format="numpy",
            **resources,
        )
        yield from scored.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start = saved


class _Collector:
    """Gathers scored rows by video, in whatever order the actors deliver them; hands back complete videos."""

    def __init__(self, todo: list[VideoUnit], maps_folder: Path | None, centre: int) -> None:
        self.units = {u.key: u for u in todo}
        self.videos = {key: _Video() for key in self.units}
        self.maps_folder = maps_folder
        self.centre = centre
        self.clips = 0

    def add(self, batch: dict[str, np.ndarray]) -> Iterator[tuple[VideoUnit, _Video]]:
        for key in map(str, np.unique(batch["key"])):
            video = self.videos.get(key)
            if video is None:
                continue  # clips of a video that already failed, arriving late from another actor
            rows = batch["key"] == key
            is_clip = rows & (batch["start"] >= 0)
            video.add(batch["start"][is_clip], batch["error"][is_clip])
            self.clips += int(is_clip.sum())
            if self.maps_folder is not None and is_clip.any():
                if video.maps is None:
                    unit = self.units[key]
                    video.maps = MapSpool(video_path(self.maps_folder, unit.split, unit.video_id, ".maps.npy"))
                video.maps.add(batch["start"][is_clip] + self.centre, batch["map"][is_clip])
            for end in batch["end"][rows & (batch["start"] < 0)]:
                video.end = json.loads(end)
            if video.complete:
                del self.videos[key]
                yield self.units.pop(key), video

    def unfinished(self) -> list[VideoUnit]:
        """Videos whose end row never came: their decoding or scoring task failed for good."""
        for video in self.videos.values():
            if video.maps is not None:
                video.maps.discard()
        return list(self.units.values())


def _score_videos(plan: _Plan, config: ScoreConfig, echo: Callable[[str], None]) -> tuple[list[str], list, list, int]:
    """Runs the pipeline; writes and records each video the moment it is complete. (scored, failed, short, clips)"""
    if not plan.todo:
        return [], [], [], 0
    folder = plan.ledger.folder(plan.source.key)
    collector = _Collector(plan.todo, folder if config.save_maps else None, plan.settings.clip_len // 2)
    scored, failed, short = [], [], []
    started = time.perf_counter()
    width = len(str(len(plan.todo)))
    for batch in score_batches(plan.todo, plan.source, plan.settings, config, echo):
        for unit, video in collector.add(batch):
            outcome = _finish(unit, video, plan, folder)
            if outcome["status"] == "done":
                scored.append(outcome)
            elif outcome["status"] == "short":
                short.append(outcome)
            else:
                failed.append(outcome)
            rate = collector.clips / max(time.perf_counter() - started, 1e-9)
            echo(f"[{len(scored) + len(short) + len(failed):>{width}}/{len(plan.todo)}] {outcome['status']:<6} "
                 f"{unit.key}: {video.end['num_frames']} frames, {video.end['num_clips']} clips  "
                 f"({collector.clips} clips, {rate:.1f} clips/s)")
    for unit in collector.unfinished():
        failed.append({"split": unit.split, "video_id": unit.video_id, "file": unit.source,
                       "reason": "no result: its decoding or scoring task failed (see the Ray logs)"})
    problems = [{k: f[k] for k in ("split", "video_id", "file", "reason")} for f in failed]
    return [o["key"] for o in scored], problems, [o["key"] for o in short], collector.clips


def _finish(unit: VideoUnit, video: _Video, plan: _Plan, folder: Path) -> dict:
    """Writes a complete video's scores, then records it in the ledger; returns its outcome (status, key, ...)."""
    end, settings = video.end, plan.settings
    outcome = {"status": end["status"], "key": unit.key, "split": unit.split, "video_id": unit.video_id}
    if end["status"] == "failed":
        if video.maps is not None:
            video.maps.discard()
        return {**outcome, "file": end["file"], "reason": end["reason"]}
    entry = {"video_id": unit.video_id, "split": unit.split, "source": unit.source, "num_frames": end["num_frames"],
             "num_clips": end["num_clips"], "fps": end.get("fps"), "file": None,
             "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if end["status"] == "done":
        labels = unit.labels(end["num_frames"])
        if len(labels) != end["num_frames"]:
            reason = f"{len(labels)} frame labels for {end['num_frames']} decoded frames"
            return {**outcome, "status": "failed", "file": unit.source, "reason": reason}
        starts, errors = video.clip_errors()
        frame_errors = frames_from_clips(errors, starts, end["num_frames"], settings.clip_len, settings.frame_rule)
        path = video_path(folder, unit.split, unit.video_id, ".parquet")
        write_video_scores(path, unit.video_id, unit.split, frame_errors, anomaly_score(frame_errors), labels)
        if video.maps is not None:
            video.maps.finish(end["num_frames"])
        entry["file"] = str(path.relative_to(plan.ledger.out))
    plan.section["videos"][unit.key] = entry
    plan.ledger.save()
    return outcome


def _worst_images(outputs: Outputs, listing: Listing, source: ModelSource,
                  settings: ScoringSettings) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """The worst frames read again from their videos, with the error map of the clip centred on each."""
    if not outputs.worst:
        return []
    units = {u.key: u for u in listing.units}
    num_frames = {s["key"]: s["num_frames"] for s in outputs.summaries}
    wanted = [w for w in outputs.worst if w["key"] in units]  # a video scored on an earlier night may be gone
    half = settings.clip_len // 2
    starts = {(w["key"], w["frame"]): min(max(0, w["frame"] - half), num_frames[w["key"]] - settings.clip_len)
              for w in wanted}
    clips = {key: clips_at(units[key], settings, {s for (k, _), s in starts.items() if k == key})
             for key in dict.fromkeys(w["key"] for w in wanted)}  # one pass over each video
    model, device = _driver_model(source)
    shown = []
    for worst in wanted:
        start = starts[worst["key"], worst["frame"]]
        clip = clips[worst["key"]].get(start)
        if clip is None:
            continue
        x = clips_to_tensor(clip[None]).to(device)
        with torch.inference_mode():
            recon = model(x)["output"]
        offset = worst["frame"] - start
        shown.append((worst, clip[offset], error_maps(x, recon)[0, offset].cpu().numpy()))
    return shown


def _report(config: ScoreConfig, plan: _Plan, scored: list[str], failed: list[dict], short: list[str], clips: int,
            elapsed: float, outputs: Outputs) -> dict[str, Any]:
    done = set(scored)
    frames = sum(s["num_frames"] or 0 for s in outputs.summaries if s["key"] in done)
    return {
        "ok": not failed,
        "model": plan.source.tags,
        "model_key": plan.source.key,
        "dataset": plan.listing.dataset,
        "data": str(config.root or config.shards),
        "listed": len(plan.listing.units) + len(plan.listing.problems),
        "scored": len(scored),
        "skipped_already_scored": plan.skipped,
        "failed": failed,
        "too_short": short,
        "clips_scored": clips,
        "frames_scored": frames,
        "seconds": round(elapsed, 3),
        "clips_per_s": round(clips / elapsed, 2) if elapsed > 0 else None,
        "frames_per_s": round(frames / elapsed, 2) if elapsed > 0 else None,
        "metrics": outputs.metrics_note,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _mlflow_run(config: ScoreConfig, tags: dict[str, str]) -> contextlib.AbstractContextManager:
    if not config.mlflow:
        return contextlib.nullcontext()
    import mlflow

    name = config.run_name or f"score-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return mlflow.start_run(run_name=name, tags=tags)


def _log_run(config: ScoreConfig, out: Path, outputs: Outputs, plots: list[Path], report: dict,
             settings: ScoringSettings, limit: Threshold) -> None:
    """Params, metrics, plots and output tables in the active MLflow run."""
    import tempfile

    import mlflow

    mlflow.log_params({k: v for k, v in flatten(config).items() if v is not None})
    mlflow.log_params({f"settings.{k}": v for k, v in asdict(settings).items()} | {"threshold_source": limit.source})
    metrics = {k: report[k] for k in ("scored", "skipped_already_scored", "clips_scored", "frames_scored",
                                      "seconds", "clips_per_s", "frames_per_s") if report[k] is not None}
    metrics["failed"] = len(report["failed"])
    if limit.error is not None:
        metrics["threshold_error"] = limit.error
    if outputs.metrics is not None:
        names = ("auc_micro", "auc_macro", "eer", "average_precision")
        metrics.update({k: outputs.metrics[k] for k in names})
        metrics.update({f"global_{k}": outputs.metrics["global"][k] for k in names})
        metrics.update({f"threshold_{k}": outputs.metrics["threshold"][k]
                        for k in ("flag_precision", "flag_recall", "frames_flagged")})
    metrics = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    mlflow.log_metrics(metrics)
    for path in plots:
        mlflow.log_artifact(str(path), "plots")
    for path in [*outputs.files.values(), out / REPORT_FILE]:
        mlflow.log_artifact(str(path), "outputs")
    with tempfile.TemporaryDirectory() as tmp:
        save_config(config, Path(tmp) / "score_config.yaml")
        mlflow.log_artifact(str(Path(tmp) / "score_config.yaml"))
