"""The scoring job's pieces without a running Ray: segments, clip cutting, frame blocks and the scoring actor,
settings from model and flags, actor planning, gathering clips by video, the ledger and its migration, paths kept
inside --out, which videos a run scores, rebuilding the tables, map spool."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import pickle
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from memae.checkpoint import save_checkpoint
from memae.evaluation import model_clip_errors
from memae.models import AutoEncoderCov3DMem
from memae.presets import get_preset
from memae.scoring import DEFAULT_FRAME_RULE
from memae.segments import anomalous_segments, flag_runs
from memae.transforms import clips_to_tensor
from pipelines.ingest.clips import clip_starts
from pipelines.registry.source import ScoringSettings, load_model_source, scoring_settings
from pipelines.score import data
from pipelines.score.actors import ScoringActor, actor_plan, run_precision
from pipelines.score.changes import content_hash, renamed_videos, select_videos, source_stamp
from pipelines.score.collect import Collector
from pipelines.score.config import ScoreConfig, ScoreSetupError, since_time
from pipelines.score.data import (
    BLOCK_BATCHES,
    BLOCK_BYTES,
    VideoEnd,
    VideoUnit,
    clips_per_block,
    frame_blocks,
    sliding_clips,
    video_frame_blocks,
)
from pipelines.score.ledger import Ledger, LedgerEntry, Stamp
from pipelines.score.outputs import FRAME_SCHEMA, MapSpool, rebuild_outputs, write_video_scores
from pipelines.score.paths import UnsafePath, video_path
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


def cut(blocks, clip_len: int, stride: int) -> list[tuple[int, np.ndarray]]:
    """The clips the scoring actors cut from frame blocks, at video frame indices."""
    return [(first + s, clip) for first, frames in blocks for s, clip in sliding_clips([frames], clip_len, stride)]


@pytest.mark.parametrize("length", [5, 8, 11, 15, 19, 23, 40])
@pytest.mark.parametrize("stride", [1, 2, 3, 8, 11])
@pytest.mark.parametrize("clips", [1, 3, 4])
@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_frame_blocks_carry_exactly_the_frames_of_the_clips_of_the_whole_video(length, stride, clips, chunk):
    video = np.arange(length)[:, None, None, None].astype(np.uint8) * np.ones((1, 2, 2, 1), np.uint8)
    chunks = (video[i : i + chunk] for i in range(0, length, chunk))
    blocks = list(frame_blocks(chunks, 8, stride, clips))
    expected = list(sliding_clips([video], 8, stride))
    assert [(s, c.tolist()) for s, c in cut(blocks, 8, stride)] == [(s, c.tolist()) for s, c in expected]
    for first, frames in blocks:
        assert np.array_equal(frames, video[first : first + len(frames)]), "consecutive frames from `first`"
        count = len(clip_starts(len(frames), 8, stride))
        assert 1 <= count <= clips and len(frames) == 8 + (count - 1) * stride, "no frame beyond its last clip"
    assert sum(len(clip_starts(len(f), 8, stride)) for _, f in blocks) == len(expected)


def test_block_size_follows_the_batch_and_stays_under_the_byte_bound():
    small = ScoringSettings(clip_len=16, height=64, width=64, channels=1, stride=1, error_rule="l1", frame_rule="mean")
    assert clips_per_block(small, 16) == BLOCK_BATCHES * 16
    big = replace(small, height=512, width=512, channels=3)  # 768 KiB frames: 21 fit in 16 MiB, 6 clips
    assert clips_per_block(big, 16) == len(clip_starts(BLOCK_BYTES // (768 << 10), 16, 1)) == 6
    assert clips_per_block(replace(big, height=1024, width=1024), 16) == 1, "a clip over the bound still goes, alone"
    rgb = replace(small, height=256, width=256, channels=3)
    clips = clips_per_block(rgb, 16)
    assert clips % 16 == 0 and (16 + clips - 1) * 256 * 256 * 3 <= BLOCK_BYTES


def block_rows(unit: VideoUnit, settings, batch_size: int = 4) -> list[dict]:
    return list(video_frame_blocks({"unit": [pickle.dumps(unit)]}, settings, batch_size))


def mp4_unit(path, frames: int) -> VideoUnit:
    from experiments.synthetic import SynthConfig, render_video, write_video
    from memae.datasets import VideoRecord

    cfg = SynthConfig(height=48, width=64, frames=max(frames, 20), seed=3)
    write_video(path, render_video(cfg, "train", 0).frames[:frames], cfg.fps)
    return VideoUnit("train", path.name, str(path), record=VideoRecord(path.name, "train", path))


def tiny_settings(stride: int = 1, clip_len: int = 8):
    return ScoringSettings(clip_len=clip_len, height=32, width=32, channels=1, stride=stride, error_rule="l1",
                           frame_rule="mean")


def test_a_video_becomes_frame_blocks_then_an_end_row_with_its_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "BLOCK_BATCHES", 1)  # blocks of one batch of 4 clips
    rows = block_rows(mp4_unit(tmp_path / "v.mp4", 30), tiny_settings(stride=2))
    *blocks, end = rows
    assert all(r["end"][0] == "" and r["frames"].shape[2:] == (32, 32, 1) for r in blocks)
    assert [r["start"][0] for r in blocks] == [0, 8, 16]  # blocks of 4 clips, stride 2; 30 frames hold 12 clips
    assert end["start"][0] == -1 and end["frames"].shape == (1, 0, 32, 32, 1)
    assert VideoEnd.decode(end["end"][0]) == VideoEnd("done", 30, 12, 10.0)
    short = block_rows(mp4_unit(tmp_path / "s.mp4", 5), tiny_settings())
    assert len(short) == 1 and VideoEnd.decode(short[0]["end"][0]).status == "short"


def test_a_video_another_decoder_reads_is_scored_and_its_end_row_says_so(tmp_path, monkeypatch):
    import memae.datasets.decoders as decoders
    from memae.datasets import VideoDecodeError

    def refuses(path, size=None, channels=3):
        raise VideoDecodeError(path, "not a video decord can read (corrupt or truncated)")

    monkeypatch.setitem(decoders.BACKENDS, "decord", decoders.Backend("decord", "decord", refuses, True))
    *_, end = block_rows(mp4_unit(tmp_path / "v.mp4", 30), tiny_settings(stride=2))
    assert VideoEnd.decode(end["end"][0]) == VideoEnd("done", 30, 12, 10.0, notes=(
        "read with opencv, as decord failed: not a video decord can read (corrupt or truncated)",))


def test_a_corrupt_video_ends_in_a_failed_row(tmp_path):
    unit = mp4_unit(tmp_path / "v.mp4", 30)
    (tmp_path / "v.mp4").write_bytes((tmp_path / "v.mp4").read_bytes()[:300])
    (row,) = block_rows(unit, tiny_settings())
    end = VideoEnd.decode(row["end"][0])
    assert end.status == "failed" and end.file == str(tmp_path / "v.mp4") and end.num_clips == 0


def test_frames_of_the_wrong_shape_or_a_break_mid_stream_fail_the_video_after_the_blocks_sent(monkeypatch):
    from memae.datasets import VideoDecodeError

    monkeypatch.setattr(data, "BLOCK_BATCHES", 1)

    def broken(unit, settings):
        yield np.zeros((20, 32, 32, 1), np.uint8)
        raise VideoDecodeError("/v/020.png", "cannot decode image")

    monkeypatch.setattr(data, "unit_frames", lambda unit, settings, _: (broken(unit, settings), 25.0))
    *blocks, end = block_rows(VideoUnit("test", "v", "/v"), tiny_settings())
    assert len(blocks) == 3 and VideoEnd.decode(end["end"][0]) == VideoEnd("failed", 20, 12, 25.0, "/v/020.png",
                                                                            "cannot decode image")
    monkeypatch.setattr(data, "unit_frames", lambda *_: (iter([np.zeros((9, 16, 16, 1), np.uint8)]), 25.0))
    (end,) = block_rows(VideoUnit("test", "v", "/v"), tiny_settings())
    assert "frames of shape (16, 16, 1), expected (32, 32, 1)" in VideoEnd.decode(end["end"][0]).reason


def test_frame_blocks_move_about_one_copy_of_each_frame_where_clips_moved_one_per_covering_clip(tmp_path):
    settings = replace(tiny_settings(clip_len=16), height=64, width=64)
    rows = block_rows(mp4_unit(tmp_path / "v.mp4", 200), settings, batch_size=16)
    sent = sum(array.nbytes for row in rows for array in row.values())
    assert sent / 200 < 1.3 * 64 * 64, "stride 1: clip rows moved 16 copies of almost every frame"


def scoring_actor(settings, save_maps: bool, batch_size: int = 4, bf16: bool = False):
    torch.manual_seed(0)
    spec = get_preset("cpu-tiny").model
    net = spec.build().eval()
    return net, ScoringActor(spec, net.state_dict(), settings, "cpu", 1, save_maps, batch_size, bf16)


@pytest.mark.parametrize("save_maps", [False, True])
def test_the_scoring_actor_scores_the_clips_of_a_block_as_the_model_scores_them_in_batches(save_maps):
    settings = tiny_settings(stride=2)
    net, actor = scoring_actor(settings, save_maps)
    video = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 1), np.uint8)
    out = actor({"key": np.array(["test/v"]), "start": np.array([6]), "frames": video[None], "end": np.array([""])})
    starts, clips = zip(*sliding_clips([video], 8, 2), strict=True)
    assert out["start"].tolist() == [6 + s for s in starts] and set(out["end"]) == {""}
    with torch.inference_mode():
        x = clips_to_tensor(np.stack(clips))
        expected = torch.cat([model_clip_errors(net, x[i : i + 4]) for i in range(0, len(x), 4)]).double().numpy()
    np.testing.assert_array_equal(out["error"], expected)
    assert sorted(out) == sorted(["key", "start", "error", "end", *(["map"] if save_maps else [])])
    if save_maps:
        assert out["map"].shape == (len(clips), 32, 32) and out["map"].dtype == np.float16
    end = VideoEnd("done", 30, 12).encode()
    out = actor({"key": np.array(["test/v"]), "start": np.array([-1]), "frames": np.zeros((1, 0, 32, 32, 1), np.uint8),
                 "end": np.array([end])})
    assert out["start"].tolist() == [-1] and np.isnan(out["error"]).all() and out["end"].tolist() == [end]


def test_bf16_is_settled_before_it_is_recorded_kept_on_gpus_and_on_cpus_said_once_and_fp32(monkeypatch):
    import ray

    lines: list[str] = []
    monkeypatch.setattr("pipelines.common.ray_runtime.init_ray", lambda *_: pytest.fail("fp32 needs no cluster"))
    assert run_precision(config(), lines.append) == "fp32" and lines == []
    monkeypatch.setattr("pipelines.common.ray_runtime.init_ray", lambda *_: None)
    cluster = {"CPU": 2.0}
    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": cluster}])
    assert run_precision(config(precision="bf16"), lines.append) == "fp32"
    assert len(lines) == 1 and "GPUs only" in lines[0]
    cluster = {"CPU": 16.0, "GPU": 1.0}
    assert run_precision(config(precision="bf16"), lines.append) == "bf16" and len(lines) == 1
    with pytest.raises(ScoreSetupError, match="no GPU"):
        cluster = {"CPU": 2.0}
        run_precision(config(precision="bf16", use_gpu=True), lines.append)
    settings = tiny_settings()
    video = np.random.default_rng(1).integers(0, 256, (12, 32, 32, 1), np.uint8)
    row = {"key": np.array(["test/v"]), "start": np.array([0]), "frames": video[None], "end": np.array([""])}
    assert np.array_equal(scoring_actor(settings, False, bf16=True)[1](row)["error"],
                          scoring_actor(settings, False)[1](row)["error"]), "autocast is for CUDA devices only"


def test_settings_recorded_before_a_field_existed_read_as_its_default_and_precision_is_compared(tmp_path):
    settings = asdict(tiny_settings())
    recorded = {k: v for k, v in settings.items() if k != "precision"}  # a ledger from before --precision
    with Ledger(tmp_path) as ledger:
        ledger.open_section("m-v1", {}, recorded)
        section = ledger.open_section("m-v1", {}, settings, defaults=ScoringSettings.defaults())
        assert section.settings == settings and settings["precision"] == "fp32"
        ledger.open_section("gpu", {}, {**settings, "precision": "bf16"})
        with pytest.raises(ValueError, match="precision"):
            ledger.open_section("gpu", {}, settings, defaults=ScoringSettings.defaults())


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


def test_ledger_sections_resume_refuse_other_settings_and_restart_only_when_asked(tmp_path):
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m-v1", {"memae.model_name": "m"}, {"clip_len": 16})
        ledger.record(section, "test/01", entry("01", None))
        ledger.open_section("other", {}, {"clip_len": 8})
    with Ledger(tmp_path) as ledger:
        assert ledger.open_section("m-v1", {}, {"clip_len": 16}).videos == {"test/01": entry("01", None)}
        with pytest.raises(ValueError, match="other settings .* or --restart"):
            ledger.open_section("m-v1", {}, {"clip_len": 8})
        (ledger.folder("m-v1") / "test").mkdir(parents=True)
        lines: list[str] = []
        assert ledger.open_section("m-v1", {}, {"clip_len": 8}, restart=True, echo=lines.append).videos == {}
        assert lines == [f"--restart: discarded the 1 earlier results of model m-v1 in {tmp_path}"]
        assert not ledger.folder("m-v1").exists()
    with Ledger(tmp_path) as ledger:
        assert ledger.open_section("m-v1", {}, {"clip_len": 8}).videos == {}, "the restart is on disk"
        assert ledger.open_section("other", {}, {"clip_len": 8}).settings == {"clip_len": 8}, "others untouched"


def test_foreign_or_damaged_ledgers_are_refused_and_nothing_is_created_beside_them(tmp_path):
    (tmp_path / "ledger.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a memae-score-ledger/1"):
        Ledger(tmp_path)
    assert not (tmp_path / "ledger.sqlite").exists()
    (tmp_path / "ledger.json").write_text(json.dumps({"format": "memae-score-ledger/1", "models": {"m": {}}}))
    with pytest.raises(ValueError, match="damaged ledger"):
        Ledger(tmp_path)
    (tmp_path / "ledger.sqlite").write_bytes(b"not a database, but not empty either" * 100)
    with pytest.raises(ValueError, match="not a memae-score-ledger/2"):
        Ledger(tmp_path)


def stamp(size: int = 100, mtime_ns: int = 10**18, sha256: str | None = None) -> Stamp:
    return Stamp(size, mtime_ns, sha256)


def test_the_ledger_keeps_entries_stamps_and_calibration_across_runs(tmp_path):
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m-v1", {"memae.model_name": "m"}, {"clip_len": 16})
        ledger.keep_calibration(section, {"error_rule": "l1", "quantiles": {"0.5": 0.1}})
        scored = replace(entry("01", "scored/m-v1/test/01.parquet"), stamp=stamp(sha256="ab"))
        ledger.record(section, "test/01", scored)
        ledger.record(section, "test/02", entry("02", None))
        ledger.restamp(section, {"test/02": stamp(7)})
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m-v1", {}, {"clip_len": 16})
        assert section.model == {"memae.model_name": "m"}
        assert section.calibration == {"error_rule": "l1", "quantiles": {"0.5": 0.1}}
        assert section.videos == {"test/01": scored, "test/02": replace(entry("02", None), stamp=stamp(7))}
        assert not ledger.is_done(section, "test/01"), "its file is gone: not done"
        assert ledger.is_done(section, "test/02"), "too short for a clip: done without a file"
        (tmp_path / "scored/m-v1/test").mkdir(parents=True)
        (tmp_path / "scored/m-v1/test/01.parquet").touch()
        assert ledger.is_done(section, "test/01")


def legacy_ledger() -> dict:
    """A ledger.json as the scoring job wrote it before ledger.sqlite."""
    return {"format": "memae-score-ledger/1", "models": {"m-v1": {
        "model": {"memae.model_name": "m"}, "settings": {"clip_len": 16},
        "calibration": {"error_rule": "l1", "quantiles": {"0.5": 0.1}},
        "videos": {"test/01": {"video_id": "01", "split": "test", "source": "/data/01", "num_frames": 10,
                               "num_clips": 3, "fps": 25.0, "file": "scored/m-v1/test/01.parquet",
                               "scored_at": "2025-01-01T00:00:00+00:00"}}}}}


def test_an_earlier_ledger_json_is_migrated_once_with_a_message_and_kept(tmp_path):
    (tmp_path / "ledger.json").write_text(json.dumps(legacy_ledger()))
    before = (tmp_path / "ledger.json").read_bytes()
    lines: list[str] = []
    with Ledger(tmp_path, echo=lines.append) as ledger:
        section = ledger.open_section("m-v1", {}, {"clip_len": 16})
        with pytest.raises(ValueError, match="other settings"):
            ledger.open_section("m-v1", {}, {"clip_len": 8})
    assert len(lines) == 1 and "migrated ledger.json (1 models, 1 videos)" in lines[0] and "is kept" in lines[0]
    assert section.calibration == {"error_rule": "l1", "quantiles": {"0.5": 0.1}}
    assert section.videos == {"test/01": LedgerEntry("01", "test", "/data/01", 10, 3, 25.0,
                                                     "scored/m-v1/test/01.parquet", "2025-01-01T00:00:00+00:00")}
    assert (tmp_path / "ledger.json").read_bytes() == before
    lines.clear()
    with Ledger(tmp_path, echo=lines.append) as ledger:
        ledger.record(ledger.open_section("m-v1", {}, {"clip_len": 16}), "test/02", entry("02", None))
    assert lines == [], "migrated once"
    with Ledger(tmp_path) as ledger:
        assert sorted(ledger.open_section("m-v1", {}, {"clip_len": 16}).videos) == ["test/01", "test/02"]


def test_paths_built_from_archive_data_never_leave_the_output_folder(tmp_path):
    folder = tmp_path / "out" / "scored" / "m"
    assert video_path(folder, "test", "a/b c", ".parquet").parent == folder / "test"
    assert video_path(folder, "test", "..", ".parquet") == folder / "test" / "...parquet"
    assert video_path(folder, "../../escaped", "01", ".parquet").parent.parent == folder, "one safe component"
    with pytest.raises(UnsafePath, match="outside"):
        video_path(folder, "..", "01", ".parquet")
    (folder / "test").parent.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (folder / "test").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="outside"):
        video_path(folder, "test", "01", ".parquet")
    with pytest.raises(UnsafePath):
        Ledger(tmp_path / "out").folder("..")


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
    section = ledger.open_section("m", {}, {})
    errors = {"a": [np.nan, 0.5, 1.0, 3.0], "b": [2.0, 2.0, 1.5, np.nan]}
    for video_id, values in errors.items():
        path = video_path(ledger.folder("m"), "test", video_id, ".parquet")
        values = np.array(values)
        write_video_scores(path, video_id, "test", values, np.zeros(4), np.zeros(4, np.int8))
        ledger.record(section, f"test/{video_id}", entry(video_id, str(path.relative_to(tmp_path)), num_frames=4))
    ledger.record(section, "test/short", entry("short", None, num_frames=1))
    quantiles = {"quantiles": {"0.5": 1.0, "0.95": 2.0, "0.99": 2.0}}  # median 1, alarm and release lines 2
    calibrated = Threshold(quantiles, level=0.99, release_level=0.95, min_event_frames=1, source="test")
    outputs = rebuild_outputs(tmp_path, section, calibrated, settings, plot_videos=2, worst_frames=2)
    frames = pq.read_table(outputs.files["frame_scores"]).to_pandas()
    np.testing.assert_array_equal(frames.score_global, [np.nan, -0.5, 0.0, 2.0, 1.0, 1.0, 0.5, np.nan])
    assert frames.flagged.tolist() == [False, False, False, True, False, False, False, False]
    assert [s["scored"] for s in outputs.summaries] == [True, True, False]
    offline = Threshold(None, level=0.99, release_level=0.95, min_event_frames=1, source="none")
    rebuild_outputs(tmp_path, section, offline, settings, plot_videos=2, worst_frames=2)
    frames = pq.read_table(outputs.files["frame_scores"]).to_pandas()
    np.testing.assert_allclose(frames.score_global, [np.nan, 0.0, 0.2, 1.0, 0.6, 0.6, 0.4, np.nan])


def test_the_tables_of_a_runs_own_videos_are_the_whole_tables_rows_of_those_videos(tmp_path):
    ledger = Ledger(tmp_path)
    settings = ScoringSettings(clip_len=2, height=4, width=4, channels=1, stride=1, error_rule="l1", frame_rule="mean")
    section = ledger.open_section("m", {}, {})
    for video_id, values in {"a": [0.5, 3.0, 3.0, 0.5], "b": [0.5, 3.0, 0.5], "c": [1.0, 1.0]}.items():
        path = video_path(ledger.folder("m"), "test", video_id, ".parquet")
        n = len(values)
        write_video_scores(path, video_id, "test", np.array(values), np.zeros(n), np.zeros(n, np.int8))
        ledger.record(section, f"test/{video_id}", entry(video_id, str(path.relative_to(tmp_path)), num_frames=n))
    ledger.record(section, "test/short", entry("short", None, num_frames=1))
    quantiles = {"quantiles": {"0.5": 1.0, "0.95": 2.0, "0.99": 2.0}}
    calibrated = Threshold(quantiles, level=0.99, release_level=0.95, min_event_frames=1, source="test")
    outputs = rebuild_outputs(tmp_path, section, calibrated, settings, plot_videos=2, worst_frames=2,
                              run_keys=({"test/b", "test/short"}, tmp_path / "run"))

    assert set(outputs.run_files) == {"frame_scores", "video_summary", "segments"}
    assert all(path.parent == tmp_path / "run" for path in outputs.run_files.values())
    whole, own = (pq.read_table(files["frame_scores"]).to_pandas() for files in (outputs.files, outputs.run_files))
    assert sorted(whole.video_id.unique()) == ["a", "b", "c"]
    pd.testing.assert_frame_equal(own, whole[whole.video_id == "b"].reset_index(drop=True))
    summary = json.loads(outputs.run_files["video_summary"].read_text())
    assert [v["key"] for v in summary["videos"]] == ["test/b", "test/short"]
    assert pq.read_table(outputs.run_files["segments"]).column("video_id").to_pylist() == ["b"]
    assert len(pq.read_table(outputs.files["segments"])) == 2
    assert rebuild_outputs(tmp_path, section, calibrated, settings, plot_videos=2, worst_frames=2).run_files == {}


def test_a_rebuild_writes_the_frame_files_of_new_or_changed_videos_only_and_the_same_tables(tmp_path):
    ledger = Ledger(tmp_path)
    settings = ScoringSettings(clip_len=2, height=4, width=4, channels=1, stride=1, error_rule="l1", frame_rule="mean")
    section = ledger.open_section("m", {}, {})

    def score(video_id: str, values: list[float]) -> None:
        path = video_path(ledger.folder("m"), "test", video_id, ".parquet")
        n = len(values)
        write_video_scores(path, video_id, "test", np.array(values), np.zeros(n), np.zeros(n, np.int8))
        ledger.record(section, f"test/{video_id}", entry(video_id, str(path.relative_to(tmp_path)), num_frames=n))

    def rebuild(limit: Threshold):
        return rebuild_outputs(tmp_path, section, limit, settings, plot_videos=2, worst_frames=2)

    def threshold(alarm: float) -> Threshold:
        quantiles = {"quantiles": {"0.5": 1.0, "0.95": alarm, "0.99": alarm}}
        return Threshold(quantiles, level=0.99, release_level=0.95, min_event_frames=1, source="test")

    folder = tmp_path / "frame_scores.parquet"
    folder.write_bytes(b"a single table written before the folder layout")
    score("a", [0.5, 3.0, 3.0, 0.5])
    score("b", [0.5, 3.0, 0.5])
    assert rebuild(threshold(2.0)).rewritten == 2 and folder.is_dir()
    score("_c", [1.0, 4.0])  # a name Parquet readers would skip as a file name
    night = rebuild(threshold(2.0))
    assert night.rewritten == 1, "a night writes the frame file of its own video only"
    assert set(pq.read_table(folder).column("video_id").to_pylist()) == {"a", "b", "_c"}
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}
    tables = [pq.read_table(night.files[name]).to_pandas() for name in ("frame_scores", "segments")]
    summary = json.loads(night.files["video_summary"].read_text())
    for path in folder.rglob("*.parquet"):
        path.unlink()
    fresh = rebuild(threshold(2.0))
    assert fresh.rewritten == 3
    for name, table in zip(("frame_scores", "segments"), tables, strict=True):
        pd.testing.assert_frame_equal(pq.read_table(fresh.files[name]).to_pandas(), table)
    assert json.loads(fresh.files["video_summary"].read_text()) == summary
    assert fresh.worst == night.worst and [c["key"] for c in fresh.curves] == [c["key"] for c in night.curves]

    assert rebuild(threshold(3.5)).rewritten == 3, "another alarm line changes every video's flags"
    fresh.frame_files["test/a"].write_bytes(b"damaged")
    score("b", [0.5, 0.5, 0.5])  # scored again (its source changed): a new per-video file
    assert rebuild(threshold(3.5)).rewritten == 2
    del section.videos["test/_c"]
    after = rebuild(threshold(3.5))
    assert after.rewritten == 0 and sorted(pq.read_table(folder).column("video_id").unique().to_pylist()) == ["a", "b"]
    assert not fresh.frame_files["test/_c"].exists() and set(stamps) >= set(folder.rglob("*.parquet"))
    kept = dict(section.videos)
    section.videos.clear()
    rebuild(threshold(3.5))
    empty = pq.read_table(folder)
    assert len(empty) == 0 and empty.schema.names == list(FRAME_SCHEMA.names), "no videos, still the columns"
    section.videos.update(kept)
    rebuild(threshold(3.5))
    assert not (folder / "empty.parquet").exists() and len(pq.read_table(folder)) == 7


def test_an_archive_calibration_reads_a_bounded_sample_of_each_scored_video_per_camera(tmp_path, monkeypatch):
    from pipelines.score import threshold

    monkeypatch.setattr(threshold, "ARCHIVE_FRAMES_PER_VIDEO", 100)
    ledger = Ledger(tmp_path)
    settings = ScoringSettings(clip_len=2, height=4, width=4, channels=1, stride=1, error_rule="l1", frame_rule="mean")
    section = ledger.open_section("m", {}, {})
    rng = np.random.default_rng(0)
    levels = {"cam1/a.mp4": 1.0, "cam1/b.mp4": 1.0, "cam2/c.mp4": 5.0}
    for video_id, level in levels.items():
        path = video_path(ledger.folder("m"), "train", video_id, ".parquet")
        errors = np.r_[np.nan, rng.normal(level, 0.1, 1000)]
        write_video_scores(path, video_id, "train", errors, np.zeros(1001), np.full(1001, -1, np.int8))
        ledger.record(section, f"train/{video_id}", entry(video_id, str(path.relative_to(tmp_path)), num_frames=1001))
    ledger.record(section, "train/short.mp4", entry("short.mp4", None, num_frames=1))

    calibration = threshold.archive_calibration(tmp_path, section, settings)
    assert calibration["num_values"] == 300 and calibration["from_archive"] and calibration["unit"] == "frame"
    assert set(calibration["cameras"]) == {"cam1", "cam2"}
    assert calibration["cameras"]["cam1"]["quantiles"]["0.5"] == pytest.approx(1.0, abs=0.05)
    assert calibration["cameras"]["cam2"]["quantiles"]["0.5"] == pytest.approx(5.0, abs=0.05)
    assert calibration["unseen_video_exceedance"]["0.99"] > 0.3, "cam2 is far above the line the others set"
    assert calibration["later_video_exceedance"]["0.99"] > 0.9, "scored last (by key, at one time), cam2 is newest"
    monkeypatch.setattr(threshold, "ARCHIVE_VIDEOS", 2)
    section.videos["train/cam2/c.mp4"] = replace(section.videos["train/cam2/c.mp4"], scored_at="2020-01-01T00:00:00")
    newest = threshold.archive_calibration(tmp_path, section, settings)
    assert newest["num_values"] == 200 and newest["source"] == "2 videos scored into --out"
    assert set(newest["cameras"]) == {"cam1"}, "the video scored longest ago (cam2/c) is left out"
    del section.videos["train/cam1/b.mp4"], section.videos["train/cam2/c.mp4"]
    with pytest.raises(ValueError, match="has scored 1 videos with scored frames"):
        threshold.archive_calibration(tmp_path, section, settings)


def test_new_alarms_are_those_of_this_runs_videos_highest_peak_first_and_bounded(monkeypatch):
    from pipelines.score import report

    def summary(video_id: str, peaks: list[float]) -> dict:
        return {"key": f"test/{video_id}", "video_id": video_id, "split": "test", "source": f"/a/{video_id}",
                "scored": True, "segments": [{"start_frame": 10 * i, "end_frame": 10 * i + 3, "peak_value": peak}
                                             for i, peak in enumerate(peaks)]}

    summaries = [summary("old", [9.0]), summary("a", [2.0, 5.0]), summary("b", [3.0]),
                 {"key": "test/short", "video_id": "short", "split": "test", "source": "/a/short", "scored": False}]
    flagged = {"old": 90, "a": 8, "b": 4}
    for s in summaries[:3]:
        s.update(num_frames=100, frames_flagged=flagged[s["video_id"]])
    calibrated = Threshold({"quantiles": {"0.5": 1.0, "0.99": 2.0}}, 0.99, 0.95, 1, "test")
    found = report.new_alarms(summaries, {"test/a", "test/b", "test/short"}, calibrated)
    assert found["count"] == 3 and found["videos"] == 3
    assert found["share"]["frames_scored"] == 200 and found["share"]["share"] == pytest.approx(0.06), "not old's"
    assert [(a["video_id"], a["peak_value"]) for a in found["listed"]] == [("a", 5.0), ("b", 3.0), ("a", 2.0)]
    assert found["listed"][0]["source"] == "/a/a" and found["listed"][0]["start_frame"] == 10
    monkeypatch.setattr(report, "REPORTED_ALARMS", 1)
    bounded = report.new_alarms(summaries, {"test/a", "test/b"}, calibrated)
    assert bounded["count"] == 3 and [a["peak_value"] for a in bounded["listed"]] == [5.0]


def test_the_alarm_share_counts_flagged_frames_of_scored_videos_against_the_nominal_rate(tmp_path):
    from pipelines.score.report import alarm_share, alarm_share_line

    ledger = Ledger(tmp_path)
    settings = ScoringSettings(clip_len=2, height=4, width=4, channels=1, stride=1, error_rule="l1", frame_rule="mean")
    section = ledger.open_section("m", {}, {})
    errors = {"a": [0.5, 3.0, 3.0, 0.5], "b": [0.5, 0.5, 0.5, 0.5, 0.5, 3.0], "cam2/c": [0.5, 0.5]}
    for video_id, values in errors.items():
        path = video_path(ledger.folder("m"), "test", video_id, ".parquet")
        n = len(values)
        write_video_scores(path, video_id, "test", np.array(values), np.zeros(n), np.full(n, -1, np.int8))
        ledger.record(section, f"test/{video_id}", entry(video_id, str(path.relative_to(tmp_path)), num_frames=n))
    ledger.record(section, "test/short", entry("short", None, num_frames=1))
    quantiles = {"quantiles": {"0.5": 1.0, "0.95": 2.0, "0.99": 2.0}}
    calibrated = Threshold(quantiles, level=0.99, release_level=0.95, min_event_frames=1, source="test")
    outputs = rebuild_outputs(tmp_path, section, calibrated, settings, plot_videos=2, worst_frames=2)
    share = alarm_share(outputs.summaries, calibrated)
    assert share["frames_flagged"] == 3 and share["frames_scored"] == 12 and share["videos_with_alarms"] == 2
    assert share["share"] == pytest.approx(0.25) and share["nominal_false_alarm_rate"] == pytest.approx(0.01)
    cameras = [(c["camera"], c["frames_flagged"], c["frames_scored"]) for c in share["cameras"]]
    assert cameras == [("(top folder)", 3, 10), ("cam2", 0, 2)]
    line = alarm_share_line(share)
    assert "25.0% of the 12 frames" in line and "highest: (top folder) 30.0%, cam2 0.0%" in line
    assert "about 1.0%" in line and "pooled" not in line and "own_line" not in share["cameras"][0]
    cam2_only = Threshold({**quantiles, "cameras": {"cam2": quantiles}}, 0.99, 0.95, 1, "test")
    share = alarm_share(outputs.summaries, cam2_only)
    assert [(c["camera"], c["own_line"]) for c in share["cameras"]] == [("(top folder)", False), ("cam2", True)]
    assert "highest: (top folder) 30.0% (pooled line), cam2 0.0%;" in alarm_share_line(share)
    uncalibrated = Threshold(None, level=0.99, release_level=0.95, min_event_frames=1, source="none")
    assert alarm_share(outputs.summaries, uncalibrated) is None


def test_map_spool_places_maps_at_their_frames_in_any_order(tmp_path):
    spool = MapSpool(tmp_path / "v.maps.npy")
    spool.add(np.array([5, 3]), np.full((2, 2, 2), [[[5.0]], [[3.0]]]))
    spool.add(np.array([4]), np.full((1, 2, 2), 4.0))
    spool.finish(7)
    maps = np.load(tmp_path / "v.maps.npy")
    assert maps.shape == (7, 2, 2) and maps.dtype == np.float16
    assert np.isnan(maps[[0, 1, 2, 6]]).all() and maps[3:6, 0, 0].tolist() == [3.0, 4.0, 5.0]
    assert list(tmp_path.iterdir()) == [tmp_path / "v.maps.npy"]



def test_incremental_runs_score_new_and_changed_sources_defer_fresh_ones_and_skip_the_rest(tmp_path):
    now = 2_000_000_000.0
    units = {}
    for name in ("same", "grown", "new", "fresh", "future", "migrated"):
        (tmp_path / f"{name}.mp4").write_bytes(b"x" * 10)
        os.utime(tmp_path / f"{name}.mp4", (now - 3600, now - 3600))
        units[name] = VideoUnit("train", name, str(tmp_path / f"{name}.mp4"))
    os.utime(tmp_path / "fresh.mp4", (now - 60, now - 60))  # still being written, perhaps
    os.utime(tmp_path / "future.mp4", (now + 7200, now + 7200))  # copied from a recorder whose clock is ahead
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m", {}, {})
        for name in ("same", "grown", "migrated"):
            recorded = replace(entry(name, None), stamp=None if name == "migrated" else source_stamp(units[name]))
            ledger.record(section, f"train/{name}", recorded)
        (tmp_path / "grown.mp4").write_bytes(b"x" * 20)
        os.utime(tmp_path / "grown.mp4", (now - 1800, now - 1800))
        chosen = select_videos(units.values(), ledger, section, incremental=True, settle_s=300, with_hash=False,
                               now=now)
        assert [u.video_id for u in chosen.todo] == ["grown", "new"] and chosen.changed == ["train/grown"]
        assert chosen.skipped == ["train/same", "train/migrated"]
        assert [(d.status, d.video_id) for d in chosen.deferred] == [("deferred", "fresh"), ("deferred", "future")]
        assert "modified 60s ago (less than --settle-s 300)" in chosen.deferred[0].reason
        assert "modification time is 7200s in the future" in chosen.deferred[1].reason
        assert chosen.restamped == {"train/migrated": source_stamp(units["migrated"])}, "adopts the current stamp"
        assert chosen.stamps["train/grown"] == Stamp(20, int((now - 1800) * 1e9))
        everything = select_videos(units.values(), ledger, section, incremental=False, settle_s=300,
                                   with_hash=False, now=now)
        assert len(everything.todo) == 6 and not everything.deferred and not everything.skipped


def test_since_leaves_alone_only_videos_never_scored_whose_sources_are_older(tmp_path):
    now = 2_000_000_000.0
    units = {}
    for name, age_days in (("old", 10), ("old-scored", 10), ("recent", 1)):
        (tmp_path / f"{name}.mp4").write_bytes(b"x" * 10)
        os.utime(tmp_path / f"{name}.mp4", (now - age_days * 86400, now - age_days * 86400))
        units[name] = VideoUnit("train", name, str(tmp_path / f"{name}.mp4"))
    not_before = since_time("7d", now)
    assert not_before == now - 7 * 86400
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m", {}, {})
        ledger.record(section, "train/old-scored", replace(entry("old-scored", None),
                                                           stamp=source_stamp(units["old-scored"])))
        chosen = select_videos(units.values(), ledger, section, True, 300, False, now, not_before)
        assert [u.video_id for u in chosen.todo] == ["recent"]
        assert chosen.older == ["train/old"] and chosen.skipped == ["train/old-scored"]
        everything = select_videos(units.values(), ledger, section, False, 300, False, now, not_before)
        assert [u.video_id for u in everything.todo] == ["recent"]
        assert everything.older == ["train/old", "train/old-scored"], "without --incremental: nothing counts as scored"
        assert len(select_videos(units.values(), ledger, section, True, 300, False, now).todo) == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("36h", 1_000_000.0 - 36 * 3600), ("90m", 1_000_000.0 - 5400), ("1.5d", 1_000_000.0 - 129_600),
    ("2026-12-01T06:00+02:00", 1_796_097_600.0), ("2026-12-01T04:00Z", 1_796_097_600.0),
])
def test_since_takes_an_age_or_a_date(text, expected):
    assert since_time(text, now=1_000_000.0) == expected


def test_since_from_a_yaml_file_may_be_a_date(tmp_path):
    import yaml

    from pipelines.common.config import config_from_mapping

    values = yaml.safe_load("since: 2026-12-01\n")
    assert isinstance(values["since"], datetime.date)
    config = config_from_mapping(ScoreConfig, values)
    assert since_time(config.since, now=0.0) == since_time("2026-12-01", now=0.0)


def test_a_malformed_since_is_refused_before_anything_starts():
    config = ScoreConfig(model="m.pt", out="out", dataset="videos", root="archive", since="last week")
    with pytest.raises(ValueError, match="--since must be a date or time .* not 'last week'"):
        config.check()


def test_with_hash_the_content_decides(tmp_path):
    now = 2_000_000_000.0
    path = tmp_path / "v.mp4"
    path.write_bytes(b"a" * 10)
    os.utime(path, (now - 3600, now - 3600))
    unit = VideoUnit("train", "v", str(path))
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m", {}, {})
        (first,) = select_videos([unit], ledger, section, True, 300, with_hash=True, now=now).todo
        hashed = select_videos([unit], ledger, section, True, 300, with_hash=True, now=now).stamps["train/v"]
        assert hashed.sha256 == hashlib.sha256(b"a" * 10).hexdigest()
        ledger.record(section, "train/v", replace(entry("v", None), stamp=hashed))
        os.utime(path, (now - 1000, now - 1000))  # touched: same content
        chosen = select_videos([unit], ledger, section, True, 300, with_hash=True, now=now)
        assert chosen.skipped == ["train/v"] and chosen.restamped["train/v"].mtime_ns == int((now - 1000) * 1e9)
        assert select_videos([unit], ledger, section, True, 300, with_hash=False, now=now).changed == ["train/v"]
        path.write_bytes(b"b" * 10)  # rewritten with the same size and time
        os.utime(path, (now - 3600, now - 3600))
        assert select_videos([unit], ledger, section, True, 300, with_hash=False, now=now).skipped == ["train/v"]
        assert select_videos([unit], ledger, section, True, 300, with_hash=True, now=now).changed == ["train/v"]


def test_a_folder_of_frames_is_stamped_and_hashed_over_all_its_frames(tmp_path):
    from memae.datasets import VideoRecord

    folder = tmp_path / "01"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"p" * 5)
    frames = tuple(sorted(folder.iterdir()))
    unit = VideoUnit("test", "01", str(folder), record=VideoRecord("01", "test", folder, frames))
    before = source_stamp(unit)
    assert before.size == 15
    (folder / "2.png").write_bytes(b"p" * 6)
    assert source_stamp(unit).size == 16
    assert content_hash(unit) != content_hash(replace(unit, record=VideoRecord("01", "test", folder, frames[:2])))


def test_videos_recorded_under_former_ids_keep_their_results_under_the_new_ones(tmp_path):
    units = [VideoUnit("train", "cam/0001.mp4", "/srv/cam/0001.mp4"), VideoUnit("train", "cam/0002.mp4", "/srv/x")]
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m", {}, {})
        old = LedgerEntry("cam__0001", "train", "/srv/cam/0001.mp4", 10, 3, 25.0, "scored/m/train/cam__0001.parquet",
                          "2025-01-01T00:00:00+00:00")
        ledger.record(section, "train/cam__0001", old)
        ledger.record(section, "train/gone", replace(old, video_id="gone", source="/srv/gone.mp4"))
        moves = renamed_videos(units, section)
        assert moves == {"train/cam__0001": units[0]}
        ledger.rekey(section, {k: (u.key, u.video_id) for k, u in moves.items()})
    with Ledger(tmp_path) as ledger:
        section = ledger.open_section("m", {}, {})
        assert sorted(section.videos) == ["train/cam/0001.mp4", "train/gone"]
        assert section.videos["train/cam/0001.mp4"] == replace(old, video_id="cam/0001.mp4"), "same file, new id"
