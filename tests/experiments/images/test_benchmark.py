"""The methods of the image benchmark, and a tiny end-to-end run of the job with its files and MLflow run."""

from __future__ import annotations

import csv
import json

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
from experiments.images.report import EXPERIMENT
from experiments.images.run import BenchJobConfig
from jobs.bench_images import main as bench_images_main


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
    with pytest.raises(ValueError, match="three encoder widths"):
        BenchConfig(channels=(8, 16))
    assert BenchConfig(seeds=[4], channels=[8, 16, 32]).for_data(1).channels == (8, 16, 32)  # lists become tuples


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


def test_only_memae_trains_with_the_entropy_loss(monkeypatch):
    """The ablations are the model registry's: MemAE-nonSpar and AE train without the entropy term."""
    from experiments.images import benchmark

    original, seen = benchmark.memae_loss, []
    monkeypatch.setattr(benchmark, "memae_loss", lambda x, out, alpha: seen.append(alpha) or original(x, out, alpha))
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    config = BenchConfig(epochs=1, entropy_alpha=0.5).for_data(1)
    alphas = {}
    for method in ("AE", "MemAE-nonSpar", "MemAE"):
        seen.clear()
        train_network(method, x, config, seed=0)
        alphas[method] = set(seen)
    assert alphas == {"AE": {0.0}, "MemAE-nonSpar": {0.0}, "MemAE": {0.5}}


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
    code = bench_images_main(["--classes", "0", "1", "--seeds", "0", "--epochs", "2", "--workers", "1",
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
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert runs[0].keys() >= {"method", "seed", "normal_class", "auc", "seconds", "train_mse", "pca_components"}
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "digits" and config["seeds"] == [0] and config["classes"] == [0, 1]
    assert config["mem_dim"] == 100 and "workers" not in config and "out" not in config  # the protocol, not the job
    with Image.open(out / "figure4.png") as image:
        assert image.format == "PNG"

    import mlflow

    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "2"
    assert run.data.params["seeds"] == "(0,)" and run.data.params["classes"] == "(0, 1)"  # flags' lists as tuples
    assert set(run.data.metrics) >= {f"auc_mean.{m}" for m in METHODS} | {"auc_class_1.MemAE"}
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"table.md", "table.csv", "results.csv", "figure4.png"} <= artifacts


def test_job_reports_missing_data_clearly(tmp_path, capsys):
    assert bench_images_main(["--dataset", "mnist", "--root", str(tmp_path), "--no-mlflow"]) == 2
    assert "no train-images-idx3-ubyte found" in capsys.readouterr().err


def test_job_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_images_main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    flags = ["--config", "--dataset", "--root", "--split", "--seeds", "--classes", "--methods", "--quick", "--epochs",
             "--lr", "--batch-size", "--mem-dim", "--shrink-thres", "--entropy-alpha", "--score-rule", "--pca-variance",
             "--ocsvm-nu", "--kde-folds", "--workers", "--out", "--tracking-uri", "--no-mlflow"]
    assert [flag for flag in flags if flag not in printed] == []
    assert "{digits,mnist,cifar10}" in printed and "{l2,l1}" in printed


def test_job_config_from_flags_and_yaml(tmp_path):
    from pipelines.common.config import config_from_args, config_parser

    parser = config_parser(BenchJobConfig)
    config = config_from_args(BenchJobConfig, parser.parse_args(["--seeds", "3", "4", "--methods", "KDE", "AE"]))
    assert config.benchmark() == BenchConfig(seeds=(3, 4), methods=("KDE", "AE"))
    assert config.out_dir.as_posix() == "outputs/bench_images/digits" and config.worker_count >= 1
    quick = config_from_args(BenchJobConfig, parser.parse_args(["--quick", "--epochs", "50", "--workers", "0"]))
    assert quick.benchmark() == BenchConfig(seeds=(0,), classes=(0, 1), epochs=5) and quick.worker_count == 0
    yaml_file = tmp_path / "bench.yaml"
    yaml_file.write_text("dataset: mnist\nroot: /data/mnist\nclasses: [2, 5]\nno-mlflow: true\n")
    loaded = config_from_args(BenchJobConfig, parser.parse_args(["--config", str(yaml_file), "--out", "here"]))
    assert (loaded.dataset, loaded.root, loaded.classes, loaded.no_mlflow) == ("mnist", "/data/mnist", (2, 5), True)
    assert loaded.out_dir.as_posix() == "here"


def test_job_refuses_bad_settings_with_status_2(capsys):
    assert bench_images_main(["--epochs", "0", "--no-mlflow"]) == 2
    assert "need epochs >= 1" in capsys.readouterr().err
    assert bench_images_main(["--classes", "42", "--epochs", "1", "--no-mlflow"]) == 2
    assert "classes [42] do not occur in digits" in capsys.readouterr().err
