"""The pieces of the OpenCV backend that the shared decode tests cannot see: the luma plane, its range, resizing."""

import numpy as np
import pytest
from PIL import Image

from experiments.synthetic import render_video, write_video
from memae.datasets.decode import Preprocess, VideoRecord, decode, decoder_status
from memae.datasets.decoders import (
    _IDENTITY,
    _LIMITED_TO_FULL,
    _OpenCVVideo,
    _plane_to_gray,
    mp4_without_tracks,
    shrink,
)

from ..conftest import TINY, empty_video

pytestmark = pytest.mark.skipif(decoder_status()["opencv"] is not None, reason=f"{decoder_status()['opencv']}")


def test_gray_from_the_luma_plane_matches_gray_from_the_colour_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", render_video(TINY, "test", 0).frames, TINY.fps)
    video = _OpenCVVideo(path, None, 1)
    try:
        luma = np.concatenate(list(video.chunks(8)))
        assert video.luma, "the MPEG-4 test video is yuv420p: its luma plane is used"
    finally:
        video.close()
    colour = decode(VideoRecord("v", "test", path), Preprocess(None, "rgb"), decoder="opencv")
    pillow = np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in colour])[..., None]
    assert luma.shape == pillow.shape == (TINY.frames, TINY.height, TINY.width, 1)
    difference = luma.astype(float) - pillow
    assert np.abs(difference).mean() < 1.5 and np.abs(difference.mean()) < 1.5  # no range or offset error


def test_the_plane_range_is_read_from_the_first_frame_and_a_foreign_plane_refused():
    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    limited = np.round(16 + full.astype(float) * 219 / 255).astype(np.uint8)  # what a limited-range encoder stores
    assert _plane_to_gray(limited, full) is _LIMITED_TO_FULL
    assert _plane_to_gray(full, full) is _IDENTITY
    assert _plane_to_gray(rng.integers(0, 256, (24, 32), dtype=np.uint8), full) is None  # not this frame's luma
    assert _plane_to_gray(full[:, :16], full) is None  # not its shape


@pytest.mark.parametrize("source, size", [((480, 640), (256, 256)), ((480, 640), (64, 64)), ((47, 63), (24, 32)),
                                          ((48, 64), (96, 128)), ((48, 64, 3), (10, 10))])
def test_shrink_gives_the_size_asked_and_keeps_flat_areas_flat(source, size):
    image = np.full(source, 77, dtype=np.uint8)
    out = shrink(image, size)
    assert out.shape[:2] == size and out.dtype == np.uint8 and (out == 77).all()
    ramp = np.tile((np.arange(source[1]) * 255 // (source[1] - 1)).astype(np.uint8), (source[0], 1))
    row = shrink(ramp, size[:2])[0].astype(int)
    assert (np.diff(row) >= 0).all()  # a ramp stays a ramp: no columns swapped or wrapped


def test_an_mp4_without_tracks_is_told_apart_from_a_damaged_one(tmp_path):
    assert mp4_without_tracks(empty_video(tmp_path / "empty.mp4"))
    good = write_video(tmp_path / "good.mp4", render_video(TINY, "test", 0).frames, TINY.fps)
    assert not mp4_without_tracks(good)
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[:300])
    assert not mp4_without_tracks(tmp_path / "cut.mp4")
    assert not mp4_without_tracks(tmp_path / "missing.mp4")
