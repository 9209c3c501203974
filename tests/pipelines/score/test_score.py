"""Batch scoring end to end on tiny archives: a model trained on normal synthetic footage must find objects planted in
known frames, the written tables must agree with scikit-learn and with the paper's protocol in memae.evaluation,
incremental runs must append without duplicates and survive a real kill, bad files must be reported and skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from experiments.synthetic import SynthConfig, render_video, write_video
from memae.calibration import calibrate_errors
from memae.checkpoint import save_checkpoint
from memae.datasets import Preprocess, decode, open_dataset
from memae.evaluation import VideoScorer, model_clip_errors, video_metrics
from memae.models import AutoEncoderCov3DMem
from memae.presets import get_preset
from memae.training import train_one_epoch
from memae.transforms import clips_to_tensor
from pipelines.ingest.clips import iter_clips
from pipelines.ingest.corpus import Corpus
from pipelines.ingest.run import IngestConfig, ingest
from pipelines.registry.pyfunc import register_checkpoint
from pipelines.registry.source import load_model_source, scoring_settings
from pipelines.score.config import ScoreConfig
from pipelines.score.run import score

REPO = Path(__file__).resolve().parents[3]
PLANTED = {"01": (10, 20), "02": (22, 32), "03": None}  # test video -> planted frames [start, stop)
FRAMES = 40
CLIP = get_preset("cpu-tiny")  # 8-frame clips of 32x32 grey


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


score_main = load_job("score").main


def write_frames(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")


def planted(frames: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """A high-contrast checkerboard, unlike anything in the training footage, in frames span[0]..span[1]-1."""
    frames = frames.copy()
    checker = (np.indices((12, 12)).sum(0) // 3 % 2 * 255).astype(np.uint8)
    frames[span[0] : span[1], 14:26, 24:36, :] = checker[None, :, :, None]
    return frames


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Frame-folder layout: 3 normal training videos; 3 unseen normal test videos, two with a planted object."""
    root = tmp_path_factory.mktemp("planted")
    cfg = SynthConfig(height=48, width=64, frames=FRAMES, seed=11)
    for i in range(3):
        write_frames(root / "training" / "frames" / f"{i + 1:02d}", render_video(cfg, "train", i).frames)
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    for k, (video_id, span) in enumerate(PLANTED.items()):
        frames = render_video(cfg, "train", 3 + k).frames
        labels = np.zeros(FRAMES, np.int8)
        if span:
            frames = planted(frames, span)
            labels[span[0] : span[1]] = 1
        write_frames(root / "testing" / "frames" / video_id, frames)
        np.save(root / "testing" / "test_frame_mask" / f"{video_id}.npy", labels)
    return root


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
        yield store


@pytest.fixture(scope="module")
def model(corpus, tmp_path_factory, mlflow_store) -> dict:
    """cpu-tiny trained briefly on the normal training videos: a checkpoint file, and the same model registered with
    its preprocessing and calibration as `planted@champion`; both validated (and so scored) with the centre rule."""
    torch.manual_seed(0)
    prep = Preprocess(CLIP.frame_size, "gray")
    videos = [decode(r, prep) for r in open_dataset("frames", corpus, "train")]
    clips = np.stack([v[s : s + CLIP.clip_len] for v in videos for s in range(0, len(v) - CLIP.clip_len + 1, 2)])
    spec = CLIP.model
    net = spec.build()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(len(clips))
        train_one_epoch(net, optimizer, (clips_to_tensor(clips[order[i : i + 8]]) for i in range(0, len(order), 8)))
    net.eval()
    folder = tmp_path_factory.mktemp("model")
    checkpoint = folder / "tiny.pt"
    save_checkpoint(checkpoint, net, spec, config={"preset": CLIP.name, "error_rule": "l1", "frame_rule": "centre"})
    calibration = calibrate_errors(model_clip_errors(net, clips_to_tensor(clips[::4])).numpy(), "l1")
    preprocessing = {"clip_len": CLIP.clip_len, "height": CLIP.height, "width": CLIP.width, "channels": 1,
                     "pixel_range": [-1.0, 1.0], "error_rule": "l1", "frame_rule": "centre", "ingest": {}}
    from pipelines.common.tracking import configure_mlflow

    configure_mlflow(experiment="memae-train")
    with mlflow.start_run():
        version = register_checkpoint(checkpoint, "planted", preprocessing, calibration, alias="champion")
    return {"checkpoint": checkpoint, "net": net, "version": version, "calibration": calibration}


