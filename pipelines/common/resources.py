"""How much of the cluster each Ray worker, actor or trial asks for: one rule for training, tuning and scoring.

Ray Data's read tasks need a free share of a CPU beside the workers that consume their output; on a 2-CPU machine
two one-CPU consumers leave none and the job hangs with "Cluster resources are not enough". So consumers share what
the readers leave, in 0.05-CPU steps (an exact request), and a GPU is asked for only when the cluster has one:
`num_gpus=1` on a CPU-only cluster waits for ever instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

STEPS_PER_CPU = 20  # requests in 0.05-CPU steps: n / 20 is the exact float Ray compares


def cpu_share(free: float, count: int, cap: float = math.inf, minimum: float = 0.1) -> float:
    """`free` CPUs split among `count` equal consumers: at most `cap` each, rounded down to a 0.05 step, and never
    below `minimum`."""
    share = min(cap, free / max(count, 1))
    return max(minimum, math.floor(share * STEPS_PER_CPU + 1e-9) / STEPS_PER_CPU)


def wants_gpu(requested: bool | None, cluster: Mapping[str, float]) -> bool:
    """The user's choice, else whether the cluster has a GPU.

    Raises:
        ValueError: a GPU was asked for on a cluster without one (Ray would wait for it for ever).
    """
    gpus = cluster.get("GPU", 0)
    if requested and gpus < 1:
        raise ValueError("--use-gpu was given but the Ray cluster has no GPU")
    return requested if requested is not None else gpus >= 1


def torch_threads(requested: int | None, cpus: float) -> int:
    """Threads for torch inside one worker: the user's choice, else its whole CPUs (at least one)."""
    return requested or max(1, round(cpus))
