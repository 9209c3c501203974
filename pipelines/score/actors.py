"""The model at work: a pool of Ray actors that turn streamed frame blocks into clip errors, and the driver's own copy.

One Ray task per video decodes it into blocks of consecutive frames (pipelines/score/data.py); `ScoringActor`s, each
holding the model on its device, cut each block's clips and score them `batch_size` at a time; `score_batches` hands
the driver the scored rows as they finish, one per clip and one end row per video:

    key:   "split/video_id"
    start: 0-based first frame of the clip (-1 on the end row)
    error: the clip's reconstruction error, float64 (NaN on the end row)
    end:   "" on clip rows; the video's `VideoEnd` JSON on its end row
    map:   with save_maps only: float16 (H, W) squared error of the clip's centre frame (zeros on the end row)
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

from memae.presets import ModelSpec
from memae.scoring import clip_errors, error_maps
from memae.training import autocast_for
from memae.transforms import clips_to_tensor
from pipelines.common.resources import cpu_share, torch_threads, wants_gpu
from pipelines.ingest.clips import clips_from_block
from pipelines.registry.source import ModelSource, ScoringSettings
from pipelines.score.config import ScoreConfig, ScoreSetupError
from pipelines.score.data import VideoUnit, video_frame_blocks


class ScoringActor:
    """Holds the model on its device; turns frame blocks into the errors (and centre-frame error maps) of their clips.

    Clips are cut here, not in the decoding task, so that each frame crosses the object store about once instead of
    once per clip that covers it."""

    def __init__(self, spec: ModelSpec, state: dict[str, torch.Tensor], settings: ScoringSettings, device: str,
                 threads: int, save_maps: bool, batch_size: int, bf16: bool = False) -> None:
        """`bf16`: run the model under bf16 autocast (CUDA only; errors are still computed in float32)."""
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch but a block's last has the same shape
        self.model = spec.build()
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        self.settings = settings
        self.save_maps = save_maps
        self.batch_size = batch_size
        self.bf16 = bf16

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Block rows in, clip rows (and end rows) out; see the module docstring."""
        rows = zip(batch["key"], batch["start"], batch["frames"], batch["end"], strict=True)
        parts = [self._block(key, int(start), frames, end) for key, start, frames, end in rows]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _block(self, key: str, first: int, frames: np.ndarray, end: str) -> dict[str, np.ndarray]:
        """The rows of one block: one per clip, or the video's end row (which carries no frames)."""
        if end:
            no_map = np.zeros((1, self.settings.height, self.settings.width), np.float16) if self.save_maps else None
            return self._rows(key, np.array([-1]), np.array([np.nan]), end, no_map)
        stride = self.settings.stride
        clips = clips_from_block(frames, self.settings.clip_len, stride)
        scored = [self._score(clips[i : i + self.batch_size].copy())  # a writable batch, as torch wants
                  for i in range(0, len(clips), self.batch_size)]
        starts = first + stride * np.arange(len(clips), dtype=np.int64)
        return self._rows(key, starts, np.concatenate([errors for errors, _ in scored]), "",
                          np.concatenate([maps for _, maps in scored]) if self.save_maps else None)

    def _rows(self, key: str, starts: np.ndarray, errors: np.ndarray, end: str,
              maps: np.ndarray | None) -> dict[str, np.ndarray]:
        out = {"key": np.array([key] * len(starts)), "start": starts, "end": np.array([end] * len(starts)),
               "error": errors}
        if self.save_maps:
            out["map"] = maps
        return out

    def _score(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(float64 errors, float16 centre-frame maps when saved) of uint8 clips (n, T, H, W, C)."""
        x = clips_to_tensor(torch.from_numpy(clips).to(self.device))  # uint8 to the device: 4x fewer bytes
        with autocast_for(self.device, self.bf16):
            recon = self.model(x)["output"]
        recon = recon.to(x.dtype)
        errors = clip_errors(x, recon, self.settings.error_rule).float().cpu().double().numpy()
        if not self.save_maps:
            return errors, None
        centre = self.settings.clip_len // 2
        return errors, error_maps(x[:, :, centre], recon[:, :, centre]).cpu().numpy().astype(np.float16)


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


def run_precision(config: ScoreConfig, echo: Callable[[str], None]) -> str:
    """The arithmetic the actors will use, settled before the output folder records it: bf16 when asked for and the
    actors get GPUs (Ray is started to know), else fp32; a bf16 that cannot be honoured is said once.

    Raises:
        ScoreSetupError: --use-gpu on a cluster without a GPU.
    """
    if config.precision != "bf16":
        return "fp32"
    from pipelines.common.ray_runtime import init_ray

    init_ray(config.num_cpus)
    if actor_plan(config).device == "cuda":
        return "bf16"
    echo("--precision bf16 applies to GPUs only: scoring on the CPU in fp32")
    return "fp32"


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
            blocks = units.map_batches(video_frame_blocks, batch_size=1, num_cpus=config.decode_cpus, max_retries=1,
                                       fn_kwargs={"settings": settings, "batch_size": config.batch_size})
        scored = blocks.map_batches(
            ScoringActor,
            fn_constructor_kwargs={"spec": source.spec, "state": source.state, "settings": settings,
                                   "device": plan.device, "threads": plan.threads, "save_maps": config.save_maps,
                                   "batch_size": config.batch_size,
                                   "bf16": settings.precision == "bf16" and plan.device == "cuda"},
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            batch_size=1,  # one frame block: its clips make whole model batches
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
