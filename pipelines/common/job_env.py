"""Where a job runs: under `ray job submit --working-dir`, the current directory is Ray's temporary copy.

Anything written relative to it (a default ./mlflow.db, ./runs checkpoints) disappears with the job, so jobs turn
such paths into a clear error instead of a silent loss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint process


def submitted_with_working_dir() -> bool:
    """True inside the entrypoint of a Ray job submitted with a working_dir."""
    try:
        config = json.loads(os.environ.get(JOB_CONFIG_ENV, "{}"))
    except json.JSONDecodeError:
        return False
    return bool((config.get("runtime_env") or {}).get("working_dir"))


def durable_path(path: str | os.PathLike, what: str, flag: str) -> Path:
    """`path` made absolute; an error when it is relative inside a submitted job's temporary working dir."""
    path = Path(path)
    if not path.is_absolute() and submitted_with_working_dir():
        raise ValueError(
            f"{what} {str(path)!r} is relative, and this job runs in Ray's temporary copy of its working "
            f"directory, which is deleted afterwards: pass an absolute path with {flag}"
        )
    return path.resolve()
