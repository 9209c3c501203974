"""The model at work: a pool of Ray actors that turn streamed clips into clip errors, and the driver's own copy.

One Ray task per video decodes it and cuts clips (pipelines/score/data.py); `ScoringActor`s, each holding the
model on its device, score the clips in batches; `score_batches` hands the driver the scored rows as they finish.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import ray
import ray.data
import torch
from torch import nn

from memae.evaluation import model_clip_errors
from memae.presets import ModelSpec
from memae.scoring import clip_errors, error_maps
from memae.transforms import clips_to_tensor
from pipelines.common.resources import cpu_share, torch_threads, wants_gpu
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.config import ScoreConfig, ScoreSetupError
from pipelines.score.data import VideoUnit, video_clip_batches


class ScoringActor:
    """Holds the model on its device; turns batches of clip rows into clip errors (and centre-frame error maps)."""

    def __init__(self, spec: ModelSpec, state: dict[str, torch.Tensor], settings: ScoringSettings, device: str,
                 threads: int, save_maps: bool) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.model = spec.build()
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        self.settings = settings
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


@dataclass(frozen=True)
class ActorPlan:
    """How many scoring actors, where, and with how much of the cluster each."""

    device: str  # "cuda" or "cpu"
    actors: int
    cpus: float  # per actor
    threads: int  # torch threads per actor

    @property
    def resources(self) -> dict[str, float]:
        """Ray's request for one actor."""
        return {"num_cpus": self.cpus, **({"num_gpus": 1} if self.device == "cuda" else {})}


def actor_plan(config: ScoreConfig) -> ActorPlan:
    """The actors fitted to the running Ray cluster (see pipelines/common/resources.py for the CPU shares).

    On CPUs the actors share what the decoding tasks leave: on 2 CPUs one actor of 1.5 CPUs beside one decoding task
    of 0.5. On GPUs each actor takes one GPU and one CPU.

    Raises:
        ScoreSetupError: --use-gpu on a cluster without a GPU.
    """
    cluster = ray.cluster_resources()
    try:
        use_gpu = wants_gpu(config.use_gpu, cluster)
    except ValueError as exc:
        raise ScoreSetupError(str(exc)) from None
    actors = config.concurrency or (int(cluster.get("GPU", 0)) if use_gpu else 1)
    if config.cpus_per_actor is not None:
        cpus = config.cpus_per_actor
    elif use_gpu:
        cpus = 1.0
    else:  # an actor lives on one node: never ask for more than the largest node has
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
        cpus = cpu_share(min(largest, cluster.get("CPU", 1) - config.decode_cpus), actors)
    return ActorPlan("cuda" if use_gpu else "cpu", actors, cpus, torch_threads(config.torch_threads, cpus))


def score_batches(todo: list[VideoUnit], source: ModelSource, settings: ScoringSettings, config: ScoreConfig,
                  echo: Callable[[str], None]) -> Iterator[dict[str, np.ndarray]]:
    """Batches of scored rows (key, start, error, end[, map]) as the actors finish them, starting Ray if needed."""
    from pipelines.common.ray_runtime import init_ray

    init_ray(config.num_cpus)
    plan = actor_plan(config)
    echo(f"scoring with {plan.actors} actor(s) on {plan.device}, {plan.cpus} CPUs and {plan.threads} torch threads "
         f"each; batches of {config.batch_size} clips")
    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start
    # One block per video: if a decoder crashes its worker, only that video is lost, and it is reported.
    context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start = len(todo), False, False
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
            fn_constructor_kwargs={"spec": source.spec, "state": source.state, "settings": settings,
                                   "device": plan.device, "threads": plan.threads, "save_maps": config.save_maps},
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            batch_size=config.batch_size,
            batch_format="numpy",
            **plan.resources,
        )
        yield from scored.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        context.max_errored_blocks, context.enable_progress_bars, context.print_on_execution_start = saved


def driver_model(source: ModelSource) -> tuple[nn.Module, torch.device]:
    """The model in the driver process (calibration, worst frames), on its GPU when it has one."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return source.build().to(device), device
