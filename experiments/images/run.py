"""The image benchmark as a job: which images, which protocol, where the results go; then one call runs it all.

    config = BenchJobConfig(dataset="digits", quick=True, no_mlflow=True)
    paths = run(config)          # prints progress and the table; writes table.md, results.csv, ... to config.out_dir
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from experiments.images.benchmark import BenchConfig, run_benchmark
from experiments.images.data import DATASETS, SPLITS, load_image_dataset
from experiments.images.report import log_mlflow, write_outputs
from pipelines.common.config import option

# --quick: a smoke run that still runs every method and writes every file.
QUICK = {"seeds": (0,), "classes": (0, 1), "epochs": 5}


@dataclass(frozen=True)
class BenchJobConfig(BenchConfig):
    """The benchmark's settings plus where the images come from and where the results go (the job's flags)."""

    dataset: str = option("digits", "digits: scikit-learn's bundled 8x8 digits, no download, shown at 16x16 by pixel "
                          "replication; mnist (padded to 32x32) / cifar10: local files", choices=DATASETS)
    root: str | None = option(None, "folder with the MNIST IDX files or the CIFAR-10 binary batches")
    split: str = option("all", "which official part to pool before the one-class splits are drawn", choices=SPLITS)
    quick: bool = option(False, "smoke run: seed 0, classes 0 and 1, 5 epochs (overrides those three)")
    workers: int | None = option(None, "processes, one torch thread each (default: one per CPU core)")
    out: str | None = option(None, "output folder (default: outputs/bench_images/<dataset>)")
    tracking_uri: str | None = option(None, "MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    no_mlflow: bool = option(False, "write the files only")

    def benchmark(self) -> BenchConfig:
        """The settings `run_benchmark` takes (and records), with --quick's values in place."""
        config = BenchConfig(**{f.name: getattr(self, f.name) for f in fields(BenchConfig)})
        return replace(config, **QUICK) if self.quick else config

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("outputs") / "bench_images" / self.dataset

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else os.cpu_count() or 1


def run(config: BenchJobConfig, echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Loads the images, runs every method on every split, writes the files and (unless no_mlflow) the MLflow run.

    Returns the written files by name. Raises `DatasetError` (missing or malformed files) or `ValueError` (a class
    not in the data, a bad setting) before anything is written.
    """
    data = load_image_dataset(config.dataset, config.root, config.split)
    bench = config.benchmark()
    echo(f"{data.name}: {len(data.images)} images of {'x'.join(map(str, data.images.shape[1:]))}, "
         f"{len(np.unique(data.labels))} classes; methods {', '.join(bench.methods)}; seeds {list(bench.seeds)}; "
         f"{config.worker_count} worker(s)")
    result = run_benchmark(data, bench, progress=echo, workers=config.worker_count)
    paths = write_outputs(data, result, config.out_dir)
    echo("")
    echo(paths["table.md"].read_text())
    echo("Wrote " + ", ".join(str(p) for p in paths.values()))
    if not config.no_mlflow:
        echo(f"MLflow: {log_mlflow(data, result, config.out_dir, config.tracking_uri)}")
    return paths
