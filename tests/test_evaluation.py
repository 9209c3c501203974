import numpy as np
import pytest
import torch

from memae.evaluation import VideoScorer, model_clip_errors, unique_clip_errors, video_metrics
from memae.presets import get_preset


def test_scorer_orders_clips_drops_duplicates_and_applies_the_frame_rule():
    scorer = VideoScorer(clip_len=4, frame_rule="centre")
    scorer.add(["b", "a", "a"], [0, 2, 0], [5.0, 3.0, 1.0])
    scorer.add(["a"], [2], [99.0])  # the same clip scored again (a resumed run): the first score is kept
    starts, errors = scorer.clip_errors("a")
    np.testing.assert_array_equal(starts, [0, 2])
    np.testing.assert_array_equal(errors, [1.0, 3.0])
    frames = scorer.frame_errors({"a": 6, "b": 4})
    np.testing.assert_array_equal(frames["a"], [np.nan, np.nan, 1.0, np.nan, 3.0, np.nan])
    assert scorer.video_ids == ["a", "b"]


def test_unique_clip_errors_sort_by_start_and_keep_the_first_arrival_of_a_clip():
    starts, errors = unique_clip_errors(np.array([4, 0, 2, 0, 4]), np.array([4.0, 0.5, 2.0, 9.0, 8.0]))
    np.testing.assert_array_equal(starts, [0, 2, 4])
    np.testing.assert_array_equal(errors, [0.5, 2.0, 4.0])
    assert starts.dtype == np.int64 and errors.dtype == np.float64
    empty_starts, empty_errors = unique_clip_errors([], [])
    assert empty_starts.size == 0 and empty_errors.size == 0
    with pytest.raises(ValueError, match="3 clip starts but 2 clip errors"):
        unique_clip_errors([0, 1, 2], [1.0, 2.0])


def test_scorer_refuses_mismatched_columns():
    with pytest.raises(ValueError, match="2 video ids, 1 starts"):
        VideoScorer(clip_len=4).add(["a", "b"], [0], [1.0, 2.0])


def test_video_metrics_normalise_per_video_before_concatenating():
    # Video b's errors are 100x larger, but per-video min-max makes both videos' anomalies rank on top.
    errors = {"a": np.array([1.0, 1.0, 2.0, 1.0]), "b": np.array([100.0, 200.0, 100.0, 100.0])}
    labels = {"a": np.array([0, 0, 1, 0]), "b": np.array([0, 1, 0, 0])}
    m = video_metrics(errors, labels)
    assert m.auc_micro == 1.0 and m.auc_macro == 1.0


def test_video_metrics_skip_videos_without_labels():
    errors = {"a": np.array([1.0, 2.0]), "u": np.array([5.0, 9.0])}
    labels = {"a": np.array([0, 1]), "u": np.array([-1, -1])}
    assert video_metrics(errors, labels).num_frames == 2


def test_model_clip_errors_are_one_per_clip():
    model = get_preset("cpu-tiny").model.build().eval()
    errors = model_clip_errors(model, torch.zeros(3, 1, 8, 32, 32))
    assert errors.shape == (3,) and torch.all(errors >= 0)
