"""Pseudo-anomalies: what the edits do to a clip, and that their AUC tells a trained model from an untrained one."""

import numpy as np
import pytest
import torch

from memae.pseudo_anomalies import paste_patch, pseudo_anomaly_auc, pseudo_anomaly_pairs, speed_up


def _moving_square(frames: int = 32, size: int = 24) -> np.ndarray:
    video = np.full((frames, size, size, 1), 40, dtype=np.uint8)
    for t in range(frames):
        video[t, 8:12, t % (size - 4):t % (size - 4) + 4] = 220
    return video


def test_speed_up_takes_every_other_frame_and_refuses_short_windows():
    window = _moving_square()
    np.testing.assert_array_equal(speed_up(window, clip_len=16), window[0:32:2])
    with pytest.raises(ValueError, match="needs 32 frames"):
        speed_up(window[:31], clip_len=16)


def test_pasted_patch_moves_through_the_clip_and_leaves_the_original_alone():
    rng = np.random.default_rng(0)
    clip = np.zeros((8, 40, 40, 1), dtype=np.uint8)
    donor = np.full((4, 40, 40, 1), 200, dtype=np.uint8)
    edited = paste_patch(clip, donor, rng)
    assert clip.max() == 0  # a copy is edited
    changed = [np.argwhere(frame[..., 0] > 0) for frame in edited]
    assert all(len(c) == 8 * 8 for c in changed)  # a 20% patch of 40 pixels in every frame
    assert not np.array_equal(changed[0], changed[-1])  # and it moves


def test_pairs_alternate_edits_and_keep_the_first_clip_as_the_normal_one():
    windows = np.stack([_moving_square(), _moving_square()[::-1].copy()])
    normal, edited = pseudo_anomaly_pairs(windows, clip_len=16, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(normal, windows[:, :16])
    np.testing.assert_array_equal(edited[0], windows[0, ::2])
    assert edited.shape == normal.shape and not np.array_equal(edited[1], normal[1])
    with pytest.raises(ValueError, match="windows"):
        pseudo_anomaly_pairs(windows[:, :20], clip_len=16, rng=np.random.default_rng(0))
    assert pseudo_anomaly_auc([0.1, 0.2], [0.3, 0.4]) == 1.0 and pseudo_anomaly_auc([0.3], [0.3]) == 0.5


def test_the_pseudo_anomaly_objective_ranks_a_trained_model_above_an_untrained_one(one_torch_thread):
    """No labels: normal synthetic clips against their sped-up and patched copies, before and after training."""
    from experiments.synthetic import SynthConfig, render_video
    from memae.evaluation import model_clip_errors
    from memae.presets import get_preset
    from memae.training import train_one_epoch
    from memae.transforms import clips_to_tensor

    preset = get_preset("cpu-tiny")
    config = SynthConfig(height=48, width=64, frames=64, seed=0)

    def grey(video: np.ndarray) -> np.ndarray:
        small = torch.nn.functional.interpolate(torch.as_tensor(video.mean(-1, keepdims=True)).permute(0, 3, 1, 2),
                                                size=preset.frame_size, mode="area")
        return small.permute(0, 2, 3, 1).round().to(torch.uint8).numpy()

    train = [grey(render_video(config, "train", i).frames) for i in range(3)]
    held = grey(render_video(config, "train", 3).frames)
    T = preset.clip_len
    clips = np.stack([v[s:s + T] for v in train for s in range(0, len(v) - T + 1, 2)])
    windows = np.stack([held[s:s + 2 * T] for s in range(0, len(held) - 2 * T + 1, T // 2)])
    normal, edited = pseudo_anomaly_pairs(windows, T, np.random.default_rng(0))

    def auc(model: torch.nn.Module) -> float:
        model.eval()
        return pseudo_anomaly_auc(model_clip_errors(model, clips_to_tensor(normal)).numpy(),
                                  model_clip_errors(model, clips_to_tensor(edited)).numpy())

    torch.manual_seed(0)
    model = preset.model.build()
    before = auc(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(8):
        order = rng.permutation(len(clips))
        train_one_epoch(model, optimizer, (clips_to_tensor(clips[order[i:i + 8]]) for i in range(0, len(order), 8)))
    assert auc(model) > before
