"""What a job prints: its own progress, once, with Ray's and MLflow's internals out of the way.

Ray and MLflow log at INFO to the console by default (cluster start-up, Ray Data plans, Ray Train reports,
checkpoint messages); a job's console is for its epochs, videos and results. `configure_console(verbose=False)`
turns those loggers to WARNING; `--verbose` on any job keeps them.
"""

from __future__ import annotations

import logging
import os

QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic")


def configure_console(verbose: bool = False) -> None:
    """Quiets Ray and MLflow in this process and in the Ray workers it starts, unless `verbose`."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
