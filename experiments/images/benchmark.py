"""The paper's Table 1 on one image set: MemAE, MemAE-nonSpar, AE, OC-SVM and KDE on the same one-class splits.

The three networks are one `MemAE2D` with the memory changed and nothing else: the same widths, initial seed,
batch order, optimiser, learning rate and epochs, scored by the same reconstruction error. MemAE-nonSpar drops
both sparsity devices, hard shrinkage and the entropy loss, as the paper defines it. The two classical
baselines see the same pixels, projected by a PCA fitted on the training images (no whitening: a rotation
that drops the least-varying directions), with their parameters chosen as a user would, never from test
labels: OC-SVM with nu = 0.1 and gamma = 'scale', KDE with the bandwidth of best cross-validated
log-likelihood on the training images.

    data = load_image_dataset("digits")
    result = run_benchmark(data, BenchConfig(seeds=(0, 1, 2)), progress=print)
    print(markdown_table(result.summaries))
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from sklearn.svm import OneClassSVM
from threadpoolctl import threadpool_limits
from torch import nn

from experiments.images.data import ImageDataset
from experiments.images.one_class import (
    ANOMALY_RATIO,
    TRAIN_FRACTION,
    ClassResult,
    MethodSummary,
    OneClassSplit,
    make_split,
    one_class_auc,
    summarize,
)
from memae.diagnostics import MemoryUsageAccumulator
from memae.losses import DEFAULT_ALPHA, memae_loss
from memae.models import create_model, entropy_weight
from memae.scoring import clip_errors, error_maps
from memae.transforms import images_to_tensor, tensor_to_uint8
from pipelines.common.config import option

METHODS: tuple[str, ...] = ("OC-SVM", "KDE", "AE", "MemAE-nonSpar", "MemAE")
NETWORKS: dict[str, str] = {"AE": "ae2d", "MemAE-nonSpar": "memae2d-nonspar", "MemAE": "memae2d"}
# The paper's appendix, keyed by image channels: MNIST-like grey and CIFAR-like colour images.
PAPER_CHANNELS: dict[int, tuple[int, int, int]] = {1: (16, 32, 64), 3: (64, 128, 256)}
PAPER_MEM_DIM: dict[int, int] = {1: 100, 3: 500}
SCORE_RULES: tuple[str, ...] = ("l2", "l1")
KDE_BANDWIDTH_FACTORS = np.logspace(-1.5, 1.0, 26)  # times the features' RMS spread
EVAL_BATCH = 256
FIGURE_COLUMNS = 8

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run depends on; flattened into MLflow params. None means the paper's value for the data.

    Defaults: Adam at lr 1e-3 (the video code's 1e-4 needs far more epochs than a CPU run affords), batch 16,
    150 epochs: on digits every network's training MSE has flattened by then (probed on one class, a further
    20-35% drop from epoch 150 to 300, alike for all three). lambda defaults to 1/N, the lower end of the paper's
    recommended [1/N, 3/N]; the score is the per-image MSE, the training loss. Each field is also a flag of
    jobs/bench_images.py.
    """

    seeds: tuple[int, ...] = option((0, 1, 2), "one full run per seed", nargs="+")
    classes: tuple[int, ...] | None = option(None, "normal classes to run (default: every class)", nargs="+")
    methods: tuple[str, ...] = option(METHODS, "methods to run", choices=METHODS, nargs="+")
    train_fraction: float = option(TRAIN_FRACTION, "fraction of the normal class's images to train on")
    anomaly_ratio: float = option(ANOMALY_RATIO, "fraction of each test set drawn from the other classes")
    epochs: int = option(150, "training epochs: the default flattens the training loss on digits; MNIST and CIFAR-10 "
                         "have ~40x more images per class, so fewer epochs cost as much")
    lr: float = option(1e-3, "Adam learning rate")
    batch_size: int = option(16, "images per training step")
    channels: tuple[int, int, int] | None = option(None, "the three encoder widths (default: the paper's for grey "
                                                   "or colour images)", nargs="+")
    mem_dim: int | None = option(None, "memory slots (default: the paper's 100 grey, 500 colour)")
    shrink_thres: float | None = option(None, "hard-shrinkage lambda (default: 1 / mem-dim; 0 for MemAE-nonSpar)")
    entropy_alpha: float = option(DEFAULT_ALPHA, "entropy-loss weight (MemAE only; its ablations train without it)")
    score_rule: str = option("l2", "per-image reconstruction error: l2 = MSE, the training loss, l1 = mean |error|",
                             choices=SCORE_RULES)
    pca_variance: float = option(0.95, "fraction of the training images' pixel variance their PCA keeps "
                                 "(OC-SVM and KDE features)")
    ocsvm_nu: float = option(0.1, "OC-SVM nu (gamma is 'scale')")
    kde_folds: int = option(5, "cross-validation folds for the KDE bandwidth")

    def __post_init__(self) -> None:
        for name in ("seeds", "classes", "methods", "channels"):  # lists from flags or YAML: stay immutable
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"unknown or no methods {sorted(unknown)}; choose from {METHODS}")
        if self.score_rule not in SCORE_RULES:
            raise ValueError(f"unknown score rule {self.score_rule!r}; choose one of {SCORE_RULES}")
        if self.epochs < 1 or self.batch_size < 2 or not self.seeds:
            raise ValueError("need epochs >= 1, batch_size >= 2 and at least one seed")
        if self.channels is not None and len(self.channels) != 3:
            raise ValueError(f"channels must be three encoder widths, got {self.channels}")

    def for_data(self, in_channels: int) -> BenchConfig:
        """Fills in the paper's widths and memory size for grey or colour images, and lambda = 1/N."""
        if in_channels not in PAPER_CHANNELS and (self.channels is None or self.mem_dim is None):
            raise ValueError(f"no paper defaults for {in_channels}-channel images: set channels and mem_dim")
        mem_dim = self.mem_dim or PAPER_MEM_DIM[in_channels]
        return replace(
            self,
            channels=tuple(self.channels or PAPER_CHANNELS[in_channels]),
            mem_dim=mem_dim,
            shrink_thres=1.0 / mem_dim if self.shrink_thres is None else self.shrink_thres,
        )


