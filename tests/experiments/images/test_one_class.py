"""The one-class protocol: split construction, AUC and the aggregation into the paper's table."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from experiments.images.one_class import (
    PAPER_TABLE1,
    ClassResult,
    make_split,
    markdown_table,
    one_class_auc,
    ordering_check,
    per_class_markdown,
    summarize,
    summary_csv,
)

# Unequal class sizes, as in real data.
LABELS = np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


@pytest.mark.parametrize("normal_class", [0, 3, 9])
def test_split_trains_on_two_thirds_of_the_normal_class_only(normal_class):
    split = make_split(LABELS, normal_class, seed=0)
    normal = np.flatnonzero(LABELS == normal_class)
    assert np.all(LABELS[split.train] == normal_class)
    assert len(split.train) == round(2 / 3 * len(normal))
    held_out = split.test[split.test_is_anomaly == 0]
    assert not set(split.train) & set(split.test)  # no normal test image was seen in training
    assert sorted([*split.train, *held_out]) == normal.tolist()  # every normal image is used once
    assert np.all(LABELS[held_out] == normal_class)
    assert np.all(LABELS[split.test[split.test_is_anomaly == 1]] != normal_class)
    assert len(set(split.test)) == len(split.test)


@pytest.mark.parametrize("ratio", [0.3, 0.1, 0.5])
def test_anomalies_make_the_requested_share_of_the_test_set(ratio):
    split = make_split(LABELS, 4, seed=1, anomaly_ratio=ratio)
    assert abs(split.anomaly_ratio - ratio) <= 1 / len(split.test)


def test_anomalies_come_from_every_other_class():
    split = make_split(LABELS, 2, seed=0)
    anomaly_classes = set(LABELS[split.test[split.test_is_anomaly == 1]].tolist())
    assert len(anomaly_classes) >= 8  # 26 draws from 9 classes of equal size


def test_split_is_determined_by_seed_and_class():
    a, b = make_split(LABELS, 5, seed=7), make_split(LABELS, 5, seed=7)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert np.array_equal(a.test_is_anomaly, b.test_is_anomaly)
    other_seed = make_split(LABELS, 5, seed=8)
    assert not np.array_equal(a.train, other_seed.train)
    assert not np.array_equal(a.test[a.test_is_anomaly == 1], other_seed.test[other_seed.test_is_anomaly == 1])


def test_split_needs_enough_anomalies():
    labels = np.array([0] * 50 + [1] * 3)
    with pytest.raises(ValueError, match="need 7 anomalies"):
        make_split(labels, 0, seed=0)


def test_auc_direction_and_nan_guard():
    labels = np.array([0, 0, 1, 1])
    assert one_class_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert one_class_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        one_class_auc(labels, np.array([0.1, np.nan, 0.8, 0.9]))


def results_for(method: str, aucs: dict[tuple[int, int], float]) -> list[ClassResult]:
    return [ClassResult("digits", method, seed, c, auc) for (seed, c), auc in aucs.items()]


def test_summary_averages_classes_within_a_seed_then_over_seeds():
    # seed 0: classes average 0.8; seed 1: 0.6 -> mean 0.7, sample std 0.1414
    rows = results_for("AE", {(0, 0): 0.9, (0, 1): 0.7, (1, 0): 0.5, (1, 1): 0.7})
    (summary,) = summarize(rows)
    assert summary.per_seed == pytest.approx({0: 0.8, 1: 0.6})
    assert summary.mean == pytest.approx(0.7) and summary.std == pytest.approx(np.sqrt(0.02))
    assert summary.per_class == pytest.approx({0: 0.7, 1: 0.7})
    (single,) = summarize(results_for("AE", {(0, 0): 0.9}))
    assert single.std == 0.0


def test_table_puts_paper_numbers_beside_ours_and_checks_the_ordering():
    rows = results_for("AE", {(0, 0): 0.9, (1, 0): 0.8}) + results_for("MemAE", {(0, 0): 0.85, (1, 0): 0.95})
    summaries = summarize(rows)
    table = markdown_table(summaries)
    assert "| Method | digits (ours) | MNIST (paper) | CIFAR-10 (paper) |" in table
    assert "| MemAE | 0.9000 ± 0.0707 | 0.9751 | 0.6088 |" in table
    assert f"| AE | 0.8500 ± 0.0707 | {PAPER_TABLE1['AE']['mnist']:.4f} |" in table
    per_class = per_class_markdown(summaries, ["zero"])
    assert "| Method | zero | mean |" in per_class
    # nonSpar was not run, so MemAE is compared with AE directly
    assert ordering_check(summaries) == ["digits: MemAE ≥ AE holds (0.9000 vs 0.8500, +0.0500; in 1 of 2 seeds)"]


def test_ordering_check_reports_violations_and_seed_counts():
    rows = (results_for("AE", {(0, 0): 0.9, (1, 0): 0.9, (2, 0): 0.9})
            + results_for("MemAE-nonSpar", {(0, 0): 0.95, (1, 0): 0.8, (2, 0): 0.8})
            + results_for("KDE", {(0, 0): 0.5, (1, 0): 0.95, (2, 0): 0.6}))
    lines = ordering_check(summarize(rows))
    assert lines == [
        "digits: MemAE-nonSpar ≥ AE does not hold (0.8500 vs 0.9000, -0.0500; in 1 of 3 seeds)",
        "digits: AE > KDE holds (0.9000 vs 0.6833, +0.2167; in 2 of 3 seeds)",
    ]


def test_summary_csv_round_trips():
    summaries = summarize(results_for("KDE", {(0, 0): 0.75, (0, 1): 0.85}))
    (row,) = list(csv.DictReader(io.StringIO(summary_csv(summaries))))
    assert row["method"] == "KDE" and float(row["mean_auc"]) == pytest.approx(0.8)
    assert float(row["paper_mnist"]) == PAPER_TABLE1["KDE"]["mnist"] and row["classes"] == "2"
