"""Alarm events with hysteresis, and the camera a video id belongs to."""

import numpy as np
import pytest

from memae.datasets.cameras import camera_of
from memae.segments import hysteresis_flags


def test_events_open_above_the_alarm_line_and_last_while_above_the_release_line():
    values = np.array([0.0, 0.6, 0.7, 1.2, 0.8, 0.6, 0.2, 0.9, np.nan, 0.7, 1.5, 0.1])
    flags = hysteresis_flags(values, high=1.0, low=0.55)
    # The first event reaches back to where the score rose past the release line (frame 1), and ends where it fell
    # (frame 6); frame 7 passes the release line only, so it raises nothing; NaN ends a run.
    np.testing.assert_array_equal(flags.nonzero()[0], [1, 2, 3, 4, 5, 9, 10])
    np.testing.assert_array_equal(hysteresis_flags(values, high=1.0, low=0.55, min_frames=3).nonzero()[0],
                                  [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(hysteresis_flags(values, high=1.0).nonzero()[0], [3, 10])  # no hysteresis
    with pytest.raises(ValueError, match="release"):
        hysteresis_flags(values, high=1.0, low=2.0)


def test_a_flickering_score_makes_one_event_not_many():
    values = np.tile([1.2, 0.9], 10)  # crosses the alarm line every other frame
    assert hysteresis_flags(values, high=1.0).sum() == 10  # ten one-frame events without hysteresis
    assert hysteresis_flags(values, high=1.0, low=0.8).all()


@pytest.mark.parametrize("video_id, camera", [
    ("cam01/2024-05-01T08.mp4", "cam01"),
    ("cam02/night/0001.avi", "cam02"),
    ("cam02__0001.avi", "cam02"),
    ("train/cam03/a.mp4", "cam03"),
    ("testing/01.mp4", ""),
    ("01_0014", "01"),
    ("12_001", "12"),
    ("Test001", ""),
    ("07", ""),
])
def test_camera_of_reads_folders_and_shanghaitech_scenes(video_id, camera):
    assert camera_of(video_id) == camera
