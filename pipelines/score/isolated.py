"""Decoding away from the driver: each video read in a Ray task of its own, so a decoder that dies costs one video.

decord can die in native code on a damaged file: a header that claims 2e9 frames makes it throw std::bad_alloc and
abort its process. The driver holds the whole job, so the reads it needs besides the scoring pipeline (clips of
normal training videos for calibration, the clips behind the worst-frame images) run here, one task per video, a few
at a time, in order; each answers with what it read or with the file and the reason it could not, and a task whose
worker died is that video's failure.

    for unit, clips, failure in read_each([(unit, 256) for unit in units], first_clips, settings, config):
        ...   # clips is None exactly when failure (a VideoOutcome) is not
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ray

from memae.datasets import VideoDecodeError
from pipelines.registry.source import ScoringSettings
from pipelines.score.config import ScoreConfig
from pipelines.score.data import VideoOutcome, VideoUnit

T = TypeVar("T")
Reader = Callable[[VideoUnit, ScoringSettings, Any], T]
IN_FLIGHT = 2  # tasks running ahead of the one awaited: overlap without holding many videos' clips at once


def read_each(requests: Iterable[tuple[VideoUnit, Any]], read: Reader, settings: ScoringSettings,
              config: ScoreConfig) -> Iterator[tuple[VideoUnit, T | None, VideoOutcome | None]]:
    """(unit, read(unit, settings, request), None) or (unit, None, failure) per request, in order, starting Ray if
    needed. Stopping early cancels the reads still running."""
    from pipelines.common.ray_runtime import init_ray

    init_ray(config.num_cpus)
    task = _read.options(num_cpus=config.decode_cpus)
    pending: deque[tuple[VideoUnit, ray.ObjectRef]] = deque()
    todo = iter(requests)
    try:
        while True:
            for unit, request in todo:
                pending.append((unit, task.remote(read, unit, settings, request)))
                if len(pending) > IN_FLIGHT:
                    break
            if not pending:
                return
            unit, ref = pending.popleft()
            try:
                value, failure = ray.get(ref)
            except ray.exceptions.RayError as exc:
                value, failure = None, (unit.source, _plain(exc))
            if failure is None:
                yield unit, value, None
            else:
                yield unit, None, VideoOutcome("failed", unit.split, unit.video_id, *failure)
    finally:
        for _, ref in pending:
            ray.cancel(ref, force=True)


# Retried once, as the scoring pipeline's decoding tasks: a worker lost for another reason gets a second chance.
@ray.remote(max_retries=1)
def _read(read: Reader, unit: VideoUnit, settings: ScoringSettings, request: Any) -> tuple[Any, tuple | None]:
    """Task body: (value, None), or (None, (file, reason)) for a video that cannot be read."""
    try:
        return read(unit, settings, request), None
    except VideoDecodeError as exc:
        return None, (exc.path, exc.reason)
    except Exception as exc:  # anything else about this one input: report it, never lose the job
        return None, (unit.source, f"{type(exc).__name__}: {exc}")


def _plain(exc: ray.exceptions.RayError) -> str:
    """A Ray failure of one read, in words."""
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return "the decoder crashed (its process died); the file is probably damaged"
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return "decoding it ran out of memory"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
