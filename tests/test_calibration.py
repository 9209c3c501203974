import numpy as np
import pytest

from memae.calibration import calibrate_errors, threshold


def test_calibration_quantiles_and_threshold():
    errors = np.arange(1, 1001, dtype=float)
    calibration = calibrate_errors(np.append(errors, np.nan), "l1")
    assert calibration["num_clips"] == 1000 and calibration["max"] == 1000
    assert threshold(calibration, 0.99) == pytest.approx(np.quantile(errors, 0.99))
    between = threshold(calibration, 0.97)
    assert calibration["quantiles"]["0.95"] < between < calibration["quantiles"]["0.99"]
    with pytest.raises(ValueError, match="outside"):
        threshold(calibration, 0.9999)
    with pytest.raises(ValueError, match="no clip errors"):
        calibrate_errors(np.array([np.nan]), "l1")
