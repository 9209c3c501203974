"""Initialising the memory from encoder features (k-means), so that training starts with slots where queries are.

The official initialisation draws every slot uniformly in +-1/sqrt(C), far from what the encoder produces: the
softmax over slots is nearly flat and hard shrinkage leaves many queries dead at step 0 (`memae.diagnostics`).
Slots set to k-means centroids of the untrained encoder's queries give each query slots it clearly prefers.

    model = spec.build()
    init_memory_from_features(model, loader, max_batches=8, seed=0)   # loader: N x C x T x H x W clips in [-1, 1]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from memae.checkpoint import unwrap

# Points per distance block in the Lloyd steps: bounds memory to CHUNK x k distances whatever the query count.
CHUNK = 4096


@dataclass(frozen=True)
class MemoryInit:
    queries: int  # query vectors clustered, after subsampling
    centroids: int  # slots set to centroids; the other mem_dim - centroids are noisy copies of random queries


@torch.no_grad()
def collect_queries(model: nn.Module, batches: Iterable[torch.Tensor], max_batches: int = 8) -> torch.Tensor:
    """The memory's queries (Q x C, one per spatio-temporal position) for the first `max_batches` batches.

    The encoder runs in training mode, as training will first see it (batch statistics, not the untrained running
    ones, which squash every query towards 0); the batch-norm buffers are restored afterwards.
    """
    bare = unwrap(model)
    buffers = {name: buffer.clone() for name, buffer in bare.named_buffers()}
    was_training = bare.training
    device = bare.mem_rep.memory.weight.device
    bare.train()
    try:
        queries = [
            bare.encoder(x.to(device)).movedim(1, -1).reshape(-1, bare.mem_rep.fea_dim).float()
            for x in itertools.islice(batches, max_batches)
        ]
    finally:
        bare.train(was_training)
        for name, buffer in bare.named_buffers():
            buffer.copy_(buffers[name])
    if not queries:
        raise ValueError("no batches to collect memory queries from")
    return torch.cat(queries)


def kmeans_plus_plus(points: torch.Tensor, k: int, weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """k of the distinct `points`, each drawn with probability proportional to its weight times its squared distance
    to the nearest one drawn before (the first by weight alone)."""
    squared = points.pow(2).sum(dim=1)
    nearest = torch.full_like(squared, float("inf"))
    chosen = [int(torch.multinomial(weights.cpu().double(), 1, generator=generator))]
    for _ in range(k - 1):
        index = chosen[-1]
        nearest = torch.minimum(nearest, (squared - 2 * points @ points[index] + squared[index]).clamp(min=0))
        nearest[index] = 0  # exactly, whatever the rounding: a point drawn is never drawn again
        chosen.append(int(torch.multinomial((weights * nearest).cpu().double(), 1, generator=generator)))
    return points[chosen].clone()


def kmeans(
    points: torch.Tensor,
    k: int,
    iterations: int = 10,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """k centroids (k x C) of Q x C distinct points, optionally weighted (e.g. by how often each occurs).

    k-means++ seeds, then Lloyd steps until no point changes cluster; a cluster left without points keeps its
    centroid. Deterministic given the generator's state (seed 0 without one).
    """
    if not 0 < k <= len(points):
        raise ValueError(f"k-means needs 1 <= k <= the number of distinct points, got k={k} for {len(points)}")
    weights = torch.ones(len(points), device=points.device) if weights is None else weights
    weights = weights.to(points.dtype)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    centroids = kmeans_plus_plus(points, k, weights, generator)
    assignment = None
    for _ in range(iterations):
        new = torch.cat([torch.cdist(block, centroids).argmin(dim=1) for block in points.split(CHUNK)])
        if assignment is not None and torch.equal(new, assignment):
            break
        assignment = new
        mass = torch.zeros(k, dtype=points.dtype, device=points.device).index_add_(0, assignment, weights)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points * weights.unsqueeze(1))
        filled = mass > 0
        centroids[filled] = sums[filled] / mass[filled].unsqueeze(1)
    return centroids


@torch.no_grad()
def init_memory_from_features(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    max_batches: int = 8,
    max_queries: int = 20_000,
    iterations: int = 10,
    noise: float = 0.01,
    seed: int = 0,
) -> MemoryInit:
    """Sets the memory of `model` (MemAE3D or MemAE2D, bare or DDP-wrapped) to k-means centroids of its queries.

    Queries come from the encoder on the first `max_batches` batches, at most `max_queries` of them drawn at random,
    and k = mem_dim. With fewer distinct queries than slots, the remaining slots are random queries plus Gaussian
    noise of `noise` times the queries' standard deviation. Under DDP every rank must call it: rank 0's memory is
    broadcast, so the replicas stay identical.
    """
    bare = unwrap(model)
    if getattr(bare, "mem_rep", None) is None:
        raise ValueError("this model has no memory to initialise")
    weight = bare.mem_rep.memory.weight
    generator = torch.Generator().manual_seed(seed)
    queries = collect_queries(model, batches, max_batches)
    if len(queries) > max_queries:
        queries = queries[torch.randperm(len(queries), generator=generator)[:max_queries].to(queries.device)]
    slots = weight.shape[0]
    distinct, counts = torch.unique(queries, dim=0, return_counts=True)
    k = min(slots, len(distinct))
    memory = kmeans(distinct, k, iterations, counts, generator)
    if k < slots:
        picks = torch.randint(len(queries), (slots - k,), generator=generator).to(queries.device)
        jitter = torch.randn(slots - k, queries.shape[1], generator=generator).to(queries.device)
        memory = torch.cat([memory, queries[picks] + noise * queries.std() * jitter])
    weight.copy_(memory)
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(weight, src=0)
    return MemoryInit(queries=len(queries), centroids=k)
