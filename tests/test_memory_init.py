"""k-means initialisation of the memory from encoder features."""

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from memae.diagnostics import memory_usage
from memae.memory_init import collect_queries, init_memory_from_features, kmeans, kmeans_plus_plus
from memae.models import create_model
from memae.presets import get_preset

TINY = get_preset("cpu-tiny")


def clips(n: int = 8, seed: int = 0, size: int = 8) -> list[torch.Tensor]:
    """n batches of cpu-tiny clips, each a noisy copy of one of four scenes (so the queries form clusters)."""
    g = torch.Generator().manual_seed(seed)
    shape = (TINY.clip_len, TINY.height, TINY.width)
    scenes = torch.rand(4, 1, *shape, generator=g) * 2 - 1
    return [
        (scenes[torch.randint(4, (size,), generator=g)] + 0.2 * torch.randn(size, 1, *shape, generator=g)).clamp(-1, 1)
        for _ in range(n)
    ]


def test_kmeans_finds_separated_blobs_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.3 * torch.randn(50, 2, generator=g) for c in centres])
    found = kmeans(points, 3, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(centres, found).min(dim=1).values
    assert nearest.max() < 0.2
    torch.testing.assert_close(found, kmeans(points, 3, generator=torch.Generator().manual_seed(1)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="distinct points"):
        kmeans(points[:2], 3)


def test_kmeans_plus_plus_draws_every_distinct_point_once_when_k_is_their_count():
    points = torch.randn(20, 5, generator=torch.Generator().manual_seed(2)) * 1e3  # rounding-prone distances
    seeds = kmeans_plus_plus(points, 20, torch.ones(20), torch.Generator().manual_seed(3))
    assert len(torch.unique(seeds, dim=0)) == 20


def test_init_puts_slots_near_queries_and_leaves_fewer_queries_dead_at_step_0():
    data = clips()
    torch.manual_seed(0)
    official = TINY.model.build()
    torch.manual_seed(0)
    model = TINY.model.build()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.eval()
    result = init_memory_from_features(model, data)
    assert result.queries == 8 * 8 * 4 and result.centroids == TINY.model.mem_dim  # 4 positions per 8x32x32 clip
    assert not model.training, "the mode is restored"
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=0, atol=0)  # batch-norm statistics untouched

    queries = collect_queries(model, data)
    for_model = torch.cdist(model.mem_rep.memory.weight.detach(), queries).min(dim=1).values
    for_official = torch.cdist(official.mem_rep.memory.weight.detach(), queries).min(dim=1).values
    assert for_model.max() < for_official.median() and for_model.median() < 0.5 * for_official.median()

    def dead(net):
        net.train()  # the first training step's view
        with torch.no_grad():
            return memory_usage(torch.cat([net(x)["att"] for x in data])).dead_query_fraction

    assert dead(official) > 0.05, "lambda 2/N should leave some queries of the official init dead"
    assert dead(model) < dead(official) / 2


def test_fewer_distinct_queries_than_slots_fill_the_rest_with_noisy_queries():
    model = TINY.model.build()
    same = clips(n=1)[0][:1].repeat(4, 1, 1, 1, 1)  # one clip four times: 4 distinct queries for 100 slots
    result = init_memory_from_features(model, [same], noise=0.01)
    weight = model.mem_rep.memory.weight.detach()
    assert result.centroids == 4 and len(torch.unique(weight, dim=0)) == TINY.model.mem_dim
    queries = collect_queries(model, [same])
    gap = torch.cdist(weight, queries, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert gap[:4].max() < 1e-4 and 0 < gap[4:].max() < 0.1 * queries.std() * queries.shape[1] ** 0.5


def test_init_works_for_the_image_model_and_refuses_a_model_without_memory():
    model = create_model("memae2d", mem_dim=20)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(8, 1, 16, 16, generator=g) * 2 - 1 for _ in range(2)]
    before = model.mem_rep.memory.weight.detach().clone()
    assert init_memory_from_features(model, images).queries == 2 * 8 * 4
    assert not torch.equal(before, model.mem_rep.memory.weight)
    with pytest.raises(ValueError, match="no memory"):
        init_memory_from_features(create_model("ae", width=0.125), clips(n=1))


def test_init_through_ddp_matches_the_bare_model(tmp_path):
    torch.manual_seed(0)
    bare = TINY.model.build()
    wrapped = TINY.model.build()
    wrapped.load_state_dict(bare.state_dict())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(wrapped)
        init_memory_from_features(ddp, clips(n=2))
    finally:
        dist.destroy_process_group()
    init_memory_from_features(bare, clips(n=2))
    torch.testing.assert_close(wrapped.mem_rep.memory.weight, bare.mem_rep.memory.weight)
