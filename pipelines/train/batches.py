"""From blocks of frames to shuffled batches of clips on a Ray Train worker, with the DDP ranks stepping together.

Ray Data moves blocks of consecutive frames (pipelines/ingest/clips.py, `frame_block_dataset`); each worker cuts the
clips of the blocks it receives, mixes them in a seeded buffer and stacks them into batches. Blocks hold different
numbers of clips, so ranks get unequal counts: `Lockstep` runs a step only when every rank has a batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from pipelines.ingest.clips import clips_from_block

T = TypeVar("T")

GO, BUDGET_SPENT, OUT_OF_DATA = 0, 1, 2  # a rank's verdict before a step; the largest one wins everywhere


def block_clips(blocks: Iterable[dict], clip_len: int, stride: int) -> Iterator[np.ndarray]:
    """Every clip of every block, in order, each copied out: a view would keep its whole block (in the object store)
    alive for as long as a shuffle buffer holds the clip."""
    for batch in blocks:
        for frames in batch["frames"]:
            for clip in clips_from_block(frames, clip_len, stride):
                yield clip.copy()


def shuffled(items: Iterable[T], buffer_size: int, rng: np.random.Generator) -> Iterator[T]:
    """`items` in a random order drawn through a buffer of `buffer_size`: the order is set by `rng` alone, and memory
    holds `buffer_size` items whatever the length of the stream."""
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = int(rng.integers(len(buffer)))
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def batched(clips: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Stacks of `size` clips; the last one holds what is left."""
    it = iter(clips)
    while chunk := list(itertools.islice(it, size)):
        yield np.stack(chunk)


def agree(verdict: int) -> int:
    """The largest verdict over all ranks (this rank's own outside DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return verdict
    flag = torch.tensor([float(verdict)])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


class Lockstep:
    """The batches of this rank, one per step, for as long as every rank has one.

    Before each step the ranks agree (one all-reduce): when one has run out of data, the epoch ends on all of them
    and the others skip their surplus clips for this epoch; when one has spent its step or time budget,
    `should_stop` says so on all of them. Without it the rank with more clips would wait for ever in a gradient
    all-reduce that the others never join.
    """

    def __init__(self, batches: Iterable[T], budget_spent: Callable[[int], bool]) -> None:
        self._batches = iter(batches)
        self._budget_spent = budget_spent
        self._stop = False

    def __iter__(self) -> Iterator[T]:
        for steps in itertools.count():
            batch = next(self._batches, None)
            verdict = OUT_OF_DATA if batch is None else BUDGET_SPENT if self._budget_spent(steps) else GO
            agreed = agree(verdict)
            if agreed == OUT_OF_DATA:
                return
            self._stop = agreed == BUDGET_SPENT
            yield batch

    def should_stop(self, steps: int) -> bool:
        """For `train_one_epoch`: whether the budget of any rank ran out before this step."""
        return self._stop
