import os

import numpy as np
import pytest

from experiments.synthetic import render_video, write_video
from memae.datasets import Preprocess, VideoDecodeError, VideoRecord, decode, iter_frames, open_dataset, probe
from memae.datasets.decode import check_file

from ..conftest import TINY


def gray(frames):
    return (frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114)[..., None]


@pytest.mark.parametrize("layout", ["ucsd-ped2", "avenue", "shanghaitech"])
def test_decoded_frame_i_is_rendered_frame_i(archive, layout):
    root, written = archive(layout)
    for record, video in zip(open_dataset(layout, root), written, strict=True):
        frames = decode(record, Preprocess(size=None, color="gray"))
        rendered = gray(render_video(TINY, video.split, video.index).frames)
        assert frames.shape == rendered.shape and frames.dtype == np.uint8
        error = np.abs(frames.astype(float) - rendered).mean(axis=(1, 2, 3))
        assert error.max() < 6  # lossy codecs, but the right frame: neighbouring frames differ far more
        assert np.abs(frames[1:].astype(float) - rendered[:-1]).mean() > error.mean()


def test_resize_color_and_chunks(archive):
    root, _ = archive("avenue")
    record = open_dataset("avenue", root)[0]
    rgb = decode(record, Preprocess(size=(32, 40), color="rgb"))
    assert rgb.shape == (TINY.frames, 32, 40, 3)
    chunks = list(iter_frames(record, Preprocess(size=(32, 40), color="rgb"), chunk=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 3]
    assert np.array_equal(np.concatenate(chunks), rgb)
    frames_record = open_dataset("frames", archive("frames")[0])[0]
    assert decode(frames_record, Preprocess(size=(32, 40), color="gray")).shape == (TINY.frames, 32, 40, 1)


def video_record(path):
    return VideoRecord(path.stem, "test", path)


def written_avi(tmp_path):
    return write_video(tmp_path / "ok.avi", render_video(TINY, "test", 0).frames, 10)


def test_empty_missing_and_garbage_files(tmp_path):
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(20000))
    cases = {"empty.avi": "file is empty", "missing.avi": "file not found",
             "garbage.mp4": r"not a video decord can read \(corrupt or truncated\)$"}
    for name, reason in cases.items():
        with pytest.raises(VideoDecodeError, match=reason) as info:
            decode(video_record(tmp_path / name), Preprocess())
        assert info.value.path == str(tmp_path / name)
    assert "Error reading" in info.value.detail  # decord's own words are kept, apart from the reason


def test_truncated_avi_is_caught_before_decord_sees_it(tmp_path):
    data = written_avi(tmp_path).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=f"truncated: its header declares {len(data)} bytes"):
        decode(video_record(cut), Preprocess())


def test_unreadable_file(tmp_path, monkeypatch):
    path = written_avi(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(path) else real_access(p, mode))
    with pytest.raises(VideoDecodeError, match="not readable"):
        check_file(path)


def test_truncated_image_names_the_frame(archive, tmp_path):
    root, _ = archive("frames")
    record = open_dataset("frames", root)[0]
    broken = tmp_path / "005.jpg"
    broken.write_bytes(record.frame_files[5].read_bytes()[:200])
    damaged = VideoRecord("x", "train", tmp_path, (*record.frame_files[:5], broken, *record.frame_files[6:]))
    with pytest.raises(VideoDecodeError, match=r"cannot decode image \(corrupt, truncated or not an image\)$") as info:
        decode(damaged, Preprocess())
    assert info.value.path == str(broken) and info.value.detail


def test_probe_reads_the_header_and_turns_failures_into_problems(tmp_path):
    good = probe(video_record(written_avi(tmp_path)))
    assert (good.num_frames, good.fps, good.problems) == (TINY.frames, 10.0, ())
    (tmp_path / "bad.avi").write_bytes(b"RIFF")
    bad = probe(video_record(tmp_path / "bad.avi"))
    assert bad.num_frames is None and "not an AVI file" in bad.problems[0].reason
