"""Ingest a video archive into Parquet frame shards with Ray Data (see pipelines/ingest/run.py).

    python jobs/ingest.py --dataset auto --root /data/UCSD_Anomaly_Dataset.v1p2/UCSDped2 --out data/ped2
    python jobs/ingest.py --dataset videos --root /srv/cctv --out data/cctv --size 128x128 --color rgb
    python jobs/ingest.py --config ingest.yaml --out data/other      # YAML keys are the flags' names

Runs locally (starting its own Ray) or under `ray job submit` (joining that cluster). Rerun the same command to
resume. Exit status: 0 when every video was ingested, 1 when any failed (see ingest_report.json), 2 when the
ingest could not start.
"""

from __future__ import annotations

import sys

import yaml

from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.run import IngestError, ingest


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(IngestConfig, description=__doc__)
    try:
        config = config_from_args(IngestConfig, parser.parse_args(argv))
        config.check()
    except (OSError, ValueError, yaml.YAMLError) as exc:  # an unreadable --config, a YAML typo, a missing --root
        parser.error(str(exc))  # exits with status 2, as for any other bad argument
    configure_console(config.verbose)
    try:
        result = ingest(config, echo=lambda line: print(line, flush=True))
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
