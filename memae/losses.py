"""The MemAE training objective: reconstruction MSE plus alpha times the entropy of the memory weights.

Minimising the entropy pushes each query to address few slots (the paper's eq. 9); the official code weighs it
by alpha = 0.0002. The plain autoencoder has no weights and so no entropy term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_ALPHA = 0.0002


def entropy_loss(att: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over queries of -sum_i w_i log(w_i + eps); `att` is N x mem_dim x (positions) or Q x mem_dim."""
    per_query = -(att * torch.log(att + eps)).sum(dim=1)
    return per_query.mean()


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    reconstruction: torch.Tensor
    entropy: torch.Tensor


def memae_loss(
    x: torch.Tensor, output: dict[str, torch.Tensor | None], alpha: float = DEFAULT_ALPHA
) -> LossParts:
    """MSE(mean) + alpha * entropy, with the parts kept apart for logging."""
    reconstruction = F.mse_loss(output["output"], x)
    att = output.get("att")
    entropy = entropy_loss(att) if att is not None else reconstruction.new_zeros(())
    return LossParts(reconstruction + alpha * entropy, reconstruction, entropy)
