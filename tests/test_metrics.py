"""Frame metrics against scikit-learn, and the protocol's handling of unscored and unlabelled frames."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from memae.metrics import equal_error_rate, frame_metrics


@pytest.fixture
def videos():
    rng = np.random.default_rng(0)
    labels, scores = {}, {}
    for i, n in enumerate([50, 80, 40]):
        lab = np.zeros(n, dtype=np.int8)
        if i < 2:
            lab[n // 3 : n // 2] = 1
        labels[f"v{i}"] = lab
        scores[f"v{i}"] = rng.normal(size=n) + lab * (i + 0.5)
    scores["v0"][:8] = np.nan  # unscored ends (clip-centre rule)
    labels["v1"][-3:] = -1  # unknown labels
    return labels, scores


def test_micro_auc_and_ap_equal_sklearn_on_the_concatenated_scored_frames(videos):
    labels, scores = videos
    m = frame_metrics(labels, scores)
    keep = [(~np.isnan(scores[v])) & (labels[v] >= 0) for v in sorted(labels)]
    y = np.concatenate([labels[v][k] for v, k in zip(sorted(labels), keep, strict=True)])
    s = np.concatenate([scores[v][k] for v, k in zip(sorted(labels), keep, strict=True)])
    assert m.auc_micro == pytest.approx(roc_auc_score(y, s))
    assert m.average_precision == pytest.approx(average_precision_score(y, s))
    assert m.num_frames == 50 - 8 + 80 - 3 + 40 and m.num_anomalous == int(y.sum())


def test_macro_auc_averages_only_videos_with_both_classes(videos):
    labels, scores = videos
    m = frame_metrics(labels, scores)
    expected = []
    for v in ("v0", "v1"):
        k = (~np.isnan(scores[v])) & (labels[v] >= 0)
        expected.append(roc_auc_score(labels[v][k], scores[v][k]))
    assert m.num_videos_macro == 2
    assert m.auc_macro == pytest.approx(np.mean(expected))


def test_eer_of_perfect_and_inverted_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert equal_error_rate(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])) == pytest.approx(0.0)
    assert equal_error_rate(y, -np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])) == pytest.approx(1.0)


def test_eer_is_where_fpr_equals_fnr():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(size=2000) + y
    eer = equal_error_rate(y, s)
    # Check by brute force over thresholds: at the EER threshold FPR and FNR meet.
    thresholds = np.sort(s)
    fpr = np.array([(s[y == 0] >= t).mean() for t in thresholds])
    fnr = np.array([(s[y == 1] < t).mean() for t in thresholds])
    i = np.argmin(np.abs(fpr - fnr))
    assert eer == pytest.approx((fpr[i] + fnr[i]) / 2, abs=0.01)
    assert 0.2 < eer < 0.4


def test_metrics_refuse_mismatched_or_single_class_input():
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        frame_metrics({"a": np.array([0, 1])}, {"a": np.array([0.1, 0.2, 0.3])})
    with pytest.raises(ValueError, match="both normal and anomalous"):
        frame_metrics({"a": np.zeros(4)}, {"a": np.arange(4.0)})
    with pytest.raises(ValueError, match="no scores"):
        frame_metrics({"a": np.array([0, 1])}, {"b": np.array([0.1, 0.2])})
