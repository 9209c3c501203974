"""The memory module: every feature vector is rebuilt from a sparse mix of N learned normal prototypes.

Follows the official code (donggong1/memae-anomaly-detection, `models/memory_module.py`) so that official
checkpoints load unchanged: the parameter lives at `memory.weight` with shape (mem_dim, fea_dim).

    w  = softmax(d(z, M))            d: dot product (official) or cosine / temperature (the paper's eq. 4)
    w' = relu(w - l) * w / (|w - l| + eps)     hard shrinkage (eq. 7): weights below l become exactly 0
    w' = w' / max(||w'||_1, eps)               L1 renormalisation
    z' = w' M

The paper advises lambda in [1/N, 3/N] (N slots): `shrink_for(N, k)` writes lambda as k/N. The official code's
0.0025 is 5/N for its 2000 slots.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Addressing = Literal["dot", "cosine"]
# The paper's advice for lambda, in units of 1/N.
PAPER_SHRINK_BAND = (1.0, 3.0)


def shrink_for(slots: int, per_slot: float) -> float:
    """The hard-shrinkage lambda `per_slot / slots`: lambda relative to the uniform weight 1/N of N slots."""
    if slots <= 0:
        raise ValueError(f"slots must be positive, got {slots}")
    return per_slot / slots


def hard_shrink_relu(weights: torch.Tensor, lambd: float = 0.0, epsilon: float = 1e-12) -> torch.Tensor:
    """Continuous hard shrinkage: keeps w where w > lambd, zero elsewhere, with a usable gradient above lambd."""
    return F.relu(weights - lambd) * weights / (torch.abs(weights - lambd) + epsilon)


class MemoryUnit(nn.Module):
    """Addresses a (Q, fea_dim) batch of queries into a (mem_dim, fea_dim) memory and reads it back.

    Args:
        mem_dim: number of memory slots N.
        fea_dim: size of each query and slot.
        shrink_thres: hard-shrinkage threshold lambda; 0 turns shrinkage and renormalisation off (MemAE-nonSpar).
        addressing: "dot" (the official code) or "cosine" (the paper), the latter divided by `temperature`.
        temperature: softmax temperature for cosine addressing (1.0 is the paper's formula).
    """

    def __init__(
        self,
        mem_dim: int,
        fea_dim: int,
        shrink_thres: float = 0.0025,
        addressing: Addressing = "dot",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if addressing not in ("dot", "cosine"):
            raise ValueError(f"addressing must be 'dot' or 'cosine', got {addressing!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.mem_dim = mem_dim
        self.fea_dim = fea_dim
        self.shrink_thres = shrink_thres
        self.addressing = addressing
        self.temperature = temperature
        self.weight = nn.Parameter(torch.empty(mem_dim, fea_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.fea_dim)
        nn.init.uniform_(self.weight, -stdv, stdv)

    def address(self, queries: torch.Tensor) -> torch.Tensor:
        """Attention weights (Q, mem_dim) after softmax, shrinkage and renormalisation."""
        if self.addressing == "dot":
            logits = F.linear(queries, self.weight)
        else:
            logits = F.linear(F.normalize(queries, dim=1), F.normalize(self.weight, dim=1)) / self.temperature
        weights = F.softmax(logits, dim=1)
        if self.shrink_thres > 0:
            weights = hard_shrink_relu(weights, lambd=self.shrink_thres)
            weights = F.normalize(weights, p=1, dim=1)
        return weights

    def forward(self, queries: torch.Tensor) -> dict[str, torch.Tensor]:
        weights = self.address(queries)
        return {"output": weights @ self.weight, "att": weights}

    def extra_repr(self) -> str:
        return (
            f"mem_dim={self.mem_dim}, fea_dim={self.fea_dim}, shrink_thres={self.shrink_thres}, "
            f"addressing={self.addressing!r}, temperature={self.temperature}"
        )


class MemModule(nn.Module):
    """Applies a `MemoryUnit` at every position of an N x C, N x C x L, N x C x H x W or N x C x T x H x W map.

    Each spatio-temporal position is one query of C dims. Returns {'output': same shape as the input,
    'att': N x mem_dim x (the input's positions)}.
    """

    def __init__(
        self,
        mem_dim: int,
        fea_dim: int,
        shrink_thres: float = 0.0025,
        addressing: Addressing = "dot",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.mem_dim = mem_dim
        self.fea_dim = fea_dim
        self.memory = MemoryUnit(mem_dim, fea_dim, shrink_thres, addressing, temperature)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        if features.dim() < 2 or features.dim() > 5:
            raise ValueError(f"MemModule expects 2 to 5 dims (N x C x ...), got shape {tuple(features.shape)}")
        if features.shape[1] != self.fea_dim:
            raise ValueError(f"MemModule expects {self.fea_dim} channels, got shape {tuple(features.shape)}")
        n, c, *positions = features.shape
        queries = features.movedim(1, -1).reshape(-1, c)
        read = self.memory(queries)
        output = read["output"].reshape(n, *positions, c).movedim(-1, 1)
        att = read["att"].reshape(n, *positions, self.mem_dim).movedim(-1, 1)
        return {"output": output, "att": att}


def set_shrink_threshold(model: nn.Module, value: float) -> int:
    """Sets lambda of every memory in `model` (bare or DDP-wrapped), e.g. for a warm-up; returns how many it set.

    Give the value the model was built with, ramped: a variant without sparse addressing is built with 0, and any
    other value would switch shrinkage on for it.
    """
    if value < 0:
        raise ValueError(f"shrink threshold must be non-negative, got {value}")
    units = [module for module in model.modules() if isinstance(module, MemoryUnit)]
    for unit in units:
        unit.shrink_thres = value
    return len(units)
