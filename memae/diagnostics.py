"""Memory-usage diagnostics, so that a training run can watch the memory collapse or sit idle.

The softmax of an untrained model is nearly uniform, so hard shrinkage zeroes most weights: with the official
2000 slots and lambda = 0.0025 (5/N) nearly every query is dead (all its weights shrunk to 0, it reads nothing),
with lambda = 2/N a few are. "dead queries" should fall as training sharpens the addressing (or start low after
`memae.memory_init`). A collapse shows as "distinct slots" (the active slots) falling to one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class MemoryUsage:
    active_query_fraction: float  # queries with any non-zero weight
    mean_active_slots: float  # non-zero weights per query, over all queries
    mean_active_slots_when_active: float  # the same over active queries only
    distinct_slots: int  # slots used by at least one query
    num_queries: int

    @property
    def dead_query_fraction(self) -> float:
        """Queries whose weights all shrank to 0: the decoder gets a zero vector there."""
        return 1.0 - self.active_query_fraction if self.num_queries else 0.0

    def as_dict(self, prefix: str = "mem_") -> dict[str, float]:
        values = asdict(self) | {"dead_query_fraction": self.dead_query_fraction}
        return {prefix + key: float(value) for key, value in values.items()}


def as_queries(att: torch.Tensor) -> torch.Tensor:
    """Flattens N x mem_dim x (positions) weights to Q x mem_dim."""
    return att.detach().movedim(1, -1).reshape(-1, att.shape[1])


def memory_usage(att: torch.Tensor) -> MemoryUsage:
    """Summarises one batch of memory weights (N x mem_dim x ... or Q x mem_dim)."""
    return MemoryUsageAccumulator(att.shape[1]).update(att).result()


class MemoryUsageAccumulator:
    """Accumulates `memory_usage` over many batches (an epoch) without keeping the weights."""

    def __init__(self, mem_dim: int) -> None:
        self.slot_used = torch.zeros(mem_dim, dtype=torch.bool)
        self.num_queries = 0
        self.num_active = 0
        self.active_weights = 0

    def update(self, att: torch.Tensor) -> MemoryUsageAccumulator:
        nonzero = as_queries(att) > 0
        per_query = nonzero.sum(dim=1)
        self.num_queries += nonzero.shape[0]
        self.num_active += int((per_query > 0).sum())
        self.active_weights += int(per_query.sum())
        self.slot_used |= nonzero.any(dim=0).cpu()
        return self

    def result(self) -> MemoryUsage:
        queries = max(self.num_queries, 1)
        return MemoryUsage(
            active_query_fraction=self.num_active / queries,
            mean_active_slots=self.active_weights / queries,
            mean_active_slots_when_active=self.active_weights / max(self.num_active, 1),
            distinct_slots=int(self.slot_used.sum()),
            num_queries=self.num_queries,
        )
