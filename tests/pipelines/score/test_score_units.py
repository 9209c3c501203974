"""The scoring job's pieces without a running Ray: segments, clip cutting, settings from model and flags, actor
planning, gathering clips by video, the ledger, rebuilding the tables, map spool."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from memae.checkpoint import save_checkpoint
from memae.models import AutoEncoderCov3DMem
from memae.presets import get_preset
from memae.scoring import DEFAULT_FRAME_RULE
from memae.segments import anomalous_segments, flag_runs
from pipelines.registry.source import load_model_source, scoring_settings
from pipelines.score.actors import actor_plan
from pipelines.score.collect import Collector
from pipelines.score.config import ScoreConfig, ScoreSetupError
from pipelines.score.data import VideoEnd, VideoUnit, sliding_clips
from pipelines.score.ledger import Ledger, LedgerEntry
from pipelines.score.outputs import MapSpool, rebuild_outputs, video_path, write_video_scores
from pipelines.score.threshold import Threshold


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
    assert settings.frame_rule == "centre" and settings.error_rule == "l1"
    small = scoring_settings(source, config(height=64, width=96, frame_rule="mean"), None)
    assert (small.height, small.width, small.frame_rule) == (64, 96, "mean")
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


def test_our_checkpoint_is_scored_with_the_frame_rule_it_was_trained_with(tmp_path):
    preset = get_preset("cpu-tiny")
    centre, older = tmp_path / "centre.pt", tmp_path / "older.pt"
    save_checkpoint(centre, preset.model.build(), preset.model, config={"preset": "cpu-tiny", "frame_rule": "centre"})
    save_checkpoint(older, preset.model.build(), preset.model, config={"preset": "cpu-tiny"})
    assert scoring_settings(load_model_source(str(centre)), config(), None).frame_rule == "centre"
    assert scoring_settings(load_model_source(str(centre)), config(frame_rule="mean"), None).frame_rule == "mean"
    assert scoring_settings(load_model_source(str(older)), config(), None).frame_rule == DEFAULT_FRAME_RULE
    odd = tmp_path / "odd.pt"
    save_checkpoint(odd, preset.model.build(), preset.model, config={"preset": "cpu-tiny", "frame_rule": "max"})
    with pytest.raises(ValueError, match="frame rule 'max'"):
        scoring_settings(load_model_source(str(odd)), config(), None)


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such model file"):
        load_model_source(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: cannot be read"):
        load_model_source(str(tmp_path / "junk.pt"))


def entry(video_id: str, file: str | None, num_frames: int = 10) -> LedgerEntry:
    return LedgerEntry(video_id, "test", f"/data/{video_id}", num_frames, 3, 25.0, file, "2025-01-01T00:00:00+00:00")


def test_ledger_sections_resume_refuse_other_settings_and_start_over(tmp_path):
    ledger = Ledger(tmp_path)
    section = ledger.open_section("m-v1", {"memae.model_name": "m"}, {"clip_len": 16}, fresh=False)
    ledger.record(section, "test/01", entry("01", None))
    again = Ledger(tmp_path).open_section("m-v1", {}, {"clip_len": 16}, fresh=False)
    assert again.videos == {"test/01": entry("01", None)}
    with pytest.raises(ValueError, match="other settings"):
        Ledger(tmp_path).open_section("m-v1", {}, {"clip_len": 8}, fresh=False)
    assert Ledger(tmp_path).open_section("m-v1", {}, {"clip_len": 8}, fresh=True).videos == {}
    (tmp_path / "ledger.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a memae-score-ledger"):
        Ledger(tmp_path)
    (tmp_path / "ledger.json").write_text(json.dumps({"format": "memae-score-ledger/1", "models": {"m": {}}}))
    with pytest.raises(ValueError, match="damaged ledger"):
        Ledger(tmp_path)


def test_the_ledger_file_keeps_its_format_and_survives_a_round_trip(tmp_path):
    ledger = Ledger(tmp_path)
    section = ledger.open_section("m-v1", {"memae.model_name": "m"}, {"clip_len": 16}, fresh=False)
    ledger.keep_calibration(section, {"error_rule": "l1", "quantiles": {"0.5": 0.1}})
    ledger.record(section, "test/01", entry("01", "scored/m-v1/test/01.parquet"))
    raw = json.loads((tmp_path / "ledger.json").read_text())
    assert raw == {"format": "memae-score-ledger/1", "models": {"m-v1": {
        "model": {"memae.model_name": "m"}, "settings": {"clip_len": 16},
        "calibration": {"error_rule": "l1", "quantiles": {"0.5": 0.1}},
        "videos": {"test/01": {"video_id": "01", "split": "test", "source": "/data/01", "num_frames": 10,
                               "num_clips": 3, "fps": 25.0, "file": "scored/m-v1/test/01.parquet",
                               "scored_at": "2025-01-01T00:00:00+00:00"}}}}}
    assert list(raw["models"]["m-v1"]) == ["model", "settings", "calibration", "videos"]
    before = (tmp_path / "ledger.json").read_bytes()
    Ledger(tmp_path).save()
    assert (tmp_path / "ledger.json").read_bytes() == before
    reopened = Ledger(tmp_path)
    assert reopened.done_videos(reopened.sections["m-v1"]) == set(), "its file is gone: not done"


def test_actor_plan_shares_the_cpus_decoding_leaves_and_asks_for_gpus_only_when_there_are(monkeypatch):
    import ray

    cluster = {"CPU": 2.0}
    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": cluster}])
    plan = actor_plan(config())
    assert (plan.device, plan.actors, plan.cpus, plan.threads) == ("cpu", 1, 1.5, 2)
    assert plan.resources == {"num_cpus": 1.5}
    with pytest.raises(ScoreSetupError, match="no GPU"):
        actor_plan(config(use_gpu=True))
    cluster = {"CPU": 16.0, "GPU": 2.0}
    plan = actor_plan(config())
    assert (plan.device, plan.actors, plan.cpus) == ("cuda", 2, 1.0)
    assert plan.resources == {"num_cpus": 1.0, "num_gpus": 1}


def scored_rows(key: str, starts: list[int], errors: list[float], end: VideoEnd | None = None) -> dict:
    """A batch as the scoring actors hand it back: clip rows, then the end row when given."""
    keys, ends = [key] * len(starts), [""] * len(starts)
    if end is not None:
        starts, errors, keys, ends = [*starts, -1], [*errors, np.nan], [*keys, key], [*ends, end.encode()]
    return {"key": np.array(keys), "start": np.array(starts, np.int64), "error": np.array(errors),
            "end": np.array(ends)}


def test_the_collector_completes_a_video_once_every_clip_arrived_whatever_the_order():
    units = [VideoUnit("test", "a", "/a"), VideoUnit("test", "b", "/b")]
    collector = Collector(units, None, centre=4)
    assert list(collector.add(scored_rows("test/a", [2, 0], [2.0, 0.5]))) == []
    early_end = VideoEnd("done", num_frames=11, num_clips=4, fps=25.0)
    assert list(collector.add(scored_rows("test/a", [0], [9.0], early_end))) == [], "3 distinct clips of 4"
    failed = VideoEnd("failed", 5, 0, file="/b/3.png", reason="cannot decode")
    ((unit, video),) = collector.add(scored_rows("test/b", [0], [1.0], failed))
    assert unit.key == "test/b" and video.end == failed
    ((unit, video),) = collector.add(scored_rows("test/a", [3, 1], [3.0, 1.0]))
    starts, errors = video.clip_errors()
    assert unit.key == "test/a" and starts.tolist() == [0, 1, 2, 3] and errors.tolist() == [0.5, 1.0, 2.0, 3.0]
    assert list(collector.add(scored_rows("test/b", [1], [1.0]))) == [], "late clips of a failed video are dropped"
    assert collector.clips == 6 and collector.unfinished() == []


def test_the_collector_names_videos_whose_end_never_came():
    collector = Collector([VideoUnit("test", "a", "/a")], None, centre=4)
    list(collector.add(scored_rows("test/a", [0], [1.0])))
    assert [u.key for u in collector.unfinished()] == ["test/a"]


def test_rebuilt_tables_put_every_video_on_one_unclipped_global_scale(tmp_path):
    from pipelines.registry.source import ScoringSettings

    ledger = Ledger(tmp_path)
    settings = ScoringSettings(clip_len=2, height=4, width=4, channels=1, stride=1, error_rule="l1", frame_rule="mean")
    section = ledger.open_section("m", {}, {}, fresh=True)
    errors = {"a": [np.nan, 0.5, 1.0, 3.0], "b": [2.0, 2.0, 1.5, np.nan]}
    for video_id, values in errors.items():
        path = video_path(ledger.folder("m"), "test", video_id, ".parquet")
        values = np.array(values)
        write_video_scores(path, video_id, "test", values, np.zeros(4), np.zeros(4, np.int8))
        ledger.record(section, f"test/{video_id}", entry(video_id, str(path.relative_to(tmp_path)), num_frames=4))
    ledger.record(section, "test/short", entry("short", None, num_frames=1))
    calibrated = Threshold(error=2.0, low=1.0, level=0.99, source="test")
    outputs = rebuild_outputs(tmp_path, section, calibrated, settings, plot_videos=2, worst_frames=2)
    frames = pq.read_table(outputs.files["frame_scores"]).to_pandas()
    np.testing.assert_array_equal(frames.score_global, [np.nan, -0.5, 0.0, 2.0, 1.0, 1.0, 0.5, np.nan])
    assert frames.flagged.tolist() == [False, False, False, True, False, False, False, False]
    assert [s["scored"] for s in outputs.summaries] == [True, True, False]
    offline = Threshold(error=None, low=None, level=0.99, source="none")
    rebuild_outputs(tmp_path, section, offline, settings, plot_videos=2, worst_frames=2)
    frames = pq.read_table(outputs.files["frame_scores"]).to_pandas()
    np.testing.assert_allclose(frames.score_global, [np.nan, 0.0, 0.2, 1.0, 0.6, 0.6, 0.4, np.nan])


def test_map_spool_places_maps_at_their_frames_in_any_order(tmp_path):
    spool = MapSpool(tmp_path / "v.maps.npy")
    spool.add(np.array([5, 3]), np.full((2, 2, 2), [[[5.0]], [[3.0]]]))
    spool.add(np.array([4]), np.full((1, 2, 2), 4.0))
    spool.finish(7)
    maps = np.load(tmp_path / "v.maps.npy")
    assert maps.shape == (7, 2, 2) and maps.dtype == np.float16
    assert np.isnan(maps[[0, 1, 2, 6]]).all() and maps[3:6, 0, 0].tolist() == [3.0, 4.0, 5.0]
    assert list(tmp_path.iterdir()) == [tmp_path / "v.maps.npy"]

