"""Score a whole archive with a trained MemAE: per-frame scores, anomalous segments, AUC when labelled, plots, MLflow.

    python jobs/score.py --model models:/memae-demo@champion --dataset auto --root /data/UCSDped2 --out scores/ped2
    python jobs/score.py --model runs/memae-.../checkpoint.pt --shards data/ped2 --out scores/ped2 --frame-rule centre
    python jobs/score.py --model memae_ped2.pt --dataset ucsd-ped2 --root /data/UCSDped2 --out scores/official
    python jobs/score.py --model models:/cctv@champion --dataset videos --root /srv/cctv --out /srv/scores --incremental

Writes to --out: frame_scores.parquet (a folder any Parquet reader takes as one table, a file per video, so a night
writes only its own: video_id, split, frame, time_s, error, normality, score, score_global, flagged, label),
video_summary.json and segments.parquet (anomalous segments, frames and seconds), metrics.json (labelled data:
auc_micro, auc_macro, eer, average_precision, per-video and global), plots/, score_report.json (counts, failures, notes,
and new_alarms: the alarms in the videos this run scored, highest peak first), report/index.html, ledger.sqlite; and
logs them to one MLflow run. Clip length, size, error and frame rules are the model's unless flags say otherwise (an
official .pt gets the paper's protocol: 16 frames of 256x256, l1 error, each clip scoring its centre frame).
Starts a local Ray unless RAY_ADDRESS points at a cluster (as under `ray job submit`).

What a run does with the results earlier runs of the same model left in --out:
  (default)      scores every listed video again and replaces its per-video file; results of videos not listed this
                 time are kept and stay in the tables. Refused when the settings differ from the earlier runs'.
  --incremental  nightly: scores only the videos this model has not scored into --out yet and those whose file changed
                 since (size or modification time; with --hash its content); a file modified less than --settle-s
                 seconds ago (default 300) may still be being written and is deferred to the next run (reported as
                 deferred: neither scored nor failed), as is one deleted or moved while the run goes on. A killed run
                 is finished by running it again. The tables in --out cover every video scored so far; the run's
                 MLflow artifacts, only the videos it scored.
  --since T      scores only videos modified at or after T (a date, or an age: 7d); older ones this model never
                 scored are left alone: a new model version (a moved @champion) starts from recent footage.
  --restart      discards this model's earlier results in --out first (the only way anything is deleted; other models'
                 results are never touched), then scores as above.
One job writes an output folder at a time; a second one exits with status 4 naming the first (or waits --wait-s).

Exit status (the same table for every job, pipelines/common/exit_codes.py):
  0  every listed video was scored (or skipped as already scored, deferred, or left alone as older than --since)
  1  some inputs failed, each reported with its file and reason in score_report.json; the rest were scored (a retry
     does not help: the files need a person)
  2  the job could not start: bad arguments, model or data not found, settings that contradict earlier runs in --out
  3  the job itself failed while running (the cluster, a node, the MLflow store); retrying may help
  4  another job is writing --out
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from pipelines.common import exit_codes
from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.score.config import ScoreConfig


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(ScoreConfig, description=__doc__)
    try:
        config = config_from_args(ScoreConfig, parser.parse_args(argv))
    except (OSError, ValueError, yaml.YAMLError) as exc:  # an unreadable --config, a YAML typo
        parser.error(str(exc))  # exits with status 2, as for any other bad argument
    configure_console(config.verbose)
    for name in ("out", "root", "shards"):  # under `ray job submit` the working directory is a temporary copy
        if getattr(config, name):
            setattr(config, name, str(Path(getattr(config, name)).resolve()))
    if config.model and "://" not in config.model and Path(config.model).exists():
        config.model = str(Path(config.model).resolve())
    try:
        config.check()
    except ValueError as err:
        parser.error(str(err))
    from pipelines.common.lock import FolderBusy
    from pipelines.score.run import ScoreSetupError, score

    try:
        result = score(config, echo=lambda line: print(line, flush=True))
    except FolderBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.FOLDER_BUSY
    except ScoreSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_codes.NOT_STARTED
    except Exception as err:  # the pipeline itself failed: say so; schedulers retry only this status
        print(f"scoring failed: {type(err).__name__}: {err}", file=sys.stderr)
        return exit_codes.JOB_FAILED
    return exit_codes.OK if result.ok else exit_codes.INPUTS_FAILED


if __name__ == "__main__":
    sys.exit(main())
