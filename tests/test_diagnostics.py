import pytest
import torch

from memae.diagnostics import MemoryUsageAccumulator, memory_usage


def test_usage_counts_active_queries_slots_and_distinct_slots():
    # 1 clip, 4 slots, 3 positions: query 0 uses slots 0 and 1, query 1 nothing, query 2 slot 1.
    att = torch.tensor([[0.5, 0.0, 0.0], [0.5, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).unsqueeze(0)
    usage = memory_usage(att)
    assert usage.num_queries == 3
    assert usage.active_query_fraction == 2 / 3
    assert usage.dead_query_fraction == pytest.approx(1 / 3)
    assert usage.mean_active_slots == 1.0
    assert usage.mean_active_slots_when_active == 1.5
    assert usage.distinct_slots == 2


def test_accumulator_over_batches_equals_one_big_batch():
    torch.manual_seed(0)
    batches = [torch.relu(torch.randn(2, 10, 3, 4) - 1.0) for _ in range(3)]
    acc = MemoryUsageAccumulator(10)
    for b in batches:
        acc.update(b)
    assert acc.result() == memory_usage(torch.cat(batches))
    metrics = acc.result().as_dict()
    assert set(metrics) >= {"mem_active_query_fraction", "mem_distinct_slots", "mem_dead_query_fraction"}
    assert metrics["mem_dead_query_fraction"] == 1 - metrics["mem_active_query_fraction"] > 0


def test_no_queries_seen_means_no_dead_queries():
    assert MemoryUsageAccumulator(4).result().dead_query_fraction == 0.0
