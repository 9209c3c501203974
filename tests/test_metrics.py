"""Frame metrics against scikit-learn, and the protocol's handling of unscored and unlabelled frames."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from memae.metrics import equal_error_rate, frame_metrics, pixel_auc


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


def planted_square(frames: int = 6, size: int = 16, scale: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Error maps (size x size) with noise and, on the odd frames, a square of higher error; masks `scale` times
    larger that mark the square exactly."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 1, (frames, size, size)).astype(np.float32)
    masks = np.zeros((frames, size * scale, size * scale), dtype=bool)
    maps[1::2, 4:8, 6:10] += 1
    masks[1::2, 4 * scale : 8 * scale, 6 * scale : 10 * scale] = True
    return maps, masks


def test_pixel_auc_finds_a_planted_square_at_any_mask_resolution():
    maps, masks = planted_square()
    assert pixel_auc({"v": masks}, {"v": maps}) == 1.0
    assert pixel_auc({"v": masks[:, ::4, ::4]}, {"v": maps}) == 1.0
    flipped = pixel_auc({"v": masks}, {"v": -maps})
    assert flipped == 0.0


def test_pixel_auc_pools_videos_at_the_masks_resolution_with_nearest_neighbour_maps():
    maps, masks = planted_square(seed=1)
    noisy = maps + np.random.default_rng(2).normal(0, 0.6, maps.shape).astype(np.float32)
    other_maps, other_masks = planted_square(frames=4, seed=3)
    # Upsampling by 4 with nearest neighbour is np.repeat; the masks (64 x 64) are the grid the ROC is drawn on.
    up = np.repeat(np.repeat(noisy, 4, axis=1), 4, axis=2)
    other_up = np.repeat(np.repeat(other_maps, 4, axis=1), 4, axis=2)
    expected = roc_auc_score(np.concatenate([masks.ravel(), other_masks.ravel()]),
                             np.concatenate([up.ravel(), other_up.ravel()]))
    got = pixel_auc({"a": masks, "b": other_masks}, {"a": noisy, "b": other_maps})
    assert 0.6 < got < 1.0 and got == pytest.approx(expected)
    # Masks smaller than the maps: each mask pixel reads the map pixel under its centre.
    small = np.random.default_rng(6).random((6, 4, 4)) < 0.3  # over 16 x 16 maps: centres on map pixels 2, 6, 10, 14
    expected = roc_auc_score(small.ravel(), noisy[:, 2::4, 2::4].ravel())
    assert pixel_auc({"a": small}, {"a": noisy}) == pytest.approx(expected)


def test_pixel_auc_leaves_unscored_frames_out():
    maps, masks = planted_square()
    unscored = maps.copy()
    unscored[1] = np.nan  # an anomalous frame without a score must not count either way
    expected = pixel_auc({"v": np.delete(masks, 1, axis=0)}, {"v": np.delete(maps, 1, axis=0)})
    assert pixel_auc({"v": masks}, {"v": unscored}) == expected


def test_pixel_auc_subsamples_deterministically_beyond_the_cap():
    maps, masks = planted_square(seed=4)
    noisy = {"v": maps + np.random.default_rng(5).normal(0, 0.6, maps.shape).astype(np.float32)}
    exact = pixel_auc({"v": masks}, noisy)
    capped = pixel_auc({"v": masks}, noisy, max_pixels=5000)  # of 6 x 64 x 64 = 24,576
    assert capped == pixel_auc({"v": masks}, noisy, max_pixels=5000)
    assert capped != exact and capped == pytest.approx(exact, abs=0.03)
    assert capped != pixel_auc({"v": masks}, noisy, max_pixels=5000, seed=1)


def test_pixel_auc_is_nan_for_one_class_and_refuses_mismatched_input():
    maps, masks = planted_square()
    assert np.isnan(pixel_auc({"v": np.zeros_like(masks)}, {"v": maps}))
    assert np.isnan(pixel_auc({"v": masks}, {"v": np.full_like(maps, np.nan)}))
    with pytest.raises(ValueError, match="no error maps"):
        pixel_auc({"v": masks}, {"w": maps})
    with pytest.raises(ValueError, match="as many frames"):
        pixel_auc({"v": masks[:-1]}, {"v": maps})
