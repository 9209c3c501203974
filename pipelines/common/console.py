"""What a job prints: its own progress, once, with Ray's and MLflow's internals out of the way.

Left alone, a job's console fills with Ray and MLflow internals: cluster start-up notices, Ray Data execution
plans, every Ray Train report and checkpoint message forwarded from the workers, MLflow's database migrations and
registry notices. `configure_console()` keeps them in Ray's and MLflow's log files (or drops the INFO ones) so that
a job prints its epochs, videos and results, and each once; `--verbose` on every job keeps everything.
"""

from __future__ import annotations

import logging
import os

# Loggers whose INFO is internal detail; their warnings still show.
INTERNAL_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic")
# Messages at WARNING that say nothing about this job's work: that token authentication is on (as it should
# be) and that Ray Data's progress bars are off (the jobs print their own progress).
NOTICE_LOGGERS = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress")

_verbose = True  # until configure_console() says otherwise: library use keeps every message


def configure_console(verbose: bool = False) -> None:
    """Quiets Ray and MLflow in this process and in the Ray it starts (see `forward_worker_logs`), unless
    `verbose`. Call it first thing in a job, before Ray or MLflow are imported."""
    global _verbose
    _verbose = verbose
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read by MLflow when it is imported
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # read by Ray Data when it is imported, here and in workers
    for name in INTERNAL_LOGGERS:  # already imported: set the level directly
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def forward_worker_logs() -> bool:
    """Whether a Ray started or joined by this process forwards its workers' output to this console."""
    return _verbose
