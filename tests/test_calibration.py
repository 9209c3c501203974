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


def test_calibrating_a_model_batches_clips_and_stops_at_the_limit():
    import torch

    from memae.evaluation import calibrate_model, model_clip_errors
    from memae.models import create_model
    from memae.transforms import clips_to_tensor

    torch.manual_seed(0)
    model = create_model("memae", width=0.125, mem_dim=20)
    clips = [np.random.default_rng(i).integers(0, 256, (8, 16, 16, 1), dtype=np.uint8) for i in range(7)]
    calibration = calibrate_model(model, iter(clips), "l1", batch_size=3, max_clips=5)
    assert calibration["num_clips"] == 5
    expected = model_clip_errors(model.eval(), clips_to_tensor(np.stack(clips[:5])), "l1").numpy()
    assert calibration["max"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert calibrate_model(model, iter([]), "l1") is None
