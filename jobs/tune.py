"""Sweep MemAE's memory size and entropy weight with Ray Tune; each trial a Ray Train run, all tracked in MLflow.

    python jobs/tune.py --shards data/shards --val-shards data/shards --num-samples 6 --epochs 3
    python jobs/tune.py --shards data/shards --search grid --alpha-space choice:0.0002 --scheduler asha
    python jobs/tune.py --config runs/SWEEP/tune_config.yaml --resume      # after an interruption
    python jobs/tune.py --config sweep.yaml --register memae-demo --alias champion

The objective is frame AUC (micro) on --val-shards' labelled test split, else the reconstruction error on normal
training videos held out by --holdout-fraction. Starts a local Ray unless RAY_ADDRESS points at a cluster. Exit
status (the table every job shares, pipelines/common/exit_codes.py): 0 the sweep completed with a best trial, 1 it
did not (no trial measured the objective, or it was interrupted: --resume continues it), 2 could not start (bad
arguments), 3 the sweep itself failed while running (a failed trial does not count).
"""

from __future__ import annotations

import sys

from pipelines.common import exit_codes
from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.tune import config as tune_config
from pipelines.tune.config import TuneConfig


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(TuneConfig, description=__doc__, epilog=tune_config.__doc__)
    config = config_from_args(TuneConfig, parser.parse_args(argv))
    configure_console(config.verbose)
    if not config.shards:
        parser.error("--shards is required (or `shards:` in --config)")
    from pipelines.tune.run import sweep

    try:
        result = sweep(config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.NOT_STARTED
    except Exception as err:  # the sweep itself broke (a failed trial does not raise): say so, exit non-zero
        print(f"sweep failed: {err}", file=sys.stderr)
        return exit_codes.JOB_FAILED
    print(f"mlflow parent run: {result.mlflow_run_id}")
    return exit_codes.OK if result.complete and result.best is not None else exit_codes.INPUTS_FAILED


if __name__ == "__main__":
    sys.exit(main())