@dataclass(frozen=True)
class MethodRun:
    """One method on one split: its AUC plus what it chose or reached (PCA size, bandwidth, training MSE)."""

    result: ClassResult
    seconds: float
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FigureSample:
    """Anomalous test inputs and each network's reconstructions of them (uint8 N x H x W x C), for Figure 4."""

    normal_class: int
    anomaly_classes: tuple[int, ...]
    inputs: np.ndarray
    reconstructions: dict[str, np.ndarray]


@dataclass(frozen=True)
class BenchmarkResult:
    dataset: str
    config: BenchConfig
    runs: list[MethodRun]
    figure: FigureSample | None
    seconds: float

    @property
    def results(self) -> list[ClassResult]:
        return [run.result for run in self.runs]

    @property
    def summaries(self) -> list[MethodSummary]:
        order = {method: i for i, method in enumerate(METHODS)}
        return sorted(summarize(self.results), key=lambda s: order[s.method])


def train_network(method: str, train_x: torch.Tensor, config: BenchConfig, seed: int) -> tuple[nn.Module, float]:
    """Trains one of AE / MemAE-nonSpar / MemAE with Adam; returns the model in eval mode and its last-epoch MSE.

    The seed fixes both the initial weights and the batch order, so the three networks see the same batches.
    Which of them gets hard shrinkage and the entropy loss is the model registry's definition (`memae.models`).
    """
    torch.manual_seed(seed)
    model = create_model(NETWORKS[method], in_channels=train_x.shape[1], channels=config.channels,
                         mem_dim=config.mem_dim, shrink_thres=config.shrink_thres)
    alpha = entropy_weight(NETWORKS[method], config.entropy_alpha)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    epoch_mse = float("nan")
    for _ in range(config.epochs):
        total, seen = 0.0, 0
        for batch in torch.randperm(len(train_x), generator=order).split(config.batch_size):
            if len(batch) < 2:  # batch norm cannot train on a single image
                continue
            x = train_x[batch]
            parts = memae_loss(x, model(x), alpha)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            optimizer.step()
            total += parts.reconstruction.item() * len(batch)
            seen += len(batch)
        epoch_mse = total / max(seen, 1)
    return model.eval(), epoch_mse


