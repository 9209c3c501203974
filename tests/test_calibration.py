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
    with pytest.raises(ValueError, match="no errors"):
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


def test_cameras_with_enough_normal_frames_get_their_own_threshold():
    rng = np.random.default_rng(0)
    street, corridor = rng.normal(2.0, 0.1, 500), rng.normal(1.0, 0.1, 500)
    calibration = calibrate_errors(np.concatenate([street, corridor]), "patch", unit="frame", source="held out",
                                   cameras={"street": street, "corridor": corridor, "new": np.ones(10)})
    assert set(calibration["cameras"]) == {"street", "corridor"}  # 10 frames are too few for quantiles of their own
    assert threshold(calibration, 0.99, "street") == pytest.approx(np.quantile(street, 0.99))
    assert threshold(calibration, 0.99, "corridor") == pytest.approx(np.quantile(corridor, 0.99))
    pooled = threshold(calibration, 0.99)
    assert threshold(calibration, 0.99, "new") == pooled == threshold(calibration, 0.99, "unknown")
    assert calibration["unit"] == "frame" and calibration["source"] == "held out"


def test_frame_calibration_on_held_out_normal_video_keeps_its_false_alarm_promise():
    """Thresholds from the frame errors of some normal videos flag about the nominal share of frames of other normal
    videos from the same source, and the calibration records the frame rule it was made with."""
    import torch

    from memae.evaluation import VideoScorer, calibrate_frames, model_clip_errors
    from memae.models import create_model
    from memae.transforms import clips_to_tensor

    torch.manual_seed(0)
    model = create_model("memae", width=0.125, mem_dim=20)
    rng = np.random.default_rng(0)
    videos = {f"cam1/{i:02d}.mp4": rng.integers(90, 110, (40, 16, 16, 1), dtype=np.uint8) for i in range(12)}

    def rows(ids):
        return ({"video_id": v, "start": s, "clip": videos[v][s:s + 8]} for v in ids for s in range(40 - 8 + 1))

    lengths = {v: 40 for v in videos}
    held, fresh = sorted(videos)[:6], sorted(videos)[6:]
    calibration = calibrate_frames(model, rows(held), lengths, clip_len=8, error_rule="l1", frame_rule="mean",
                                   batch_size=16, source="six videos")
    assert calibration["frame_rule"] == "mean" and calibration["num_values"] == 6 * 40
    assert set(calibration["cameras"]) == {"cam1"}
    assert 0.1 / 3 <= calibration["unseen_video_exceedance"]["0.9"] <= 0.1 * 3  # the videos are alike
    scorer = VideoScorer(clip_len=8, frame_rule="mean")
    batch = list(rows(fresh))
    scorer.add([r["video_id"] for r in batch], [r["start"] for r in batch],
               model_clip_errors(model, clips_to_tensor(np.stack([r["clip"] for r in batch]))))
    fresh_errors = np.concatenate(list(scorer.frame_errors(lengths).values()))
    rate = float((fresh_errors > threshold(calibration, 0.9, "cam1")).mean())
    assert 0.1 / 3 <= rate <= 0.1 * 3  # within a small factor of the nominal 10%


def test_unseen_video_exceedance_is_nominal_for_alike_videos_and_far_above_it_for_unlike_ones():
    from memae.calibration import unseen_video_exceedance

    rng = np.random.default_rng(0)
    alike = {f"v{i}": rng.normal(1.0, 0.1, 2000) for i in range(6)}
    nominal = unseen_video_exceedance(alike)
    assert 0.005 <= nominal["0.99"] <= 0.02 and 0.03 <= nominal["0.95"] <= 0.07
    # A busy video and a quiet one: each lies wholly above or below the other's line.
    unlike = {"quiet": rng.normal(1.0, 0.05, 500), "busy": rng.normal(2.0, 0.05, 500)}
    assert unseen_video_exceedance(unlike)["0.99"] == pytest.approx(0.5)
    with_nan = {"a": np.array([np.nan, 1.0, 2.0]), "b": np.full(3, np.nan)}
    assert unseen_video_exceedance(with_nan) is None  # one video with scored frames: nothing to compare it with


def test_grouped_exceedance_checks_each_group_against_the_others_and_is_exact_with_a_group_per_video():
    from memae.calibration import unseen_video_exceedance

    rng = np.random.default_rng(1)
    alike = {f"v{i}": rng.normal(1.0, 0.1, 1000) for i in range(40)}
    assert unseen_video_exceedance(alike, groups=40) == unseen_video_exceedance(alike)
    grouped = unseen_video_exceedance(alike, groups=5)
    assert 0.005 <= grouped["0.99"] <= 0.02 and 0.03 <= grouped["0.95"] <= 0.07
    # Every fourth video busy: with 4 groups (round-robin) one group holds all of them and nothing outside it does.
    mixed = {f"v{i}": rng.normal(2.0 if i % 4 == 0 else 1.0, 0.05, 500) for i in range(8)}
    assert unseen_video_exceedance(mixed, groups=4)["0.99"] == pytest.approx(0.25)
    assert unseen_video_exceedance(mixed)["0.99"] < 0.25, "each busy video sees the other busy one set the line"


def test_later_video_exceedance_checks_the_newest_videos_against_the_line_of_the_older_ones():
    from memae.calibration import later_video_exceedance

    rng = np.random.default_rng(2)
    steady = [rng.normal(1.0, 0.1, 1000) for _ in range(20)]
    nominal = later_video_exceedance(steady)
    assert 0.003 <= nominal["0.99"] <= 0.03
    drifted = steady[:18] + [rng.normal(1.5, 0.1, 1000) for _ in range(2)]  # the last two nights: a camera moved
    assert later_video_exceedance(drifted)["0.99"] > 0.9, "the newest tenth lies above the older footage's line"
    assert later_video_exceedance(drifted[::-1])["0.99"] < 0.1, "order matters: here the odd videos are the oldest"
    assert later_video_exceedance(steady[:1]) is None