@pytest.fixture(scope="module")
def registry_run(corpus, model, tmp_path_factory, ray_session):
    """The registered model over the raw archive, every frame scored by the mean of its clips (the flag overrides
    the model's centre rule), with error maps."""
    out = tmp_path_factory.mktemp("registry-run")
    lines: list[str] = []
    config = ScoreConfig(model="models:/planted@champion", dataset="auto", root=str(corpus), out=str(out),
                         frame_rule="mean", save_maps=True, worst_frames=4)
    return score(config, echo=lines.append), out, lines


def read_scores(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "frame_scores.parquet")


def test_scores_peak_on_the_planted_frames_and_auc_matches_sklearn(registry_run, model):
    result, out, lines = registry_run
    assert result.ok and sorted(result.scored) == ["test/01", "test/02", "test/03"]
    frames = read_scores(out)
    assert {"video_id", "frame", "score", "error", "normality", "score_global", "label", "flagged"} <= set(frames)
    assert not frames.duplicated(["video_id", "frame"]).any()
    for video_id, span in PLANTED.items():
        video = frames[frames.video_id == video_id].sort_values("frame")
        assert video.frame.tolist() == list(range(FRAMES))
        assert video.score.notna().all(), "the mean rule scores every frame"
        expected = np.zeros(FRAMES, np.int8)
        if span:
            expected[span[0] : span[1]] = 1
            peak = int(video.frame.iloc[int(np.argmax(video.score.to_numpy()))])
            assert span[0] <= peak < span[1], f"video {video_id} peaks at frame {peak}, planted {span}"
        assert video.label.tolist() == expected.tolist()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auc_micro"] == pytest.approx(roc_auc_score(frames.label, frames.score), abs=1e-12)
    assert metrics["global"]["auc_micro"] == pytest.approx(roc_auc_score(frames.label, frames.error), abs=1e-12)
    assert metrics["auc_micro"] > 0.8 and metrics["frame_rule"] == "mean"
    alarm = metrics["threshold"]
    assert alarm["source"].startswith("model calibration") and alarm["nominal_false_alarm_rate"] == pytest.approx(0.01)
    normal = frames.label == 0
    assert alarm["false_alarm_rate"] == pytest.approx(frames.flagged[normal].mean())  # measured on the normal frames
    assert alarm["flag_recall"] == pytest.approx(frames.flagged[~normal].mean())
    share = json.loads((out / "score_report.json").read_text())["alarms"]  # what an unlabelled archive gets
    assert share["share"] == pytest.approx(frames.flagged.mean()) and share["frames_scored"] == len(frames)
    maps = np.load(next((out / "scored").rglob("01.maps.npy")))
    assert maps.shape == (FRAMES, CLIP.height, CLIP.width) and np.isfinite(maps[4 : FRAMES - 3]).all()
    assert {p.name for p in (out / "plots").iterdir()} == {"score_curves.png", "roc.png", "worst_frames.png"}


