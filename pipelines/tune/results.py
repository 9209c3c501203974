"""A sweep's results: one row per trial from Tune and MLflow, the table, and the artifacts on the parent run."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from pipelines.common.config import save_config
from pipelines.train.config import TrainConfig
from pipelines.train.worker import CHECKPOINT_FILE
from pipelines.tune.plan import MODES
from pipelines.tune.plots import sweep_plot
from pipelines.tune.trials import trial_error

PLOTTED = ("mem_dim", "alpha")


def child_runs(experiment: str, parent_run_id: str, sweep_name: str) -> dict[str, Any]:
    """Trial id -> its MLflow run (nested under the sweep's parent run)."""
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", output_format="list")
    prefix = f"{sweep_name}-"
    return {run.data.tags["memae.run_name"].removeprefix(prefix): run for run in runs
            if run.data.tags.get("memae.run_name", "").startswith(prefix)}


def best_epoch(frame: pd.DataFrame, objective: str) -> pd.Series | None:
    """The epoch the trial's training run chose: best by the objective, ties to the later epoch (as Ray Train's
    checkpoint retention keeps it)."""
    if objective not in frame:
        return None
    measured = frame.dropna(subset=[objective])
    if measured.empty:
        return None
    sign = 1 if MODES[objective] == "max" else -1
    order = sorted(measured.index, key=lambda i: (sign * measured.at[i, objective], measured.at[i, "epoch"]))
    return measured.loc[order[-1]]


def trial_rows(experiment_path: str, objective: str, searched: list[str], runs: dict[str, Any]) -> list[dict]:
    """One row per trial: how it ended, its settings, its best epoch and that epoch's checkpoint; best first.

    A trial ended by Tune without error "finished" when its training run did (its MLflow run is FINISHED), else it
    was "stopped" from outside: by ASHA, a time budget or an interruption.
    """
    analysis = tune.ExperimentAnalysis(experiment_path)
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        run = runs.get(trial.trial_id)
        status = trial.status.lower()
        if trial.status == "TERMINATED":
            status = "finished" if run is not None and run.info.status == "FINISHED" else "stopped"
        elif trial.status == "ERROR":
            status = "failed"
        row: dict[str, Any] = {"trial": trial.trial_id, "status": status}
        row |= {k: trial.config.get(k) for k in searched}
        frame = frames.get(trial.trial_id, pd.DataFrame())
        row["epochs"] = int(frame["epoch"].max()) if "epoch" in frame and len(frame) else 0
        row[objective] = None
        best = best_epoch(frame, objective)
        if best is not None:
            row |= {objective: float(best[objective]), "best_epoch": int(best["epoch"]),
                    "train_loss": float(best["train_loss"])}
            row |= {k: float(best[k]) for k in (*_LABELLED_EXTRAS, "holdout_error") if k in best and k != objective}
            row["checkpoint"] = str(Path(best["checkpoint_path"]) / CHECKPOINT_FILE)
        row["mlflow_run"] = run.info.run_id if run is not None else None
        if status == "failed":
            row["error"] = trial_error(trial)
        rows.append(row)
    sign = -1 if MODES[objective] == "max" else 1
    return sorted(rows, key=lambda r: sign * r[objective] if r[objective] is not None else math.inf)


def close_stopped_runs(runs: dict[str, Any]) -> None:
    """Once Tune has returned no trial runs: a child run still marked running was stopped from outside before
    train() could end it, and says so."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in runs.values():
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")


_LABELLED_EXTRAS = ("val_auc_macro", "val_eer", "oracle_val_auc_macro", "oracle_val_eer")


def table_columns(objective: str, searched: list[str]) -> list[str]:
    prefix = "oracle_" if objective.startswith("oracle_") else ""
    extra = {"val_auc_micro": [f"{prefix}val_auc_macro", f"{prefix}val_eer"],
             "pseudo_auc": ["holdout_error"]}.get(objective.removeprefix("oracle_"), [])
    return ["trial", "status", *searched, "epochs", objective, "best_epoch", *extra, "train_loss"]


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def log_sweep_artifacts(rows: list[dict[str, Any]], table: str, best_config: TrainConfig | None, objective: str,
                        searched: list[str]) -> None:
    """The results table (CSV and Markdown), the best trial's training config and the sweep plot, on the parent."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pd.DataFrame(rows).to_csv(folder / "sweep_results.csv", index=False)
        (folder / "sweep_results.md").write_text(table + "\n")
        mlflow.log_artifact(str(folder / "sweep_results.csv"))
        mlflow.log_artifact(str(folder / "sweep_results.md"))
        if best_config is not None:
            save_config(best_config, folder / "best_config.yaml")
            mlflow.log_artifact(str(folder / "best_config.yaml"))
        if any(r[objective] is not None for r in rows):
            plotted = [k for k in searched if k in PLOTTED] or searched
            mlflow.log_artifact(str(sweep_plot(rows, objective, plotted, folder / "sweep.png")), "plots")
