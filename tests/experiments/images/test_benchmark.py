"""The methods of the image benchmark, and a tiny end-to-end run of the job with its files and MLflow run."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.images.benchmark import (
    METHODS,
    BenchConfig,
    kde_scores,
    ocsvm_scores,
    run_benchmark,
    train_network,
)
from experiments.images.data import ImageDataset, load_digits
from experiments.images.plots import reconstruction_panel

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "jobs"))
import bench_images  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits()


def test_config_fills_in_the_papers_sizes():
    grey = BenchConfig().for_data(1)
    assert (grey.channels, grey.mem_dim, grey.shrink_thres) == ((16, 32, 64), 100, pytest.approx(0.01))
    colour = BenchConfig().for_data(3)
    assert (colour.channels, colour.mem_dim, colour.shrink_thres) == ((64, 128, 256), 500, pytest.approx(0.002))
    assert BenchConfig(mem_dim=50, shrink_thres=0.0).for_data(1).shrink_thres == 0.0
    with pytest.raises(ValueError, match="unknown or no methods"):
        BenchConfig(methods=("VAE",))


def test_the_three_networks_differ_only_in_the_memory(digits):
    x = torch.rand(12, 1, 16, 16) * 2 - 1
    config = BenchConfig(epochs=1).for_data(1)
    models = {m: train_network(m, x, config, seed=0)[0] for m in ("AE", "MemAE-nonSpar", "MemAE")}
    assert models["AE"].mem_rep is None
    assert models["MemAE-nonSpar"].mem_rep.memory.shrink_thres == 0.0
    assert models["MemAE"].mem_rep.memory.shrink_thres == pytest.approx(0.01)
    assert models["MemAE"].mem_rep.memory.mem_dim == 100
    assert all(not model.training for model in models.values())
    shapes = {m: [p.shape for name, p in model.named_parameters() if not name.startswith("mem_rep")]
              for m, model in models.items()}
    assert shapes["AE"] == shapes["MemAE"] == shapes["MemAE-nonSpar"]


def test_training_reduces_reconstruction_error(digits):
    x = torch.from_numpy(digits.images[digits.labels == 0][:48]).permute(0, 3, 1, 2).float() / 127.5 - 1
    _, one_epoch = train_network("AE", x, BenchConfig(epochs=1).for_data(1), seed=0)
    _, ten_epochs = train_network("AE", x, BenchConfig(epochs=10).for_data(1), seed=0)
    assert ten_epochs < 0.5 * one_epoch


def test_classical_baselines_score_outliers_higher():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 5))
    test = np.concatenate([rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + 6])
    assert ocsvm_scores(train, test, nu=0.1)[20:].min() > np.median(ocsvm_scores(train, test, nu=0.1)[:20])
    scores, chosen = kde_scores(train, test, folds=5, seed=0)
    assert scores[20:].min() > scores[:20].max()
    assert 0.1 < chosen["bandwidth"] < 3 and chosen["bandwidth_on_grid_edge"] == 0.0


def test_results_do_not_depend_on_the_number_of_workers(digits):
    config = BenchConfig(seeds=(0,), classes=(0, 1), methods=("KDE", "MemAE"), epochs=1)
    serial = run_benchmark(digits, config, workers=1)
    pooled = run_benchmark(digits, config, workers=2)
    assert [(r.method, r.normal_class) for r in serial.results] == [
        ("KDE", 0), ("MemAE", 0), ("KDE", 1), ("MemAE", 1)]
    assert [r.auc for r in serial.results] == [r.auc for r in pooled.results]
    assert serial.figure.normal_class == 0 and pooled.figure.normal_class == 0


def test_reconstruction_panel_draws_every_row(tmp_path):
    inputs = np.zeros((3, 16, 16, 1), np.uint8)
    path = reconstruction_panel(inputs, {"AE": inputs, "MemAE": inputs + 255}, tmp_path / "f" / "p.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.height > image.width * 0.5
    with pytest.raises(ValueError, match="row 'AE'"):
        reconstruction_panel(inputs, {"AE": inputs[:2]}, tmp_path / "q.png")


def test_job_end_to_end_writes_tables_figure_and_an_mlflow_run(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # configure_mlflow exports it; restored after the test
    out = tmp_path / "out"
    code = bench_images.main(["--classes", "0", "1", "--seeds", "0", "--epochs", "2", "--workers", "1",
                              "--out", str(out), "--tracking-uri", uri])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[2/2] seed 0 class 1" in printed  # progress
    assert "| Method | digits (ours) | MNIST (paper) | CIFAR-10 (paper) |" in printed
    for method in METHODS:
        assert f"| {method} | " in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * len(METHODS) and all(0 <= float(r["auc"]) <= 1 for r in rows)
    assert {r["method"] for r in csv.DictReader((out / "table.csv").open())} == set(METHODS)
    with Image.open(out / "figure4.png") as image:
        assert image.format == "PNG"

    import mlflow

    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=[bench_images.EXPERIMENT], output_format="list")
    assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "2"
    assert set(run.data.metrics) >= {f"auc_mean.{m}" for m in METHODS} | {"auc_class_1.MemAE"}
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"table.md", "table.csv", "results.csv", "figure4.png"} <= artifacts


def test_job_reports_missing_data_clearly(tmp_path, capsys):
    assert bench_images.main(["--dataset", "mnist", "--root", str(tmp_path), "--no-mlflow"]) == 2
    assert "no train-images-idx3-ubyte found" in capsys.readouterr().err
