"""The scoring job's pieces without Ray: segments, clip cutting, settings from model and flags, ledger, map spool."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from memae.checkpoint import save_checkpoint
from memae.models import AutoEncoderCov3DMem
from memae.presets import get_preset
from memae.segments import anomalous_segments, flag_runs
from pipelines.registry.source import load_model_source, scoring_settings
from pipelines.score.config import ScoreConfig
from pipelines.score.data import sliding_clips
from pipelines.score.outputs import Ledger, MapSpool


def test_flag_runs_and_segments_with_times_and_peaks():
    flags = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    assert flag_runs(flags) == [(1, 2), (5, 7), (9, 9)]
    values = np.array([0, 2, 3, 0, 0, 1, 5, 4, 0, 9], dtype=float)
    segments = anomalous_segments(flags, values, fps=10.0, min_frames=2)
    assert [(s.start_frame, s.end_frame, s.peak_frame) for s in segments] == [(1, 2, 2), (5, 7, 6)]
    assert segments[1].start_s == pytest.approx(0.5) and segments[1].end_s == pytest.approx(0.8)
    assert segments[1].as_dict()["num_frames"] == 3


def test_unscored_frames_end_a_segment_and_times_need_an_fps():
    values = np.array([5, np.nan, 5, 5])
    segments = anomalous_segments(np.ones(4, bool), values)
    assert [(s.start_frame, s.end_frame) for s in segments] == [(0, 0), (2, 3)]
    assert math.isnan(segments[0].start_s)


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
@pytest.mark.parametrize("stride", [1, 2, 5])
def test_sliding_clips_match_slicing_the_whole_video_whatever_the_chunks(chunk, stride):
    video = np.arange(23)[:, None, None, None].astype(np.uint8) * np.ones((1, 2, 2, 1), np.uint8)
    chunks = (video[i : i + chunk] for i in range(0, len(video), chunk))
    clips = list(sliding_clips(chunks, 8, stride))
    assert [s for s, _ in clips] == list(range(0, 23 - 8 + 1, stride))
    for start, clip in clips:
        assert np.array_equal(clip, video[start : start + 8])


def test_a_video_shorter_than_a_clip_gives_no_clip():
    assert list(sliding_clips([np.zeros((5, 2, 2, 1), np.uint8)], 8, 1)) == []


def config(**kw) -> ScoreConfig:
    return ScoreConfig(model="m", out="o", dataset="auto", root="r", **kw)


def test_an_official_state_dict_gets_the_paper_preprocessing_unless_flags_say_otherwise(tmp_path):
    net = AutoEncoderCov3DMem(chnum_in=1, mem_dim=20)
    path = tmp_path / "official.pt"
    torch.save(net.state_dict(), path)
    source = load_model_source(str(path))
    assert source.kind == "official" and source.key.startswith("official-")
    settings = scoring_settings(source, config(), None)
    assert (settings.clip_len, settings.height, settings.width, settings.color) == (16, 256, 256, "gray")
    assert settings.frame_rule == "mean" and settings.error_rule == "l1"
    small = scoring_settings(source, config(height=64, width=96, frame_rule="centre"), None)
    assert (small.height, small.width, small.frame_rule) == (64, 96, "centre")
    with pytest.raises(ValueError, match="do not fit the network"):
        scoring_settings(source, config(height=40), None)


def test_our_checkpoint_takes_its_clip_length_from_the_preset_and_its_size_from_the_shards(tmp_path):
    preset = get_preset("cpu-tiny")
    path = tmp_path / "ck.pt"
    save_checkpoint(path, preset.model.build(), preset.model, config={"preset": "cpu-tiny", "error_rule": "l2-time"})
    source = load_model_source(str(path))
    settings = scoring_settings(source, config(), (48, 64, 1))
    assert (settings.clip_len, settings.height, settings.width, settings.error_rule) == (8, 48, 64, "l2-time")
    assert scoring_settings(source, config(), None).height == 32  # raw archive: the preset's size
    with pytest.raises(ValueError, match="cannot be resized"):
        scoring_settings(source, config(height=32), (48, 64, 1))
    with pytest.raises(ValueError, match="3-channel"):
        scoring_settings(source, config(), (48, 64, 3))


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such model file"):
        load_model_source(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot be read"):
        load_model_source(str(tmp_path / "junk.pt"))


def test_ledger_sections_resume_refuse_other_settings_and_start_over(tmp_path):
    ledger = Ledger(tmp_path)
    section = ledger.open_section("m-v1", {"memae.model_name": "m"}, {"clip_len": 16}, fresh=False)
    section["videos"]["test/01"] = {"file": None}
    ledger.save()
    again = Ledger(tmp_path).open_section("m-v1", {}, {"clip_len": 16}, fresh=False)
    assert "test/01" in again["videos"]
    with pytest.raises(ValueError, match="other settings"):
        Ledger(tmp_path).open_section("m-v1", {}, {"clip_len": 8}, fresh=False)
    assert Ledger(tmp_path).open_section("m-v1", {}, {"clip_len": 8}, fresh=True)["videos"] == {}
    (tmp_path / "ledger.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a memae-score-ledger"):
        Ledger(tmp_path)


def test_map_spool_places_maps_at_their_frames_in_any_order(tmp_path):
    spool = MapSpool(tmp_path / "v.maps.npy")
    spool.add(np.array([5, 3]), np.full((2, 2, 2), [[[5.0]], [[3.0]]]))
    spool.add(np.array([4]), np.full((1, 2, 2), 4.0))
    spool.finish(7)
    maps = np.load(tmp_path / "v.maps.npy")
    assert maps.shape == (7, 2, 2) and maps.dtype == np.float16
    assert np.isnan(maps[[0, 1, 2, 6]]).all() and maps[3:6, 0, 0].tolist() == [3.0, 4.0, 5.0]
    assert list(tmp_path.iterdir()) == [tmp_path / "v.maps.npy"]

