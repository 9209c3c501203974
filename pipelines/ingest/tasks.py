"""The per-video tasks of an ingest, streamed through Ray Data: one block, one task, one video.

Each row carries a pickled `VideoTask` in and a pickled `ManifestEntry` out, so both sides work with the typed
objects while Ray Data moves bytes. One block per video: if a decoder crashes its worker, only that video's block
is lost, and it is reported as failed. A shard the output folder would not take comes back as an error and is raised
in the driver (`ShardWriteError`): the job failed, not the video.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator

from memae.datasets.records import Issue
from pipelines.ingest.manifest import ManifestEntry
from pipelines.ingest.worker import ShardWriteError, VideoTask, ingest_video

# CPUs each one-video task asks Ray for. A task decodes on one core, but Ray Data leaves a worker idle about a quarter
# of the time between short tasks (the executor's round trip to start the next): two tasks per CPU keep the cores
# busy (12 x 10 videos of 250 frames at 256x256 on 2 cores: 30.7 s with 1, 24.2 s with 0.5; benchmarks/bench_ingest.py).
TASK_CPUS = 0.5


def run_tasks(tasks: list[VideoTask]) -> Iterator[ManifestEntry]:
    """Runs every task on the Ray cluster already started; yields each video's entry as it finishes.

    Raises:
        ShardWriteError: a worker could not write a shard into the output folder.
    """
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars
    context.max_errored_blocks, context.enable_progress_bars = len(tasks), False
    seen: set[tuple[str, str]] = set()
    try:
        pipeline = ray.data.from_items([{"task": pickle.dumps(t)} for t in tasks], override_num_blocks=len(tasks))
        with warnings.catch_warnings():
            # Ray Data retries a task whose worker died for ever (max_retries=-1): a decoder that crashes on one
            # file would hang the ingest. `max_retries` is only reachable through the deprecated ray_remote_args.
            warnings.simplefilter("ignore", DeprecationWarning)
            pipeline = pipeline.map(_ingest_row, num_cpus=TASK_CPUS, max_retries=1)
        for row in pipeline.iter_rows():
            if row["error"]:
                raise ShardWriteError(row["error"])
            entry: ManifestEntry = pickle.loads(row["entry"])
            seen.add(entry.key)
            yield entry
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
    for task in tasks:  # blocks dropped because their worker died
        if (task.record.split, task.record.video_id) not in seen:
            issue = Issue(str(task.record.source), "the decoding worker crashed (see the Ray logs)")
            yield ManifestEntry.failed(task.record, issue)


def _ingest_row(row: dict[str, bytes]) -> dict[str, bytes | str]:
    """Ray Data task body: one pickled `VideoTask` in, its pickled `ManifestEntry` out, or why its shard could not be
    written (a task that raised would read as a crashed decoder)."""
    try:
        return {"entry": pickle.dumps(ingest_video(pickle.loads(row["task"]))), "error": ""}
    except ShardWriteError as exc:
        return {"entry": b"", "error": str(exc)}
