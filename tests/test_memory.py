"""The memory numerics against the paper's formulas."""

import pytest
import torch
import torch.nn.functional as F

from memae.memory import MemModule, MemoryUnit, hard_shrink_relu, set_shrink_threshold, shrink_for


def test_hard_shrink_keeps_weights_above_lambda_and_zeroes_the_rest():
    w = torch.tensor([0.001, 0.0025, 0.003, 0.5])
    out = hard_shrink_relu(w, lambd=0.0025)
    assert out[0] == 0 and out[1] == 0
    torch.testing.assert_close(out[2:], w[2:], rtol=1e-6, atol=1e-9)


def test_gradient_is_zero_below_lambda_and_flows_above():
    w = torch.tensor([0.001, 0.2], requires_grad=True)
    hard_shrink_relu(w, lambd=0.01).sum().backward()
    assert w.grad[0] == 0
    assert w.grad[1] > 0


def test_rows_sum_to_one_or_zero_after_shrinkage():
    torch.manual_seed(0)
    unit = MemoryUnit(mem_dim=50, fea_dim=8, shrink_thres=0.025)
    queries = torch.randn(200, 8) * torch.logspace(-3, 1, 200).unsqueeze(1)  # from flat to peaked softmax
    att = unit(queries)["att"]
    sums = att.sum(dim=1)
    active = sums > 0
    assert active.any() and (~active).any(), "the test should cover both active and inactive queries"
    torch.testing.assert_close(sums[active], torch.ones(int(active.sum())))
    assert torch.all(att[~active] == 0)
    # Every surviving weight was above lambda before renormalisation.
    raw = F.softmax(queries @ unit.weight.T, dim=1)
    assert torch.all(raw[att > 0] > 0.025)


def test_dot_addressing_matches_the_formula():
    torch.manual_seed(1)
    unit = MemoryUnit(mem_dim=10, fea_dim=4, shrink_thres=0.0)
    z = torch.randn(3, 4)
    out = unit(z)
    w = F.softmax(z @ unit.weight.T, dim=1)
    torch.testing.assert_close(out["att"], w)
    torch.testing.assert_close(out["output"], w @ unit.weight)


def test_cosine_addressing_matches_the_formula_and_differs_from_dot():
    torch.manual_seed(2)
    unit = MemoryUnit(mem_dim=10, fea_dim=4, shrink_thres=0.0, addressing="cosine", temperature=0.5)
    z = torch.randn(3, 4) * 5
    cos = F.cosine_similarity(z.unsqueeze(1), unit.weight.unsqueeze(0), dim=2)
    torch.testing.assert_close(unit(z)["att"], F.softmax(cos / 0.5, dim=1))
    # Cosine addressing ignores the query's norm; dot addressing does not.
    torch.testing.assert_close(unit(z)["att"], unit(z * 3)["att"])
    unit.addressing = "dot"
    assert not torch.allclose(unit(z)["att"], unit(z * 3)["att"])


def test_invalid_addressing_is_refused():
    with pytest.raises(ValueError, match="addressing"):
        MemoryUnit(10, 4, addressing="euclid")


@pytest.mark.parametrize("shape", [(2, 6), (2, 6, 5), (2, 6, 3, 4), (2, 6, 2, 3, 4)])
def test_module_accepts_2_to_5_dims_and_keeps_positions(shape):
    torch.manual_seed(3)
    module = MemModule(mem_dim=7, fea_dim=6, shrink_thres=0.0)
    x = torch.randn(shape)
    out = module(x)
    assert out["output"].shape == x.shape
    assert out["att"].shape == (shape[0], 7, *shape[2:])
    # Position by position, the module equals the unit applied to that position's feature vector.
    queries = x.movedim(1, -1).reshape(-1, 6)
    expected = module.memory(queries)["output"].reshape(shape[0], *shape[2:], 6).movedim(-1, 1)
    torch.testing.assert_close(out["output"], expected)


def test_module_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        MemModule(mem_dim=7, fea_dim=6)(torch.randn(2, 5, 3))


def test_memory_init_is_uniform_in_official_range():
    unit = MemoryUnit(mem_dim=2000, fea_dim=256)
    bound = 1 / 16
    assert unit.weight.abs().max() <= bound
    assert unit.weight.abs().max() > 0.95 * bound


def test_shrink_for_writes_lambda_per_slot():
    assert shrink_for(2000, 2) == pytest.approx(0.001)
    assert shrink_for(500, 1.25) == 0.0025  # cpu-small keeps its historical value exactly
    with pytest.raises(ValueError, match="slots"):
        shrink_for(0, 2)


def test_set_shrink_threshold_reaches_the_memory_through_a_wrapper_and_changes_the_read():
    torch.manual_seed(4)
    wrapper = torch.nn.Sequential(MemModule(mem_dim=50, fea_dim=8, shrink_thres=0.5))  # any wrapper, e.g. DDP
    x = torch.randn(3, 8, 2, 2)
    assert wrapper(x)["att"].sum() == 0, "lambda 0.5 over 50 slots should kill every query"
    assert set_shrink_threshold(wrapper, 0.0) == 1
    assert wrapper[0].memory.shrink_thres == 0.0
    torch.testing.assert_close(wrapper(x)["att"].sum(dim=1), torch.ones(3, 2, 2))
    assert set_shrink_threshold(torch.nn.Linear(2, 2), 0.01) == 0
    with pytest.raises(ValueError, match="non-negative"):
        set_shrink_threshold(wrapper, -0.1)