@torch.no_grad()
def reconstruct(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstructions in eval mode, plus how the memory was used on these inputs (empty without memory)."""
    outputs, usage = [], None
    for chunk in x.split(EVAL_BATCH):
        out = model(chunk)
        outputs.append(out["output"])
        if out["att"] is not None:
            if usage is None:
                usage = MemoryUsageAccumulator(out["att"].shape[1])
            usage.update(out["att"])
    return torch.cat(outputs), (usage.result().as_dict() if usage else {})


def reconstruction_scores(x: torch.Tensor, recon: torch.Tensor, rule: str = "l2") -> np.ndarray:
    """Per-image anomaly score: mean squared error ("l2", the training loss) or mean absolute error ("l1")."""
    if rule == "l2":
        return error_maps(x, recon).flatten(1).mean(dim=1).numpy()
    return clip_errors(x, recon, rule="l1").numpy()


def pca_features(train: np.ndarray, test: np.ndarray, variance: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened pixels projected on the principal axes that keep `variance` of the training images' variance."""
    pca = PCA(n_components=variance, svd_solver="full", random_state=seed).fit(train)
    return pca.transform(train), pca.transform(test)


def ocsvm_scores(train: np.ndarray, test: np.ndarray, nu: float) -> np.ndarray:
    """RBF OC-SVM; higher score = further outside the learned support."""
    return -OneClassSVM(kernel="rbf", nu=nu, gamma="scale").fit(train).decision_function(test)


def kde_scores(train: np.ndarray, test: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """Gaussian KDE with the bandwidth of best K-fold log-likelihood on the training set; score = -log density.

    The grid spans 2.5 decades around the features' RMS spread; a choice on its edge is reported, not hidden.
    """
    spread = float(np.sqrt(train.var(axis=0).mean()))
    grid = spread * KDE_BANDWIDTH_FACTORS
    search = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": grid},
                          cv=KFold(min(folds, len(train)), shuffle=True, random_state=seed)).fit(train)
    bandwidth = float(search.best_params_["bandwidth"])
    on_edge = float(bandwidth in (grid[0], grid[-1]))
    return -search.best_estimator_.score_samples(test), {"bandwidth": bandwidth, "bandwidth_on_grid_edge": on_edge}


def run_split(
    data: ImageDataset, split: OneClassSplit, config: BenchConfig, keep_figure: bool = False
) -> tuple[list[MethodRun], FigureSample | None]:
    """Every configured method on one split; `config` must already be `for_data`-resolved."""
    train_x = images_to_tensor(data.images[split.train])
    test_x = images_to_tensor(data.images[split.test])
    seed = split.seed * 1000 + split.normal_class
    features = None
    runs, reconstructions = [], {}
    for method in config.methods:
        start = time.perf_counter()
        if method in NETWORKS:
            model, train_mse = train_network(method, train_x, config, seed)
            recon, usage = reconstruct(model, test_x)
            scores = reconstruction_scores(test_x, recon, config.score_rule)
            details = {"train_mse": train_mse, **usage}
            reconstructions[method] = recon
        else:
            if features is None:
                features = pca_features(train_x.flatten(1).numpy(), test_x.flatten(1).numpy(),
                                        config.pca_variance, seed)
            details = {"pca_components": features[0].shape[1]}
            if method == "OC-SVM":
                scores = ocsvm_scores(*features, config.ocsvm_nu)
            else:
                scores, chosen = kde_scores(*features, config.kde_folds, seed)
                details |= chosen
        auc = one_class_auc(split.test_is_anomaly, scores)
        result = ClassResult(data.name, method, split.seed, split.normal_class, auc)
        runs.append(MethodRun(result, time.perf_counter() - start, details))
    figure = figure_sample(data, split, test_x, reconstructions) if keep_figure and reconstructions else None
    return runs, figure


def figure_sample(
    data: ImageDataset, split: OneClassSplit, test_x: torch.Tensor, reconstructions: dict[str, torch.Tensor]
) -> FigureSample:
    """Up to FIGURE_COLUMNS anomalous test inputs, one per anomaly class (in class order) first, with every
    network's reconstruction of them."""
    anomalies = np.flatnonzero(split.test_is_anomaly)
    labels = data.labels[split.test[anomalies]]
    _, first_of_class = np.unique(labels, return_index=True)
    rest = np.setdiff1d(np.arange(len(anomalies)), first_of_class)
    chosen = anomalies[np.concatenate([first_of_class, rest])[:FIGURE_COLUMNS]]
    return FigureSample(
        normal_class=split.normal_class,
        anomaly_classes=tuple(int(c) for c in data.labels[split.test[chosen]]),
        inputs=tensor_to_uint8(test_x[chosen]).transpose(0, 2, 3, 1),
        reconstructions={m: tensor_to_uint8(r[chosen]).transpose(0, 2, 3, 1) for m, r in reconstructions.items()},
    )


def run_benchmark(
    data: ImageDataset, config: BenchConfig, progress: Progress | None = None, workers: int = 1
) -> BenchmarkResult:
    """Every method on every (seed, class) split; the figure comes from the first split.

    Every split runs on one thread (torch, BLAS, OpenMP): these small networks gain little from intra-op
    threads. With `workers` > 1 the splits run in that many spawned processes instead of in this one. Every split
    seeds its own generators, so the results do not depend on `workers`.
    """
    config = config.for_data(data.channels)
    present = np.unique(data.labels).tolist()
    classes = config.classes if config.classes is not None else tuple(present)
    missing = set(classes) - set(present)
    if missing:
        raise ValueError(f"classes {sorted(missing)} do not occur in {data.name}")
    splits = [make_split(data.labels, c, seed, config.train_fraction, config.anomaly_ratio)
              for seed in config.seeds for c in classes]
    start = time.perf_counter()
    runs: list[MethodRun] = []
    figure = None
    for done, (split, split_runs, split_figure) in enumerate(_run_splits(data, splits, config, workers), start=1):
        runs += split_runs
        figure = figure or split_figure
        if progress:
            elapsed = time.perf_counter() - start
            aucs = "  ".join(f"{r.result.method} {r.result.auc:.4f}" for r in split_runs)
            progress(f"[{done}/{len(splits)}] seed {split.seed} class {data.class_names[split.normal_class]}: "
                     f"train {len(split.train)}, test {len(split.test)} ({split.anomaly_ratio:.0%} anomalous) | "
                     f"{aucs} | {elapsed:.0f} s, about {elapsed / done * (len(splits) - done):.0f} s left")
    runs.sort(key=lambda r: (r.result.seed, r.result.normal_class, METHODS.index(r.result.method)))
    return BenchmarkResult(data.name, config, runs, figure, time.perf_counter() - start)


def _run_splits(
    data: ImageDataset, splits: list[OneClassSplit], config: BenchConfig, workers: int
) -> Iterator[tuple[OneClassSplit, list[MethodRun], FigureSample | None]]:
    """Yields each split with its runs as they finish: in order in-process, in completion order in a pool."""
    if workers <= 1 or len(splits) == 1:
        for i, split in enumerate(splits):
            with _one_thread():
                outcome = run_split(data, split, config, keep_figure=i == 0)
            yield split, *outcome
        return
    context = multiprocessing.get_context("spawn")  # fork after torch or OpenMP threads can hang the children
    with ProcessPoolExecutor(min(workers, len(splits)), mp_context=context, initializer=_init_worker,
                             initargs=(data, config)) as pool:
        futures = {pool.submit(_worker_run_split, split, i == 0): split for i, split in enumerate(splits)}
        for future in as_completed(futures):
            yield futures[future], *future.result()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch, BLAS and OpenMP limited to one thread for the block, as in a worker; the caller's settings return."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(previous)


_WORKER_STATE: dict[str, object] = {}


def _init_worker(data: ImageDataset, config: BenchConfig) -> None:
    """Receives the data once per worker and keeps every library to one thread, as `run_benchmark` explains."""
    torch.set_num_threads(1)
    threadpool_limits(1)
    _WORKER_STATE.update(data=data, config=config)


def _worker_run_split(split: OneClassSplit, keep_figure: bool) -> tuple[list[MethodRun], FigureSample | None]:
    return run_split(_WORKER_STATE["data"], split, _WORKER_STATE["config"], keep_figure)