def test_segments_flag_the_planted_event_with_the_stored_calibration(registry_run, model):
    result, out, _ = registry_run
    strict = json.loads((out / "video_summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    summary = {v["video_id"]: v for v in strict["videos"]}
    assert summary["01"]["segments"][0]["start_s"] is None, "the frame folders record no frame rate"
    assert summary["01"]["max_error"] > model["calibration"]["quantiles"]["0.99"]
    segments = pd.read_parquet(out / "segments.parquet")
    first = segments[segments.video_id == "01"]
    assert ((first.start_frame < PLANTED["01"][1]) & (first.end_frame >= PLANTED["01"][0])).any()
    assert (first.peak_frame.between(*PLANTED["01"])).any()


def test_one_mlflow_run_with_model_tags_metrics_plots_and_outputs(registry_run, model):
    result, out, _ = registry_run
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.tags["memae.model_name"] == "planted"
    assert run.data.tags["memae.model_version"] == model["version"]
    assert run.data.tags["memae.dataset"] == "frames"
    assert run.data.metrics["auc_micro"] == pytest.approx(json.loads((out / "metrics.json").read_text())["auc_micro"])
    assert run.data.params["frame_rule"] == "mean"
    client = mlflow.tracking.MlflowClient()
    assert {a.path for a in client.list_artifacts(result.mlflow_run_id, "plots")} >= {"plots/roc.png",
                                                                                      "plots/score_curves.png"}
    outputs = {a.path for a in client.list_artifacts(result.mlflow_run_id, "outputs")}
    assert {"outputs/frame_scores.parquet", "outputs/metrics.json", "outputs/video_summary.json"} <= outputs


def test_the_model_frame_rule_is_used_unless_a_flag_gives_another(model):
    source = load_model_source("models:/planted@champion")
    assert source.frame_rule == "centre"
    settings = scoring_settings(source, ScoreConfig(model="m", out="o", dataset="auto", root="r"), None)
    assert settings.frame_rule == "centre"
    flagged = ScoreConfig(model="m", out="o", dataset="auto", root="r", frame_rule="mean")
    assert scoring_settings(source, flagged, None).frame_rule == "mean"


def test_shards_with_the_centre_rule_reproduce_the_paper_protocol_exactly(corpus, model, tmp_path, ray_session):
    shards = tmp_path / "shards"
    assert ingest(IngestConfig(root=corpus, out=shards, dataset="frames", size=CLIP.frame_size),
                  echo=lambda _: None).ok
    out = tmp_path / "out"
    lines: list[str] = []  # no --frame-rule: the checkpoint's training config says centre
    result = score(ScoreConfig(model=str(model["checkpoint"]), shards=str(shards), out=str(out), mlflow=False),
                   echo=lines.append)
    assert result.ok
    assert any("centre rule (the model's)" in line for line in lines)
    frames = read_scores(out)
    half = CLIP.clip_len // 2
    for _, video in frames.groupby("video_id"):
        unscored = video.frame[video.score.isna()].tolist()
        assert unscored == [*range(half), *range(FRAMES - half + 1, FRAMES)]
    # The same numbers through the library path that training validates with.
    scorer = VideoScorer(CLIP.clip_len, "centre")
    for clip in iter_clips(shards, CLIP.clip_len, 1, split="test"):
        errors = model_clip_errors(model["net"], clips_to_tensor(clip["clip"][None]))
        scorer.add([clip["video_id"]], [clip["start"]], errors)
    num_frames, labels = Corpus.open(shards).labelled_videos("test")
    expected = video_metrics(scorer.frame_errors(num_frames), labels)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auc_micro"] == pytest.approx(expected.auc_micro, abs=1e-9)
    assert metrics["auc_macro"] == pytest.approx(expected.auc_macro, abs=1e-9)
    assert metrics["threshold"]["source"].startswith("calibrated on"), "no stored calibration: computed from train"
    scored = frames.dropna(subset=["score"])
    assert metrics["auc_micro"] == pytest.approx(roc_auc_score(scored.label, scored.score), abs=1e-12)


def test_incremental_runs_skip_scored_videos_append_new_ones_and_never_duplicate(corpus, registry_run, tmp_path,
                                                                                 ray_session):
    archive = tmp_path / "archive"
    shutil.copytree(corpus, archive)
    held_back = archive.parent / "held-back"
    shutil.move(archive / "testing" / "frames" / "03", held_back)
    (archive / "testing" / "test_frame_mask" / "03.npy").rename(tmp_path / "03.npy")
    out = tmp_path / "out"
    args = ["--model", "models:/planted@champion", "--dataset", "frames", "--root", str(archive), "--out", str(out),
            "--incremental", "--settle-s", "0", "--frame-rule", "mean"]
    assert score_main([*args, "--mlflow", "false"]) == 0
    assert sorted(read_scores(out).video_id.unique()) == ["01", "02"]

    assert score_main([*args, "--mlflow", "false"]) == 0  # nothing new: nothing scored, outputs unchanged
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 0 and report["skipped_already_scored"] == 2

    shutil.move(held_back, archive / "testing" / "frames" / "03")
    (tmp_path / "03.npy").rename(archive / "testing" / "test_frame_mask" / "03.npy")
    assert score_main([*args, "--run-name", "night-3"]) == 0
    report = json.loads((out / "score_report.json").read_text())
    assert report["scored"] == 1 and report["skipped_already_scored"] == 2
    frames = read_scores(out)
    assert not frames.duplicated(["video_id", "frame"]).any()
    _, reference, _ = registry_run  # the same model and settings in one go
    pd.testing.assert_frame_equal(frames, read_scores(reference))

    # The night's MLflow run holds the tables of the one video it scored, not the whole history again.
    run = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`mlflow.runName` = 'night-3'",
                             output_format="list")[0]
    client = mlflow.tracking.MlflowClient()
    logged = pd.read_parquet(client.download_artifacts(run.info.run_id, "outputs/frame_scores.parquet"))
    pd.testing.assert_frame_equal(logged.reset_index(drop=True),
                                  frames[frames.video_id == "03"].reset_index(drop=True))
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "outputs/video_summary.json")).read_text())
    assert [v["video_id"] for v in summary["videos"]] == ["03"]


