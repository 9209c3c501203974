"""Memory-usage diagnostics, so that a training run can watch the memory collapse or sit idle.

With 2000 slots and lambda = 0.0025 the softmax of an untrained model is nearly uniform (1/2000 < lambda), so
hard shrinkage zeroes every weight and most queries read nothing: "active queries" starts near 0 and should
rise as training sharpens the addressing. A collapse shows as "distinct slots" falling to one.
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

    def as_dict(self, prefix: str = "mem_") -> dict[str, float]:
        return {prefix + key: float(value) for key, value in asdict(self).items()}


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
