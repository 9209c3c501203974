"""Clip errors, clip-to-frame alignment on hand-made examples, and normalisation."""

import numpy as np
import pytest
import torch

from memae.scoring import GlobalNormalizer, anomaly_score, clip_errors, error_maps, frames_from_clips, normality


def test_l1_rule_is_mean_absolute_residual():
    x = torch.zeros(2, 1, 4, 2, 2)
    recon = torch.zeros_like(x)
    recon[1, 0, 0, 0, 0] = 1.6  # one pixel of one frame of clip 1
    torch.testing.assert_close(clip_errors(x, recon, "l1"), torch.tensor([0.0, 1.6 / 16]))


def test_l2_time_rule_is_mean_over_pixels_of_root_summed_square_over_time():
    x = torch.zeros(1, 1, 4, 1, 2)
    recon = torch.zeros_like(x)
    recon[0, 0, :, 0, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0])  # pixel 0: sqrt(4) = 2, pixel 1: 0
    torch.testing.assert_close(clip_errors(x, recon, "l2-time"), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="l2-time"):
        clip_errors(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "l2-time")
    with pytest.raises(ValueError, match="unknown error rule"):
        clip_errors(x, recon, "l3")


def test_error_maps_keep_pixels_and_average_channels():
    x = torch.zeros(1, 2, 3, 4, 5)
    recon = torch.zeros_like(x)
    recon[0, 0, 1, 2, 3] = 2.0
    maps = error_maps(x, recon)
    assert maps.shape == (1, 3, 4, 5)
    assert maps[0, 1, 2, 3] == 2.0 and maps.sum() == 2.0


def test_centre_rule_scores_frame_start_plus_8_and_leaves_the_ends_unscored():
    # A 20-frame video, 16-frame clips at stride 1: clips start at 0..4 and score frames 8..12.
    starts = np.arange(5)
    scores = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    frames = frames_from_clips(scores, starts, num_frames=20, clip_len=16, rule="centre")
    assert np.all(np.isnan(frames[:8])) and np.all(np.isnan(frames[13:]))
    np.testing.assert_array_equal(frames[8:13], scores)
    assert np.isnan(frames).sum() == 8 + 7


def test_mean_rule_scores_every_frame_from_the_clips_covering_it():
    # 6 frames, clips of 4 at stride 2: [0..3] score 1, [2..5] score 3.
    frames = frames_from_clips(np.array([1.0, 3.0]), np.array([0, 2]), num_frames=6, clip_len=4, rule="mean")
    np.testing.assert_array_equal(frames, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0])


def test_clips_that_do_not_fit_the_video_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        frames_from_clips(np.array([1.0]), np.array([5]), num_frames=10, clip_len=8)
    with pytest.raises(ValueError, match="clip starts"):
        frames_from_clips(np.array([1.0, 2.0]), np.array([0]), num_frames=10, clip_len=8)


def test_normality_is_the_papers_min_max_and_guards_constant_videos():
    p = normality(np.array([2.0, 4.0, np.nan, 3.0]))
    np.testing.assert_allclose(p, [1.0, 0.0, np.nan, 0.5])
    np.testing.assert_allclose(anomaly_score(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(normality(np.array([5.0, 5.0, np.nan])), [1.0, 1.0, np.nan])
    assert np.all(np.isnan(normality(np.array([np.nan, np.nan]))))


def test_global_normaliser_uses_fixed_bounds_and_clips():
    norm = GlobalNormalizer.fit(np.array([1.0, 2.0, 3.0, np.nan]))
    assert (norm.low, norm.high) == (1.0, 3.0)
    np.testing.assert_allclose(norm(np.array([0.0, 2.0, 5.0])), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="no scored"):
        GlobalNormalizer.fit(np.array([np.nan]))


def test_global_normaliser_without_clipping_keeps_values_past_the_bounds_and_nan():
    norm = GlobalNormalizer(2.0, 4.0, clip=False)
    np.testing.assert_allclose(norm(np.array([1.0, 3.0, 6.0, np.nan])), [-0.5, 0.5, 2.0, np.nan])
    flat = GlobalNormalizer(3.0, 3.0, clip=False)  # equal bounds: every scored error at 0
    np.testing.assert_array_equal(flat(np.array([1.0, 5.0, np.nan])), [0.0, 0.0, np.nan])
    np.testing.assert_array_equal(GlobalNormalizer(3.0, 3.0)(np.array([1.0, 5.0, np.nan])), [0.0, 1.0, np.nan])
    fitted = GlobalNormalizer.fit(np.array([2.0, np.inf, 5.0, np.nan]), clip=False)
    assert (fitted.low, fitted.high, fitted.clip) == (2.0, 5.0, False), "infinite and NaN errors are not bounds"


def test_patch_rule_is_the_largest_window_mean_of_the_residual():
    x = torch.zeros(2, 1, 4, 16, 16)
    recon = torch.zeros_like(x)
    recon[1, 0, :, 0:4, 0:4] = 2.0  # one 4x4 window (a quarter of the side) of every frame of clip 1
    torch.testing.assert_close(clip_errors(x, recon, "patch"), torch.tensor([0.0, 2.0]))
    images = torch.zeros(1, 3, 16, 16)
    torch.testing.assert_close(clip_errors(images, images + 0.5, "patch"), torch.tensor([0.5]))


def test_patch_rule_finds_a_small_planted_anomaly_that_the_frame_mean_misses():
    """Frames whose overall error level varies (light, crowd) hide a small object from the whole-frame mean; the
    largest window mean still sets it apart from every normal frame."""
    generator = torch.Generator().manual_seed(0)
    levels = 0.05 + 0.02 * torch.rand(200, generator=generator)  # normal clips: a uniform residual of varying level
    residual = levels.view(-1, 1, 1, 1, 1) * (1 + 0.1 * torch.rand(200, 1, 4, 32, 32, generator=generator))
    planted = residual[:5].clone()
    planted[:, :, :, 4:10, 4:10] += 0.4  # a small object, 6x6 of 32x32 pixels
    normal, anomalous = residual, planted
    for rule, found in (("l1", False), ("patch", True)):
        line = clip_errors(torch.zeros_like(normal), normal, rule).quantile(0.99)
        caught = clip_errors(torch.zeros_like(anomalous), anomalous, rule) > line
        assert bool(caught.all()) is found, rule


def test_min_rule_scores_a_frame_by_its_least_anomalous_clip():
    # Clips of 4 frames over 8 frames; only clip 4 (frames 4..7) errs, as when an anomaly enters at frame 7. "mean"
    # spreads it back to frames 4..6; "min" keeps them normal, since a normal clip covers each of them.
    starts = np.arange(5)
    errors = np.array([1.0, 1.0, 1.0, 1.0, 9.0])
    mean = frames_from_clips(errors, starts, 8, clip_len=4, rule="mean")
    lowest = frames_from_clips(errors, starts, 8, clip_len=4, rule="min")
    assert (mean[4:7] > 1.0).all()
    np.testing.assert_allclose(lowest, [1, 1, 1, 1, 1, 1, 1, 9])
    assert np.isnan(frames_from_clips(errors[:1], starts[:1], 8, clip_len=4, rule="min")[4:]).all()
