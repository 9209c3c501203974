"""The worker's side of the block data path: cutting, shuffling, batching, and DDP ranks that step together."""

from __future__ import annotations

import multiprocessing
import socket

import numpy as np
import pytest

from pipelines.train.batches import Lockstep, batched, block_clips, shuffled


def test_shuffle_is_a_permutation_set_by_the_seed_alone():
    items = list(range(100))
    first = list(shuffled(items, 16, np.random.default_rng(7)))
    assert sorted(first) == items and first != items
    assert list(shuffled(items, 16, np.random.default_rng(7))) == first
    assert list(shuffled(items, 16, np.random.default_rng(8))) != first
    assert list(shuffled(items, 1000, np.random.default_rng(7))) != first  # the buffer is part of the recipe
    assert list(shuffled([], 4, np.random.default_rng(0))) == []


def test_shuffle_holds_at_most_its_buffer():
    consumed = []

    def source():
        for i in range(50):
            consumed.append(i)
            yield i

    out = shuffled(source(), 8, np.random.default_rng(0))
    for got in range(1, 20):
        next(out)
        assert len(consumed) - got <= 8  # taken from the source but not yet given out


def test_block_clips_are_owned_copies_in_block_order():
    blocks = [np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), np.arange(20, 26, dtype=np.uint8).reshape(6, 1, 1, 1)]
    clips = list(block_clips([{"frames": blocks[:1]}, {"frames": blocks[1:]}], clip_len=4, stride=3))
    assert [int(c[0, 0, 0, 0]) for c in clips] == [0, 3, 6, 20]
    assert all(c.shape == (4, 1, 1, 1) and c.flags.owndata and c.flags.writeable for c in clips)
    assert np.array_equal(clips[-1].ravel(), [20, 21, 22, 23])
    ragged = np.empty(2, dtype=object)  # what Ray gives when blocks of different lengths share a Ray block
    ragged[:] = blocks
    assert len(list(block_clips([{"frames": ragged}], 4, 3))) == 4


def test_batches_are_full_but_the_last():
    clips = [np.full((2, 1, 1, 1), i, np.uint8) for i in range(7)]
    assert [b.shape[0] for b in batched(clips, 3)] == [3, 3, 1]


def test_lockstep_alone_runs_out_of_data_or_stops_on_the_budget():
    steps = Lockstep(iter("abc"), budget_spent=lambda _: False)
    assert list(steps) == list("abc") and not steps.should_stop(3)
    steps = Lockstep(iter("abcdef"), budget_spent=lambda done: done >= 2)
    taken = []
    for batch in steps:
        if steps.should_stop(len(taken)):
            break
        taken.append(batch)
    assert taken == ["a", "b"]


def _rank(rank: int, port: int, batches: int, budget: int | None, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    steps = Lockstep(range(batches), budget_spent=lambda done: budget is not None and done >= budget)
    taken, stopped = 0, False
    for _ in steps:
        if steps.should_stop(taken):
            stopped = True
            break
        taken += 1
    dist.barrier()  # would wait for ever if one rank were still stepping
    out.put((rank, taken, stopped))
    dist.destroy_process_group()


@pytest.mark.parametrize("batches, budgets, expected", [
    ((5, 3), (None, None), (3, False)),  # unequal shards: both stop when the shorter runs out
    ((0, 4), (None, None), (0, False)),
    ((6, 6), (None, 2), (2, True)),  # one rank's budget (its clock, say) stops both
    ((2, 6), (None, 2), (2, False)),  # out of data and out of budget at once: the epoch simply ended
])
def test_lockstep_ranks_take_the_same_steps_however_their_data_differs(batches, budgets, expected):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    ranks = [context.Process(target=_rank, args=(rank, port, batches[rank], budgets[rank], out)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    try:
        results = sorted(out.get(timeout=120) for _ in ranks)
    finally:
        for process in ranks:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert results == [(0, *expected), (1, *expected)]
