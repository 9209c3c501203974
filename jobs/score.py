"""Score a whole archive with a trained MemAE: per-frame scores, anomalous segments, AUC when labelled, plots, MLflow.

    python jobs/score.py --model models:/memae-demo@champion --dataset auto --root /data/UCSDped2 --out scores/ped2
    python jobs/score.py --model runs/memae-.../checkpoint.pt --shards data/ped2 --out scores/ped2 --frame-rule centre
    python jobs/score.py --model memae_ped2.pt --dataset ucsd-ped2 --root /data/UCSDped2 --out scores/official
    python jobs/score.py --model models:/cctv@champion --dataset videos --root /srv/cctv --out /srv/scores --incremental

Writes to --out: frame_scores.parquet (video_id, split, frame, time_s, error, normality, score, score_global, flagged,
label), video_summary.json and segments.parquet (anomalous segments, frames and seconds), metrics.json (labelled data:
auc_micro, auc_macro, eer, average_precision, per-video and global), plots/, score_report.json, ledger.json; and
logs them to one MLflow run. Clip length, size, error and frame rules are the model's unless flags say otherwise (an
official .pt gets the paper's protocol: 16 frames of 256x256, l1 error, each clip scoring its centre frame).
Nightly: --incremental scores only the videos this model version has not scored into --out yet; a killed run is
finished by running it again. Starts a local Ray unless RAY_ADDRESS points at a cluster (as under `ray job submit`).
Exit status: 0 when every video was scored, 1 when any video failed (reported; the rest were scored) or the job
failed while running, 2 when it could not start (bad arguments, model or data not found).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.score.config import ScoreConfig


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(ScoreConfig, description=__doc__)
    config = config_from_args(ScoreConfig, parser.parse_args(argv))
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
    from pipelines.score.run import ScoreSetupError, score

    try:
        result = score(config, echo=lambda line: print(line, flush=True))
    except ScoreSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the pipeline itself failed: say so, exit non-zero for schedulers
        print(f"scoring failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
