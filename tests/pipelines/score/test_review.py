"""The review page of a scoring run, opened in a real headless Chromium: every card's animation loads, the filters
change what is shown, the page is in the run's MLflow artifacts, and a screenshot is kept as the test's artifact.

Needs Debian's `chromium` and `chromium-driver` (`.ci/ensure-browser` installs them; CI sets MEMAE_REQUIRE_BROWSER=1
so that a missing browser fails instead of skipping).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from experiments.synthetic import SynthConfig, render_video, write_video
from memae.checkpoint import save_checkpoint
from memae.presets import get_preset
from pipelines.score.config import ScoreConfig
from pipelines.score.review import HISTORY_FILE, read_history, review_page
from pipelines.score.run import score

TINY = get_preset("cpu-tiny")  # 8-frame clips of 32x32 grey
CARDS = 3


def planted(frames: np.ndarray, start: int, stop: int) -> np.ndarray:
    """A bright checkerboard in frames start..stop-1: something for the alarms to be about."""
    frames = frames.copy()
    checker = (np.indices((14, 14)).sum(0) // 3 % 2 * 255).astype(np.uint8)
    frames[start:stop, 16:30, 24:38, :] = checker[None, :, :, None]
    return frames


@pytest.fixture(scope="module")
def camera_archive(tmp_path_factory) -> Path:
    """Two cameras of two 40-frame videos each with a planted object, and a corrupt file (reported as failed)."""
    root = tmp_path_factory.mktemp("cameras")
    cfg = SynthConfig(height=48, width=64, frames=40, seed=4)
    for i, (camera, span) in enumerate([("cam-a", (8, 16)), ("cam-a", (20, 30)), ("cam-b", (12, 22)),
                                        ("cam-b", (26, 34))]):
        frames = planted(render_video(cfg, "train", i).frames, *span)
        write_video(root / camera / f"{camera}-{i}.mp4", frames, cfg.fps)
    (root / "cam-b" / "broken.mp4").write_bytes(b"\x00" * 300)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained cpu-tiny network: without a calibration each video's highest errors make its alarms."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("review-model") / "tiny.pt"
    save_checkpoint(path, TINY.model.build().eval(), TINY.model,
                    config={"preset": TINY.name, "error_rule": "l1", "frame_rule": "mean"})
    return path


@pytest.fixture(scope="module")
def review_run(camera_archive, tiny_model, tmp_path_factory, ray_session):
    store = tmp_path_factory.mktemp("review-mlflow")
    out = tmp_path_factory.mktemp("review-out")
    lines: list[str] = []
    config = ScoreConfig(model=str(tiny_model), dataset="videos", root=str(camera_archive), out=str(out),
                         incremental=True, settle_s=0, review_cards=CARDS, worst_frames=0,
                         tracking_uri=f"sqlite:///{store}/mlflow.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", config.tracking_uri)
        result = score(config, echo=lines.append)
    return result, out, lines, config


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through its system chromedriver (nothing is downloaded)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    missing = None if binary and driver_path else (
        "no system chromium/chromedriver: install Debian's `chromium chromium-driver` (.ci/ensure-browser does it as "
        "root) to run the browser test")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = missing or "selenium is missing: it is a dev dependency, pip install -e '.[dev]'"
    if missing:
        (pytest.fail if os.environ.get("MEMAE_REQUIRE_BROWSER") else pytest.skip)(missing)

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def visible_alarms(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('[data-camera]')].filter(e => !e.hidden).map(e => e.dataset.camera)")


def test_the_page_shows_every_alarm_and_its_previews_load_in_a_browser(browser, review_run, tmp_path):
    result, out, lines, _ = review_run
    page = review_page(out)
    assert [Path(f.file).name for f in result.failed] == ["broken.mp4"]
    assert page.is_file() and any(str(page) in line for line in lines)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text, "self-contained: nothing fetched"
    assert "broken" in text, "the failed video is listed with its reason"

    browser.get(page.as_uri())
    deadline = time.monotonic() + 20
    while not browser.execute_script("return [...document.images].every(i => i.complete)"):
        assert time.monotonic() < deadline, "previews still loading after 20 s"
        time.sleep(0.1)
    cards = browser.execute_script("return document.querySelectorAll('article.card').length")
    widths = browser.execute_script("return [...document.querySelectorAll('img.preview')].map(i => i.naturalWidth)")
    assert cards == CARDS and len(widths) == cards and all(w > 0 for w in widths), widths
    rows = browser.execute_script("return document.querySelectorAll('#rest tr[data-camera]').length")
    alarms = len(visible_alarms(browser))
    assert rows >= 1 and alarms == cards + rows, "the alarms beyond the cards are rows of the table"
    screenshot = tmp_path / "review.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot of the review page: {screenshot}")

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "camera")).select_by_visible_text("cam-a")
    shown = visible_alarms(browser)
    assert 0 < len(shown) < alarms and set(shown) == {"cam-a"}
    Select(browser.find_element("id", "camera")).select_by_index(0)  # all cameras again
    scores = browser.execute_script("return [...document.querySelectorAll('[data-camera]')].map(e => "
                                    "parseFloat(e.dataset.score))")
    assert scores == sorted(scores, reverse=True), "ordered by peak score"
    least = browser.find_element("id", "min-score")
    least.send_keys(f"{scores[1]:.6g}")
    assert len(visible_alarms(browser)) == 2, "a minimum score hides the alarms below it"
    assert "2 of" in browser.find_element("id", "shown").text


def test_the_page_is_in_the_runs_mlflow_artifacts(review_run):
    result, _, _, config = review_run
    mlflow.set_tracking_uri(config.tracking_uri)
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(result.mlflow_run_id, "report")}
    assert artifacts == {"report/index.html"}


def test_a_nightly_page_counts_the_previous_nights_alarms(review_run, tmp_path, ray_session):
    _, out, _, config = review_run
    night = tmp_path / "night-2"
    shutil.copytree(out, night)
    (first,) = read_history(night / "report")
    lines: list[str] = []
    again = ScoreConfig(**{**vars(config), "out": str(night), "mlflow": False})
    assert score(again, echo=lines.append).scored == []
    text = review_page(night).read_text()
    assert f"{first['alarms']} alarms in {first['videos']} videos" in text
    assert "No alarms." in text, "nothing new was scored since the previous page"
    assert f'<a href="pages/{first["page"]}">' in text and (night / "report" / "pages" / first["page"]).is_file()
    assert len(read_history(night / "report")) == 2 and (night / "report" / HISTORY_FILE).is_file()
