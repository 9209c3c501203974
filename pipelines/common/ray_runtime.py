"""Start or join Ray the same way in every job.

Under `ray job submit`, or with RAY_ADDRESS set, a job joins that cluster. Otherwise it starts a local Ray with
explicit resources (on a small machine Ray's own guesses, all cores and 30% of memory for objects, starve the work)
and a watchdog that ends that Ray when the job ends, however it ends (pipelines/common/watchdog.py).

    from pipelines.common.ray_runtime import ray_session
    with ray_session(num_cpus=2):
        ...   # ray.data / ray.train code
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.common.console import forward_worker_logs
from pipelines.common.watchdog import start_watchdog

DEFAULT_OBJECT_STORE_BYTES = 1 << 30


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None, **kwargs) -> bool:
    """Join the cluster named by RAY_ADDRESS, else start a local one; True when this call started Ray.

    Args:
        num_cpus: CPUs of a local Ray (default: all cores). Ignored when joining a cluster.
        object_store_memory: bytes of a local Ray's object store (default 1 GiB, at most a quarter of memory).
        kwargs: passed to `ray.init`.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("log_to_driver", forward_worker_logs())  # worker output stays in Ray's log files
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
        return True
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=object_store_memory or min(DEFAULT_OBJECT_STORE_BYTES, memory // 4),
        # The dashboard serves the state API that Ray Train V2 uses to release a finished run's resources;
        # bound to loopback, it is not reachable from elsewhere.
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        **kwargs,
    )
    start_watchdog(ray._private.worker.global_worker.node.get_session_dir_path())  # ends this Ray however the job ends
    return True


@contextmanager
def ray_session(num_cpus: int | None = None, object_store_memory: int | None = None, **kwargs) -> Iterator[None]:
    """`init_ray` for the duration of a block; shuts Ray down afterwards only if the block started it."""
    import ray

    started = init_ray(num_cpus, object_store_memory, **kwargs)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
