"""The review page's pieces on synthetic outputs, without scoring anything: its size bounds on a 200-video archive,
cards for videos that cannot be read again, cameras, animations under their byte budget, frame plans."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from memae.checkpoint import save_checkpoint
from memae.datasets.records import VideoRecord
from memae.presets import get_preset
from pipelines.registry.source import ScoringSettings, load_model_source
from pipelines.score import review
from pipelines.score.config import ScoreConfig
from pipelines.score.data import Listing, VideoUnit
from pipelines.score.outputs import FRAME_SCHEMA, FRAME_SCORES, Outputs
from pipelines.score.previews import PREVIEW_FRAMES, Preview, VideoRequest, encode_animation, frame_plan
from pipelines.score.review import camera_name, review_page, write_review
from pipelines.score.review_page import without_earlier_links
from pipelines.score.threshold import Threshold

FRAMES, FPS = 100, 10.0
LIMIT = Threshold({"quantiles": {"0.5": 0.0, "0.95": 1.0, "0.99": 1.0}}, level=0.99, release_level=0.95,
                  min_event_frames=1, source="model calibration")
SETTINGS = ScoringSettings(clip_len=8, height=32, width=32, channels=1, stride=1, error_rule="l1", frame_rule="mean")


def synthetic_outputs(out: Path, root: Path, videos: int) -> tuple[Outputs, Listing]:
    """Frame files and summaries of `videos` videos on 4 cameras, two alarms each, every peak different; the listing
    points at video files that do not exist."""
    rng = np.random.default_rng(0)
    summaries, units, frame_files = [], [], {}
    for i in range(videos):
        video_id = f"cam{i % 4}/{i:03d}.mp4"
        errors = rng.uniform(0.1, 0.5, FRAMES)
        segments = []
        for start, length in ((20, 6), (60, 12)):
            peak = start + length // 2
            errors[peak] = 1.5 + i / 10 + start / 1000  # unique peaks: a known order
            errors[start : start + length] = np.maximum(errors[start : start + length], 1.01)
            segments.append({"start_frame": start, "end_frame": start + length - 1, "start_s": start / FPS,
                             "end_s": (start + length) / FPS, "peak_frame": peak, "peak_value": errors[peak],
                             "num_frames": length})
        frames = np.arange(FRAMES)
        frame_files[f"train/{video_id}"] = path = out / FRAME_SCORES / f"{i:03d}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({
            "video_id": [video_id] * FRAMES, "split": ["train"] * FRAMES, "frame": frames.astype(np.int32),
            "time_s": frames / FPS, "error": errors, "normality": errors, "score": errors, "score_global": errors,
            "flagged": errors > 1.0, "label": np.full(FRAMES, -1, np.int8)}, schema=FRAME_SCHEMA), path)
        source = root / video_id
        summaries.append({"key": f"train/{video_id}", "video_id": video_id, "split": "train", "source": str(source),
                          "num_frames": FRAMES, "num_clips": FRAMES - 7, "fps": FPS, "scored": True,
                          "segments": segments})
        units.append(VideoUnit("train", video_id, str(source), record=VideoRecord(video_id, "train", source), fps=FPS))
    outputs = Outputs({}, summaries, None, "no labelled videos: no AUC", frame_files=frame_files)
    return outputs, Listing("videos", "given", units, [], [])


def run_report(videos: int) -> dict:
    return {"finished": "2026-01-02T03:04:05+00:00", "data": "/srv/cctv", "listed": videos, "scored": videos,
            "skipped_already_scored": 0, "too_short": [], "failed": [], "frames_scored": videos * FRAMES,
            "seconds": 12.0}


class FakePreviews:
    """Stands in for the Ray previews: records what was asked, answers with a small real animation."""

    def __init__(self) -> None:
        self.asked: list[VideoRequest] = []
        image, _ = encode_animation([np.full((32, 66, 3), 40 * i, np.uint8) for i in range(4)], 100.0)
        self.preview = Preview(image, size=(66, 32))

    def __call__(self, requests: list[VideoRequest]) -> dict[str, list[Preview]]:
        self.asked += requests
        return {r.key: [self.preview for _ in r.alarms] for r in requests}


def cards(text: str) -> list[str]:
    return re.findall(r'<article class="card" data-camera="([^"]*)" data-score="([^"]*)"', text)


def test_200_videos_give_at_most_n_cards_previews_only_for_them_and_a_bounded_table(tmp_path, monkeypatch):
    outputs, listing = synthetic_outputs(tmp_path, tmp_path / "archive", 200)
    monkeypatch.setattr(review, "TABLE_ROWS", 150)
    previews = FakePreviews()
    config = ScoreConfig(model="m", out=str(tmp_path), dataset="videos", root=str(tmp_path / "archive"),
                         review_cards=5, mlflow=False)
    source = SimpleNamespace(tags={}, key="tiny", uri="tiny.pt")
    lines: list[str] = []
    page = write_review(tmp_path, config, source, listing, SETTINGS, LIMIT, SimpleNamespace(videos={}), outputs,
                        run_report(200), lines.append, previews)
    assert page == review_page(tmp_path)
    text = page.read_text()
    shown = cards(text)
    asked = [(r.key, span) for r in previews.asked for span in r.alarms]
    assert len(shown) == 5 and len(asked) == 5, "previews are made for the cards only"
    peaks = sorted(((s["segments"][k]["peak_value"], s["key"], k) for s in outputs.summaries for k in (0, 1)),
                   reverse=True)
    assert {(key, (20, 25) if k == 0 else (60, 71)) for _, key, k in peaks[:5]} == set(asked)
    assert [float(score) for _, score in shown] == pytest.approx([p for p, _, _ in peaks[:5]])
    assert text.count("<img class=\"preview\"") == 5
    assert text.count("<tr data-camera=") == 150 and "and 245 more alarms" in text
    size = page.stat().st_size
    print(f"review page of 200 videos, 400 alarms, 5 cards: {size / 1e3:.0f} kB")
    assert size < 5 * len(previews.preview.image) * 4 / 3 + 150 * 500 + 60_000, "cards, table rows and a frame"
    assert any("400 alarms, 5 cards" in line for line in lines)


def test_no_cards_at_all_still_lists_the_alarms(tmp_path):
    outputs, listing = synthetic_outputs(tmp_path, tmp_path / "archive", 3)
    previews = FakePreviews()
    config = ScoreConfig(model="m", out=str(tmp_path), dataset="videos", root="/srv", review_cards=0, mlflow=False)
    page = write_review(tmp_path, config, SimpleNamespace(tags={}, key="k", uri="u"), listing, SETTINGS, LIMIT,
                        SimpleNamespace(videos={}), outputs, run_report(3), lambda _: None, previews)
    text = page.read_text()
    assert cards(text) == [] and previews.asked == [] and text.count("<tr data-camera=") == 6
    assert "alarm share" not in text, "no share where the report has none"
    share = {"share": 0.05, "frames_scored": 300, "frames_flagged": 15, "nominal_false_alarm_rate": 0.01,
             "videos_with_alarms": 3, "cameras": [{"camera": "cam1", "share": 0.15, "frames_scored": 100,
                                                   "frames_flagged": 15}]}
    page = write_review(tmp_path, config, SimpleNamespace(tags={}, key="k", uri="u"), listing, SETTINGS, LIMIT,
                        SimpleNamespace(videos={}), outputs, {**run_report(3), "alarms": share}, lambda _: None,
                        previews)
    assert "5.0% of the 300 frames scored, in 3 videos; highest: cam1 15.0%" in page.read_text()
    night = {**share, "share": 0.5, "frames_scored": 30, "cameras": []}
    nightly = replace(config, incremental=True)
    page = write_review(tmp_path, nightly, SimpleNamespace(tags={}, key="k", uri="u"), listing, SETTINGS, LIMIT,
                        SimpleNamespace(videos={}), outputs, {**run_report(3), "alarms": share,
                                                              "new_alarms": {"share": night}}, lambda _: None, previews)
    assert "alarm share, this run" in page.read_text() and "50.0% of the 30 frames scored" in page.read_text()


def test_nightly_pages_are_kept_linked_from_the_next_ones_and_pruned_to_the_newest(tmp_path, monkeypatch):
    monkeypatch.setattr(review, "KEPT_PAGES", 2)
    outputs, listing = synthetic_outputs(tmp_path, tmp_path / "archive", 3)
    config = ScoreConfig(model="m", out=str(tmp_path), dataset="videos", root="/srv", incremental=True,
                         review_cards=0, mlflow=False)
    source = SimpleNamespace(tags={}, key="k", uri="u")
    nights = ["2026-01-02T03:04:05+00:00", "2026-01-03T03:04:05+00:00", "2026-01-04T03:04:05+00:00"]
    for finished in nights:
        write_review(tmp_path, config, source, listing, SETTINGS, LIMIT, SimpleNamespace(videos={}), outputs,
                     {**run_report(3), "finished": finished}, lambda _: None, FakePreviews())

    kept = tmp_path / "report" / review.PAGES_DIR
    names = [review.kept_page_name(finished) for finished in nights]
    assert names[0] == "2026-01-02T03-04-05-00-00.html"
    assert sorted(p.name for p in kept.iterdir()) == names[1:], "the oldest page fell out of the newest two"
    index = review_page(tmp_path).read_text()
    assert index == (kept / names[2]).read_text().replace(f'href="{names[1]}"', f'href="pages/{names[1]}"')
    assert f'<a href="pages/{names[1]}">{nights[1]}: 0 alarms in 0 videos</a>' in index
    assert names[0] not in index, "no link to a page that is gone"
    assert f'<a href="{names[0]}">{nights[0]}: 6 alarms in 3 videos</a>' in (kept / names[1]).read_text()
    mlflow_copy = without_earlier_links(index)
    assert "pages/" not in mlflow_copy and "earlier pages" not in mlflow_copy, "MLflow holds no earlier page"
    start = index.index('<p class="earlier">')
    assert mlflow_copy == index[:start] + index[index.index("</p>", start) + len("</p>"):], "and nothing else goes"


def test_review_false_writes_nothing(tmp_path):
    config = ScoreConfig(model="m", out=str(tmp_path), dataset="videos", root="/srv", review=False)
    assert write_review(tmp_path, config, None, None, SETTINGS, LIMIT, None, None, {}) is None
    assert not review_page(tmp_path).exists()


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    preset = get_preset("cpu-tiny")
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, preset.model.build(), preset.model, config={"preset": preset.name, "error_rule": "l1"})
    return path


def test_videos_that_cannot_be_read_again_get_cards_that_say_why(tmp_path, tiny_checkpoint, ray_session):
    outputs, listing = synthetic_outputs(tmp_path, tmp_path / "archive", 3)  # none of the video files exists
    listing.units.pop()  # and the one with the highest peaks is not even listed any more (a nightly page shows it)
    config = ScoreConfig(model=str(tiny_checkpoint), out=str(tmp_path), dataset="videos",
                         root=str(tmp_path / "archive"), review_cards=4, incremental=True, mlflow=False)
    lines: list[str] = []
    page = write_review(tmp_path, config, load_model_source(str(tiny_checkpoint)), listing, SETTINGS, LIMIT,
                        SimpleNamespace(videos={}), outputs, run_report(3), lines.append)
    text = page.read_text()
    assert len(cards(text)) == 4 and "<img" not in text
    reasons = re.findall(r'<p class="unavailable">preview unavailable: ([^<]*)</p>', text)
    assert len(reasons) == 4
    assert any("no longer in the archive" in r for r in reasons)
    assert any("not found" in r for r in reasons)
    assert any("4 cards (4 without preview)" in line for line in lines)


@pytest.mark.parametrize(("dataset", "video_id", "camera"), [
    ("videos", "cam01/night/0001.avi", "cam01"),
    ("videos", "0001.avi", "cctv"),
    ("videos", "cam02__0001.avi", "cam02"),
    ("shanghaitech", "01_0014", "scene 01"),
    ("ucsd-ped2", "Test001", "ucsd-ped2"),
])
def test_cameras_come_from_the_layout(dataset, video_id, camera):
    assert camera_name(dataset, "/srv/cctv", video_id) == camera


def test_an_animation_stays_under_its_budget_by_dropping_frames():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (64, 130, 3), dtype=np.uint8) for _ in range(24)]  # noise: compresses badly
    data, step = encode_animation(images, 100.0, budget=40_000)
    assert len(data) <= 40_000 and step > 1
    animation = Image.open(io.BytesIO(data))
    assert animation.format == "WEBP" and animation.n_frames == len(images[::step]) and animation.n_frames > 1


@pytest.mark.parametrize(("alarm", "num_frames"), [((40, 45), 100), ((0, 3), 10), ((5, 290), 300), ((90, 99), 100)])
def test_frame_plans_show_the_alarm_in_at_most_preview_frames_with_a_clip_for_each(alarm, num_frames):
    plan = frame_plan(alarm, num_frames, FPS, clip_len=8)
    assert len(plan.shown) <= PREVIEW_FRAMES
    assert plan.shown[0] <= alarm[0] and plan.shown[-1] >= alarm[1] - plan.step
    for frame, start in plan.clip_of.items():
        assert 0 <= start <= num_frames - 8 and start <= frame < start + 8
    assert max(plan.needed) < num_frames
