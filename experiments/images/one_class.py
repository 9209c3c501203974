"""The one-class protocol of the paper's image experiment (Table 1), without any model in it.

For each class c of a labelled image set: c is normal and every other class anomalous. Two thirds of the images
of c, drawn at random, are the training set; the test set is the remaining images of c plus images drawn from
all other classes so that anomalies make about 30% of it. The AUC of each method's anomaly scores on that test
set is averaged over the classes; the benchmark repeats this for several seeds and reports mean and std.

    split = make_split(labels, normal_class=3, seed=0)
    train_images = images[split.train]
    auc = one_class_auc(split.test_is_anomaly, scores)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

TRAIN_FRACTION = 2 / 3
ANOMALY_RATIO = 0.3

# The paper's Table 1 (one-class AUC averaged over classes): the rows this benchmark runs.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "OC-SVM": {"mnist": 0.9499, "cifar10": 0.5619},
    "KDE": {"mnist": 0.8116, "cifar10": 0.5756},
    "AE": {"mnist": 0.9619, "cifar10": 0.5706},
    "MemAE-nonSpar": {"mnist": 0.9725, "cifar10": 0.6058},
    "MemAE": {"mnist": 0.9751, "cifar10": 0.6088},
}
DATASET_TITLES = {"digits": "digits", "mnist": "MNIST", "cifar10": "CIFAR-10"}


@dataclass(frozen=True)
class OneClassSplit:
    """Indices into the dataset for one (normal class, seed); `test_is_anomaly` is 1 for anomalies."""

    normal_class: int
    seed: int
    train: np.ndarray
    test: np.ndarray
    test_is_anomaly: np.ndarray

    @property
    def anomaly_ratio(self) -> float:
        return float(self.test_is_anomaly.mean())


def make_split(
    labels: np.ndarray,
    normal_class: int,
    seed: int,
    train_fraction: float = TRAIN_FRACTION,
    anomaly_ratio: float = ANOMALY_RATIO,
) -> OneClassSplit:
    """The paper's split for one normal class; the same (labels, class, seed) always gives the same split.

    Anomalies are drawn uniformly from the pooled other classes (so each appears in proportion to its size),
    without replacement. The generator is seeded by (seed, class), so classes do not share a random stream.
    """
    labels = np.asarray(labels)
    if not 0 < train_fraction < 1 or not 0 < anomaly_ratio < 1:
        raise ValueError(f"train_fraction and anomaly_ratio must lie in (0, 1), got {train_fraction}, {anomaly_ratio}")
    normal = np.flatnonzero(labels == normal_class)
    others = np.flatnonzero(labels != normal_class)
    if len(normal) < 2:
        raise ValueError(f"class {normal_class} has {len(normal)} images; the protocol needs at least 2")
    rng = np.random.default_rng([seed, normal_class])
    normal = rng.permutation(normal)
    n_train = min(max(1, round(train_fraction * len(normal))), len(normal) - 1)
    held_out = normal[n_train:]
    n_anomalies = max(1, round(anomaly_ratio * len(held_out) / (1 - anomaly_ratio)))
    if n_anomalies > len(others):
        raise ValueError(f"need {n_anomalies} anomalies for class {normal_class} but only {len(others)} exist")
    anomalies = rng.choice(others, size=n_anomalies, replace=False)
    test = np.concatenate([held_out, anomalies])
    is_anomaly = np.concatenate([np.zeros(len(held_out), np.int64), np.ones(n_anomalies, np.int64)])
    return OneClassSplit(normal_class, seed, np.sort(normal[:n_train]), test, is_anomaly)


def one_class_auc(test_is_anomaly: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with higher scores meaning more anomalous; non-finite scores are a bug upstream, so they fail."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("anomaly scores contain NaN or infinity")
    return float(roc_auc_score(test_is_anomaly, scores))


@dataclass(frozen=True)
class ClassResult:
    """One method's AUC on one (normal class, seed) split."""

    dataset: str
    method: str
    seed: int
    normal_class: int
    auc: float


@dataclass(frozen=True)
class MethodSummary:
    """A method's class-averaged AUC: mean and std over seeds, and per class the mean over seeds."""

    dataset: str
    method: str
    mean: float
    std: float
    per_seed: dict[int, float]
    per_class: dict[int, float]


def summarize(results: Iterable[ClassResult]) -> list[MethodSummary]:
    """Averages over classes within each seed first (the paper's number), then takes mean and std over seeds.

    The std is the sample std over seeds (0 for one seed); methods keep the order they first appear in.
    """
    grouped: dict[tuple[str, str], list[ClassResult]] = {}
    for result in results:
        grouped.setdefault((result.dataset, result.method), []).append(result)
    summaries = []
    for (dataset, method), rows in grouped.items():
        seeds = sorted({row.seed for row in rows})
        classes = sorted({row.normal_class for row in rows})
        per_seed = {seed: float(np.mean([r.auc for r in rows if r.seed == seed])) for seed in seeds}
        per_class = {c: float(np.mean([r.auc for r in rows if r.normal_class == c])) for c in classes}
        values = np.array(list(per_seed.values()))
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summaries.append(MethodSummary(dataset, method, float(values.mean()), std, per_seed, per_class))
    return summaries