def test_a_changed_setting_is_refused_in_incremental_mode(corpus, registry_run, ray_session, capsys):
    _, out, _ = registry_run
    args = ["--model", "models:/planted@champion", "--dataset", "frames", "--root", str(corpus), "--out", str(out),
            "--incremental", "--mlflow", "false"]
    assert score_main([*args, "--frame-rule", "centre"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert score_main(args) == 2, "without --frame-rule the model's centre rule differs from the run's mean"
    assert "'frame_rule': ('mean', 'centre')" in capsys.readouterr().err


@pytest.fixture(scope="module")
def official_pt(tmp_path_factory) -> Path:
    """An official-format MemAE state_dict (DataParallel `module.` keys), full width, small memory."""
    torch.manual_seed(1)
    net = AutoEncoderCov3DMem(chnum_in=1, mem_dim=100)
    path = tmp_path_factory.mktemp("official") / "memae_official.pt"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    return path


def test_an_official_checkpoint_scores_a_labelled_archive(corpus, official_pt, tmp_path, ray_session):
    out = tmp_path / "out"
    args = ["--model", str(official_pt), "--dataset", "frames", "--root", str(corpus), "--out", str(out),
            "--clip-len", "16", "--height", "32", "--width", "32", "--mlflow", "false"]
    assert score_main(args) == 0
    frames = read_scores(out)
    assert len(frames) == 3 * FRAMES
    for _, video in frames.groupby("video_id"):  # the paper's centre rule: the first 8 and last 7 frames unscored
        assert video.frame[video.score.notna()].tolist() == list(range(8, FRAMES - 7))
    assert "auc_micro" in json.loads((out / "metrics.json").read_text())
    ((model, settings),) = query(out, "SELECT model, settings FROM models")
    assert json.loads(model)["memae.model_kind"] == "official" and json.loads(settings)["clip_len"] == 16
    assert json.loads(settings)["frame_rule"] == "centre"


def write_video_archive(root: Path, count: int, frames: int) -> None:
    """A folder of unlabelled .mp4 files, as a camera archive looks."""
    cfg = SynthConfig(height=48, width=64, frames=frames, seed=3)
    for i in range(count):
        write_video(root / "cam" / f"clip{i:02d}.mp4", render_video(cfg, "train", i).frames, cfg.fps)


def test_a_corrupt_video_is_reported_and_the_rest_scored(model, tmp_path, ray_session, capsys):
    archive = tmp_path / "archive"
    write_video_archive(archive, 3, 24)
    bad = archive / "cam" / "clip01.mp4"
    bad.write_bytes(bad.read_bytes()[:300])  # cut short: no usable stream
    (archive / "cam" / "notes.txt").write_text("camera moved on Monday")  # part of no video: listed, not failed
    out = tmp_path / "out"
    args = ["--model", str(model["checkpoint"]), "--dataset", "videos", "--root", str(archive), "--out", str(out),
            "--mlflow", "false"]
    assert score_main(args) == 1
    report = json.loads((out / "score_report.json").read_text())
    assert [(f["video_id"], f["file"]) for f in report["failed"]] == [("cam/clip01.mp4", str(bad))]
    assert report["scored"] == 2 and not report["ok"]
    assert [(f["file"], f["reason"]) for f in report["skipped_files"]] == [
        (str(archive / "cam" / "notes.txt"), "not a video file (.txt)")]
    frames = read_scores(out)
    assert sorted(frames.video_id.unique()) == ["cam/clip00.mp4", "cam/clip02.mp4"]
    assert (frames.label == -1).all() and frames.time_s.notna().all()
    assert not (out / "metrics.json").exists(), "unlabelled: no AUC"
    assert "FAILED  train/cam/clip01.mp4" in capsys.readouterr().out


def test_a_video_that_breaks_mid_stream_is_reported_and_not_half_scored(corpus, model, tmp_path, ray_session):
    archive = tmp_path / "archive"
    shutil.copytree(corpus, archive)
    broken = archive / "testing" / "frames" / "02" / "030.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # its first 30 frames decode, then this one does not
    out = tmp_path / "out"
    result = score(ScoreConfig(model=str(model["checkpoint"]), dataset="frames", root=str(archive), out=str(out),
                               mlflow=False), echo=lambda _: None)
    assert not result.ok and sorted(result.scored) == ["test/01", "test/03"]
    (failure,) = result.failed
    assert failure.status == "failed" and failure.file == str(broken) and "cannot decode image" in failure.reason
    assert sorted(read_scores(out).video_id.unique()) == ["01", "03"]
    assert query(out, "SELECT key FROM videos ORDER BY key") == [("test/01",), ("test/03",)]


def query(out: Path, sql: str) -> list[tuple]:
    """Rows of the ledger, read as any other process may read it while a job writes it; [] before it exists."""
    if not (out / "ledger.sqlite").is_file():
        return []
    with closing(sqlite3.connect(out / "ledger.sqlite", timeout=30)) as db:
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # its tables are not created yet
            return []


def test_help_names_the_interface():
    result = subprocess.run([sys.executable, str(REPO / "jobs" / "score.py"), "--help"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0
    for flag in ("--model", "--dataset", "--root", "--shards", "--out", "--incremental", "--frame-rule",
                 "--save-maps", "--batch-size", "--concurrency", "--verbose"):
        assert flag in result.stdout
