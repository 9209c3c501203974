"""Train MemAE on clip shards with Ray Train, track it in MLflow, optionally register it.

    python jobs/train.py --shards data/shards --epochs 5 --register memae-demo --alias champion
    ray job submit --working-dir . -- python jobs/train.py --shards /abs/shards --num-workers 2
    python jobs/train.py --config train.yaml --max-minutes 30

Starts a local Ray unless RAY_ADDRESS points at a cluster (as it does under `ray job submit`). The MLflow store is
MLFLOW_TRACKING_URI, else ./mlflow.db. Exit status (the same table for every job, pipelines/common/exit_codes.py):
0 trained (and registered if asked), 2 could not start (bad arguments, no corpus, a run of that name exists),
3 training failed while running (a retry with --resume --name continues from the last checkpoint).
"""

from __future__ import annotations

import sys

from pipelines.common import exit_codes
from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.train.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(TrainConfig, description=__doc__)
    config = config_from_args(TrainConfig, parser.parse_args(argv))
    configure_console(config.verbose)
    if not config.shards:
        parser.error("--shards is required (or `shards:` in --config)")
    from pipelines.train.run import train

    try:
        result = train(config, echo=lambda line: print(line, flush=True))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.NOT_STARTED
    except Exception as err:  # a failed Ray Train run: say so, exit non-zero for schedulers
        print(f"training failed: {err}", file=sys.stderr)
        return exit_codes.JOB_FAILED
    print(f"checkpoint: {result.checkpoint_path}")
    print(f"mlflow run: {result.mlflow_run_id}")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
