"""Where MLflow writes, decided once for every job.

`MLFLOW_TRACKING_URI` (or an explicit URI) wins; otherwise the embedded default is a SQLite store
`mlflow.db` with artifacts in `mlruns/`, both in the current directory, resolved to absolute paths so
that a job under `ray job submit` (which runs in a temporary copy of the working directory) and a local run
agree on one store. SQLite, not the file store, because the model registry needs a database.

    uri = configure_mlflow(experiment="memae-train")
    # then: mlflow ui --backend-store-uri <uri>
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.common.job_env import durable_path

DEFAULT_DB_NAME = "mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlruns"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """An explicit URI, else `MLFLOW_TRACKING_URI`, else the local SQLite default; relative paths made absolute.

    Under `ray job submit --working-dir` a relative store would live in Ray's temporary copy and be lost: that is
    an error naming the fix.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB_NAME}"
    fix = ("--tracking-uri, or MLFLOW_TRACKING_URI in the job's environment "
           "(ray job submit --runtime-env-json '{\"env_vars\": {\"MLFLOW_TRACKING_URI\": \"...\"}}')")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{durable_path(uri.removeprefix('sqlite:///'), 'the MLflow store', fix)}"
    elif "://" not in uri:
        uri = durable_path(uri, "the MLflow store", fix).as_uri()
    return uri


def artifact_root_for(uri: str) -> str | None:
    """Artifacts beside a local SQLite file; None lets a tracking server choose its own store."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / DEFAULT_ARTIFACT_DIR).as_uri()
    return None


def configure_mlflow(uri: str | None = None, experiment: str = "memae") -> str:
    """Points MLflow at the resolved store and selects (creating if needed) the experiment; returns the URI.

    The URI is also exported as `MLFLOW_TRACKING_URI` so that Ray workers started afterwards log to the
    same store.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = resolve_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_root_for(uri))
    mlflow.set_experiment(experiment)
    return uri


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    return f"mlflow ui --backend-store-uri {uri}"
