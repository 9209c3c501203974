"""Tiny synthetic archives in every real layout, written once per test session by the project's own generator."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from experiments.synthetic import SynthConfig, WrittenVideo, write_corpus

TINY = SynthConfig(height=48, width=64, frames=24, train_videos=2, test_videos=2, seed=3)


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Callable[[str], tuple[Path, list[WrittenVideo]]]:
    """archive(layout) -> (root, what was written): a tiny corpus, shared by the tests that only read it."""
    cache: dict[str, tuple[Path, list[WrittenVideo]]] = {}

    def make(layout: str) -> tuple[Path, list[WrittenVideo]]:
        if layout not in cache:
            root = tmp_path_factory.mktemp(layout)
            cache[layout] = (root, write_corpus(layout, root, TINY))
        return cache[layout]

    return make


@pytest.fixture
def fresh_archive(tmp_path) -> Callable[[str], tuple[Path, list[WrittenVideo]]]:
    """fresh_archive(layout) -> (root, written): a private tiny corpus that a test may damage."""

    def make(layout: str, cfg: SynthConfig = TINY) -> tuple[Path, list[WrittenVideo]]:
        root = tmp_path / layout
        return root, write_corpus(layout, root, cfg)

    return make


def tiny_video(path: Path, index: int = 0, split: str = "train") -> Path:
    """Writes video `index` of the tiny corpus (TINY.frames frames of TINY.height x TINY.width) at `path`."""
    from experiments.synthetic import render_video, write_video

    return write_video(path, render_video(TINY, split, index).frames, TINY.fps)


def empty_video(path: Path) -> Path:
    """A video file with a valid header and no frames, as a recorder that stopped at once leaves behind."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("XVID" if path.suffix == ".avi" else "mp4v"))
    cv2.VideoWriter(str(path), fourcc, TINY.fps, (TINY.width, TINY.height), True).release()
    return path


def archive_with_bad_links(root: Path, elsewhere: Path) -> dict[str, str]:
    """Writes one good video (`cam1/0001.mp4`) under `root` and three links beside it that are not videos: one
    dangling, one a loop, one leading to a video in `elsewhere`; returns how listing must report each link, by id."""
    tiny_video(root / "cam1" / "0001.mp4")
    tiny_video(elsewhere / "outside.mp4")
    os.symlink(root / "cam1" / "missing.mp4", root / "cam1" / "dangling.mp4")
    os.symlink(root / "cam1" / "loop.mp4", root / "cam1" / "loop.mp4")
    os.symlink(elsewhere / "outside.mp4", root / "cam1" / "outside.mp4")
    return {
        "cam1/dangling.mp4": f"a dangling symbolic link (to {root / 'cam1' / 'missing.mp4'}, which does not exist)",
        "cam1/loop.mp4": "a symbolic link loop",
        "cam1/outside.mp4": f"symbolic link to a file outside --root ({elsewhere / 'outside.mp4'})",
    }


@pytest.fixture
def one_torch_thread():
    """Training in a test with one torch thread: the same numbers on any machine, however loaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
