"""The whole pipeline on the built-in synthetic corpus: generate -> ingest -> train -> register -> score.

What `make demo` runs. Everything goes under one folder (default outputs/demo), the MLflow store included, and a
re-run reuses what is there: the corpus and shards are kept, training starts a new run, scoring starts over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.synthetic import SynthConfig, write_corpus
from pipelines.common.config import option
from pipelines.common.tracking import ui_command
from pipelines.ingest.run import IngestConfig, ingest
from pipelines.score.config import ScoreConfig
from pipelines.score.review import review_page
from pipelines.score.run import score
from pipelines.train.config import TrainConfig
from pipelines.train.run import train

DEMO_TRAIN_VIDEOS = 8  # two are held out: enough normal frames to calibrate the alarm on video not trained on

@dataclass
class DemoConfig:
    workdir: str = option("outputs/demo", "folder for the corpus, shards, checkpoints, scores and MLflow store")
    preset: str = option("cpu-small", "training preset (cpu-small trains in minutes on 2 cores)")
    epochs: int = option(12, "training epochs (at most; --max-minutes may stop sooner)")
    max_minutes: float = option(6.0, "training budget in minutes")
    seed: int = option(0, "seed of the corpus and the training")
    model_name: str = option("memae-demo", "registered model name (alias: champion)")
    verbose: bool = option(False, "show Ray's and MLflow's own messages on the console (they go to log files)")


@dataclass
class DemoResult:
    auc_micro: float  # the paper's measure: per-video min-max, then frame AUC
    archive_auc: float  # frame AUC of score_global: one scale for every video, as alarms see it
    false_alarm_rate: float  # share of normal test frames inside an alarm
    recall: float  # share of anomalous test frames inside an alarm
    scores_dir: Path
    tracking_uri: str
    model_version: str | None


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    work = Path(config.workdir).resolve()
    raw, shards = work / "corpus", work / "shards"
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if not (raw / "Test" / "UCSDped2.m").exists():
        echo(f"[1/4] generating a synthetic UCSD-Ped2-style corpus in {raw}")
        write_corpus("ucsd-ped2", raw, SynthConfig(seed=config.seed, train_videos=DEMO_TRAIN_VIDEOS))
    else:
        echo(f"[1/4] reusing the corpus in {raw}")
    echo(f"[2/4] ingesting it into frame shards at 64x64 grey in {shards}")
    ingested = ingest(IngestConfig(root=raw, out=shards, dataset="ucsd-ped2", size=(64, 64)), echo=echo)
    if not ingested.ok:
        raise RuntimeError(f"ingest failed for some videos: see {shards / 'ingest_report.json'}")

    echo(f"[3/4] training MemAE ({config.preset}, up to {config.epochs} epochs or {config.max_minutes} min); no test "
         f"label is read: held-out normal videos choose the epoch and calibrate the alarm; registering the chosen "
         f"checkpoint as {config.model_name}@champion")
    trained = train(TrainConfig(
        shards=str(shards), preset=config.preset, epochs=config.epochs,
        max_minutes=config.max_minutes, seed=config.seed, storage_path=str(work / "runs"),
        register=config.model_name, alias="champion", tracking_uri=tracking_uri, experiment="memae-demo",
    ), echo=echo)

    echo(f"[4/4] scoring the test videos with models:/{config.model_name}@champion")
    scored = score(ScoreConfig(
        model=f"models:/{config.model_name}@champion", shards=str(shards), out=str(work / "scores"),
        tracking_uri=tracking_uri, experiment="memae-demo",
    ), echo=echo)
    metrics = json.loads((scored.out / "metrics.json").read_text())
    alarm = metrics["threshold"]
    echo("")
    echo(f"the paper's measure (each video min-max normalised, frame AUC): micro {metrics['auc_micro']:.3f}, "
         f"macro {metrics['auc_macro']:.3f}")
    echo(f"archive-wide (one scale for every video, as alarms see it): frame AUC {metrics['global']['auc_micro']:.3f}")
    echo(f"alarms (error above the {alarm['level']} quantile of held-out normal video): on "
         f"{100 * alarm['false_alarm_rate']:.1f}% of normal test frames (nominal {100 * (1 - alarm['level']):.1f}%), "
         f"{100 * alarm['flag_recall']:.0f}% of anomalous frames caught")
    echo(f"({time.perf_counter() - started:.0f} s in all)")
    echo(f"model: models:/{config.model_name}@champion (version {trained.registered_version}, "
         f"{trained.chosen} checkpoint {trained.checkpoint_path})")
    echo(f"scores, plots and metrics: {scored.out}")
    echo(f"review page (open it in a browser): {review_page(scored.out)}")
    echo(f"MLflow UI: {ui_command(tracking_uri)}   (then open http://127.0.0.1:5000)")
    return DemoResult(metrics["auc_micro"], metrics["global"]["auc_micro"], alarm["false_alarm_rate"],
                      alarm["flag_recall"], scored.out, tracking_uri, trained.registered_version)
