import time

import pytest
import torch

from memae.presets import get_preset
from memae.training import linear_warmup, memory_dim, train_one_epoch


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 1, 8, 32, 32, generator=g) * 2 - 1
    return [base.repeat(2, 1, 1, 1, 1) + 0.05 * torch.randn(2, 1, 8, 32, 32, generator=g) for _ in range(n)]


@pytest.mark.parametrize("arch", ["memae", "ae", "memae-mnad"])
def test_training_reduces_the_loss_and_reports_memory_usage(arch):
    torch.manual_seed(0)
    model = get_preset("cpu-tiny").model.with_arch(arch).build()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = train_one_epoch(model, optimizer, batches(6))
    for _ in range(4):
        last = train_one_epoch(model, optimizer, batches(6))
    assert last.loss < 0.8 * first.loss
    assert first.steps == 6 and first.clips == 12 and len(first.losses) == 6
    if arch != "ae":
        assert last.memory.num_queries == 12 * 1 * 2 * 2  # 12 clips x (8/8 x 32/16 x 32/16) positions
        assert "mem_distinct_slots" in last.metrics()
    else:
        assert last.memory is None and memory_dim(model) is None


def test_step_and_time_budgets_stop_the_epoch():
    model = get_preset("cpu-tiny").model.build()
    optimizer = torch.optim.Adam(model.parameters())
    result = train_one_epoch(model, optimizer, batches(6), should_stop=lambda steps: steps >= 2)
    assert result.steps == 2 and result.stopped_early
    deadline = time.monotonic() - 1
    result = train_one_epoch(model, optimizer, batches(6), should_stop=lambda _: time.monotonic() >= deadline)
    assert result.steps == 0 and result.stopped_early


def test_linear_warmup_ramps_from_zero_to_the_target_and_stays():
    assert [linear_warmup(0.02, epoch, 4) for epoch in range(6)] == pytest.approx([0, 0.005, 0.01, 0.015, 0.02, 0.02])
    assert linear_warmup(0.0002, 0, 0) == 0.0002  # no warm-up: the official recipe
    with pytest.raises(ValueError, match="non-negative"):
        linear_warmup(0.02, 1, -1)
