"""Ingest a video archive into Parquet frame shards with Ray Data (see pipelines/ingest/run.py).

    python jobs/ingest.py --dataset auto --root /data/UCSD_Anomaly_Dataset.v1p2/UCSDped2 --out data/ped2
    python jobs/ingest.py --dataset videos --root /srv/cctv --out data/cctv --size 128x128 --color rgb
    python jobs/ingest.py --config ingest.yaml --out data/other      # YAML keys are the flags' names

Runs locally (starting its own Ray) or under `ray job submit` (joining that cluster). Rerun the same command to
resume. One ingest writes an --out folder at a time; a second one waits --wait-s seconds for it, then gives up.

Exit status (the same for every job: pipelines/common/exit_codes.py):
  0  every listed video was ingested
  1  some videos failed, each reported with its file and reason in ingest_report.json; the rest were ingested
     (a rerun will not fix them: the inputs need a person)
  2  the ingest could not start: bad arguments, no archive at --root, an --out folder holding other frames
  3  the job itself failed while running (Ray or a node went away, --out would not take a shard): retry
  4  another job is writing --out (the message names it: host, pid, start time); retry later or use --wait-s
"""

from __future__ import annotations

import sys
import traceback

import yaml

from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.common.exit_codes import FOLDER_BUSY, INPUTS_FAILED, JOB_FAILED, NOT_STARTED, OK
from pipelines.common.lock import FolderBusy
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.run import IngestError, ingest


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(IngestConfig, description=__doc__)
    try:
        config = config_from_args(IngestConfig, parser.parse_args(argv))
        config.check()
    except (OSError, ValueError, yaml.YAMLError) as exc:  # an unreadable --config, a YAML typo, a missing --root
        parser.error(str(exc))  # exits with status 2 (NOT_STARTED), as for any other bad argument
    configure_console(config.verbose)
    try:
        result = ingest(config, echo=lambda line: print(line, flush=True))
    except IngestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return NOT_STARTED
    except FolderBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FOLDER_BUSY
    except Exception as exc:  # anything else is the job's failure, not an input's: a retry may succeed
        traceback.print_exc()
        print(f"error: the ingest itself failed ({type(exc).__name__}: {exc}); what finished is recorded in the "
              "manifest, and rerunning the same command resumes", file=sys.stderr)
        return JOB_FAILED
    return OK if result.ok else INPUTS_FAILED


if __name__ == "__main__":
    sys.exit(main())