# The paper's claim, best first: MemAE >= MemAE-nonSpar >= AE > OC-SVM, KDE (the classical methods unranked).
PAPER_ORDERING: tuple[tuple[str, ...], ...] = (("MemAE",), ("MemAE-nonSpar",), ("AE",), ("OC-SVM", "KDE"))


def ordering_check(summaries: Sequence[MethodSummary]) -> list[str]:
    """One line per neighbouring pair of the paper's ordering among the methods run: holds or not, by how much.

    Methods not run are skipped (MemAE is compared with AE when nonSpar is absent). "In k of n seeds" counts
    the seeds whose class-averaged AUCs compare the same way, so a difference one lucky seed carries shows.
    """
    lines = []
    for dataset in dict.fromkeys(s.dataset for s in summaries):
        by_method = {s.method: s for s in summaries if s.dataset == dataset}
        ranks = [[m for m in rank if m in by_method] for rank in PAPER_ORDERING]
        ranks = [rank for rank in ranks if rank]
        for upper, lower in zip(ranks[:-1], ranks[1:], strict=True):
            strict = lower == [m for m in PAPER_ORDERING[-1] if m in by_method]
            for high, low in ((h, lo) for h in upper for lo in lower):
                a, b = by_method[high], by_method[low]
                seeds = sorted(set(a.per_seed) & set(b.per_seed))
                wins = sum(_beats(a.per_seed[seed], b.per_seed[seed], strict) for seed in seeds)
                verdict = "holds" if _beats(a.mean, b.mean, strict) else "does not hold"
                lines.append(f"{dataset}: {high} {'>' if strict else '≥'} {low} {verdict} "
                             f"({a.mean:.4f} vs {b.mean:.4f}, {a.mean - b.mean:+.4f}; in {wins} of {len(seeds)} seeds)")
    return lines


def _beats(a: float, b: float, strict: bool) -> bool:
    return a > b if strict else a >= b


def markdown_table(summaries: Sequence[MethodSummary], paper: dict[str, dict[str, float]] = PAPER_TABLE1) -> str:
    """The paper's layout: one row per method, our mean ± std per dataset, the paper's MNIST and CIFAR-10 beside."""
    datasets = list(dict.fromkeys(s.dataset for s in summaries))
    methods = list(dict.fromkeys(s.method for s in summaries))
    by_key = {(s.dataset, s.method): s for s in summaries}
    header = ["Method", *(f"{DATASET_TITLES.get(d, d)} (ours)" for d in datasets), "MNIST (paper)",
              "CIFAR-10 (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"]
    for method in methods:
        ours = [_mean_std(by_key.get((d, method))) for d in datasets]
        reference = [f"{paper[method][d]:.4f}" if method in paper else "—" for d in ("mnist", "cifar10")]
        lines.append("| " + " | ".join([method, *ours, *reference]) + " |")
    return "\n".join(lines)


def per_class_markdown(summaries: Sequence[MethodSummary], class_names: Sequence[str] | None = None) -> str:
    """Per-class AUC (mean over seeds) for one dataset: rows are methods, columns the normal classes."""
    classes = sorted({c for s in summaries for c in s.per_class})
    names = [class_names[c] if class_names else str(c) for c in classes]
    lines = ["| Method | " + " | ".join(names) + " | mean |", "|---|" + "---:|" * (len(classes) + 1)]
    for s in summaries:
        cells = [f"{s.per_class[c]:.4f}" if c in s.per_class else "—" for c in classes]
        lines.append(f"| {s.method} | " + " | ".join(cells) + f" | {s.mean:.4f} |")
    return "\n".join(lines)


def summary_csv(summaries: Sequence[MethodSummary], paper: dict[str, dict[str, float]] = PAPER_TABLE1) -> str:
    """The Markdown table's content as CSV, one row per (dataset, method), with the paper's figures."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "method", "mean_auc", "std_auc", "seeds", "classes", "paper_mnist", "paper_cifar10"])
    for s in summaries:
        reference = paper.get(s.method, {})
        writer.writerow([s.dataset, s.method, f"{s.mean:.4f}", f"{s.std:.4f}", len(s.per_seed), len(s.per_class),
                         reference.get("mnist", ""), reference.get("cifar10", "")])
    return out.getvalue()


def results_csv(results: Iterable[ClassResult]) -> str:
    """Every (method, seed, class) AUC, the raw material of every table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "method", "seed", "normal_class", "auc"])
    for r in results:
        writer.writerow([r.dataset, r.method, r.seed, r.normal_class, f"{r.auc:.6f}"])
    return out.getvalue()


def _mean_std(summary: MethodSummary | None) -> str:
    return "—" if summary is None else f"{summary.mean:.4f} ± {summary.std:.4f}"
