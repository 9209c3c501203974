"""The sweep job's configuration: every training setting, plus what to search and how.

A search dimension is a short string, the same in YAML and on the command line:

    choice:250,500,1000     one of these values (grid search: each of them)
    loguniform:1e-5,1e-2    log-uniform between the bounds (grid search: --grid-points log-spaced values)
    uniform:0,0.01          uniform between the bounds (grid search: --grid-points evenly spaced values)

A one-value choice fixes the setting. A searched setting overrides the training flag of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pipelines.common.config import option
from pipelines.train.config import TrainConfig

SPACE_KINDS = ("choice", "loguniform", "uniform")
INTEGER_SETTINGS = {"mem_dim"}


@dataclass(frozen=True)
class Space:
    kind: str
    values: tuple[float, ...]  # the choices, or the (low, high) bounds of a range
    integer: bool = False

    def grid(self, points: int) -> list[Any]:
        """The values a grid search tries."""
        if self.kind == "choice":
            return list(self.values)
        low, high = self.values
        spaced = np.geomspace(low, high, points) if self.kind == "loguniform" else np.linspace(low, high, points)
        if self.integer:
            return sorted({round(v) for v in spaced})
        return [float(f"{v:.3g}") for v in spaced]  # rounded so that trial names and tables stay readable


def parse_space(text: str, integer: bool = False) -> Space:
    """`choice:a,b,c`, `loguniform:low,high` or `uniform:low,high` -> Space; errors say what was expected."""
    kind, _, rest = text.partition(":")
    if kind not in SPACE_KINDS or not rest:
        raise ValueError(f"search space {text!r}: expected one of {', '.join(k + ':...' for k in SPACE_KINDS)}")
    try:
        values = tuple(float(v) for v in rest.split(","))
    except ValueError:
        raise ValueError(f"search space {text!r}: values must be numbers") from None
    if integer and kind == "choice":
        if any(v != round(v) for v in values):
            raise ValueError(f"search space {text!r}: values must be whole numbers")
        values = tuple(int(v) for v in values)
    if kind != "choice" and not (len(values) == 2 and values[0] < values[1]):
        raise ValueError(f"search space {text!r}: a range needs two bounds, low < high")
    if kind == "loguniform" and values[0] <= 0:
        raise ValueError(f"search space {text!r}: log-uniform bounds must be positive")
    return Space(kind, values, integer)


@dataclass
class TuneConfig(TrainConfig):
    """The training fields keep their meaning for every trial, except those a sweep needs for itself: `name`,
    `resume`, `register`, `alias`, `experiment` and `mlflow_parent_run` are the sweep's."""

    experiment: str = option("memae-tune", "MLflow experiment of the sweep's parent run and its trials")
    name: str | None = option(None, "sweep name (default: generated); an existing name with --resume continues it")
    resume: bool = option(False, "continue the sweep called --name: finished trials are kept, the rest run")
    register: str | None = option(None, "register the best trial's chosen checkpoint under this name")
    mem_dim_space: str = option("choice:250,500,1000,2000,3000", "memory sizes to search (grammar below)")
    alpha_space: str = option("loguniform:1e-5,1e-2", "entropy loss weights to search")
    shrink_thres_space: str | None = option(None, "hard-shrinkage thresholds to search (default: not searched)")
    lr_space: str | None = option(None, "learning rates to search (default: not searched)")
    search: str = option("random", "random: num-samples draws; grid: every combination", choices=["random", "grid"])
    num_samples: int | None = option(None, "random search: trials (default 8); grid search: repeats of the "
                                     "whole grid (default 1)")
    grid_points: int = option(4, "grid search: values taken from each range (log-spaced for loguniform)")
    scheduler: str = option("fifo", "fifo runs every trial to the end; asha stops poor ones early (needs "
                            "--val-every 1)", choices=["fifo", "asha"])
    grace_period: int = option(1, "asha: epochs every trial gets before it can be stopped")
    reduction_factor: int = option(3, "asha: 1 in this many trials goes on at each rung")
    max_concurrent_trials: int | None = option(None, "trials at once (default: what the cluster fits)")
    sweep_minutes: float | None = option(None, "stop the sweep after this wall-clock budget (resumable)")

    def spaces(self) -> dict[str, Space]:
        """Setting name -> its search space, for the settings this sweep searches."""
        texts = {"mem_dim": self.mem_dim_space, "alpha": self.alpha_space,
                 "shrink_thres": self.shrink_thres_space, "lr": self.lr_space}
        return {name: parse_space(text, integer=name in INTEGER_SETTINGS) for name, text in texts.items() if text}

    def train_config(self, **overrides: Any) -> TrainConfig:
        """One trial's training settings: this config's TrainConfig fields, with `overrides` replacing some."""
        return TrainConfig(**({f.name: getattr(self, f.name) for f in fields(TrainConfig)} | overrides))
