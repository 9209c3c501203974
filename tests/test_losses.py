import math

import torch

from memae.losses import entropy_loss, memae_loss


def test_entropy_is_per_query_sum_averaged_over_queries():
    # Two queries over 4 slots, arranged N x mem_dim x positions: one uniform, one one-hot.
    att = torch.tensor([[0.25, 1.0], [0.25, 0.0], [0.25, 0.0], [0.25, 0.0]]).unsqueeze(0)
    assert math.isclose(entropy_loss(att).item(), (math.log(4) + 0.0) / 2, rel_tol=1e-6)


def test_loss_is_mse_plus_alpha_entropy():
    x = torch.zeros(1, 1, 2, 2)
    att = torch.full((1, 4, 1, 1), 0.25)
    parts = memae_loss(x, {"output": torch.ones(1, 1, 2, 2), "att": att}, alpha=0.5)
    assert math.isclose(parts.reconstruction.item(), 1.0)
    assert math.isclose(parts.entropy.item(), math.log(4), rel_tol=1e-6)
    assert math.isclose(parts.total.item(), 1.0 + 0.5 * math.log(4), rel_tol=1e-6)


def test_plain_autoencoder_has_no_entropy_term():
    x = torch.zeros(1, 1, 2, 2)
    parts = memae_loss(x, {"output": torch.full((1, 1, 2, 2), 2.0), "att": None})
    assert parts.entropy.item() == 0 and parts.total.item() == 4.0
