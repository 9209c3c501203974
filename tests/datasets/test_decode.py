import os

import numpy as np
import pytest
from PIL import Image

from experiments.synthetic import render_video, write_video
from memae.datasets import Preprocess, VideoDecodeError, VideoRecord, decode, iter_frames, open_dataset, probe
from memae.datasets.decode import DECODERS, check_file, decoder_status, open_frames, resolve_decoder

from ..conftest import TINY, empty_video

STATUS = decoder_status()
# Every registered video backend; one that cannot be used here is skipped, saying why (torchcodec needs FFmpeg's
# shared libraries and a build matching torch).
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(STATUS[name] is not None, reason=f"{name}: {STATUS[name]}"))
            for name in DECODERS]


def gray(frames):
    return (frames[..., 0] * 0.299 + frames[..., 1] * 0.587 + frames[..., 2] * 0.114)[..., None]


def resized(frames, size):
    """The reference decode at another size: the rendered frames, resized by Pillow (antialiased bilinear)."""
    return np.stack([np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.BILINEAR)) for f in frames])


@pytest.mark.parametrize("decoder", BACKENDS)
@pytest.mark.parametrize("layout", ["avenue", "shanghaitech"])
def test_decoded_frame_i_is_rendered_frame_i(archive, layout, decoder):
    root, written = archive(layout)
    records = [r for r in open_dataset(layout, root) if r.is_video_file]
    assert records
    for record in records:
        video = next(v for v in written if (v.split, v.video_id) == (record.split, record.video_id))
        frames = decode(record, Preprocess(size=None, color="gray"), decoder=decoder)
        rendered = gray(render_video(TINY, video.split, video.index).frames)
        assert frames.shape == rendered.shape and frames.dtype == np.uint8
        error = np.abs(frames.astype(float) - rendered).mean(axis=(1, 2, 3))
        assert error.max() < 6  # lossy codecs, but the right frame: neighbouring frames differ far more
        assert np.abs(frames[1:].astype(float) - rendered[:-1]).mean() > error.mean()


def test_frame_images_go_through_pillow_whatever_the_decoder(archive):
    root, written = archive("ucsd-ped2")
    record = open_dataset("ucsd-ped2", root)[0]
    frames = decode(record, Preprocess(size=None, color="gray"), decoder="auto")
    assert np.abs(frames.astype(float) - gray(render_video(TINY, "train", 0).frames)).mean() < 1


@pytest.mark.parametrize("decoder", BACKENDS)
@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_resized_frames_are_within_a_tolerance_of_the_reference(tmp_path, decoder, color):
    rendered = render_video(TINY, "test", 1).frames
    record = video_record(write_video(tmp_path / "v.avi", rendered, TINY.fps))
    frames = decode(record, Preprocess(size=(32, 40), color=color), decoder=decoder)
    reference = resized(rendered, (32, 40)).astype(float)
    reference = gray(reference) if color == "gray" else reference
    assert frames.shape == (TINY.frames, 32, 40, 1 if color == "gray" else 3) and frames.dtype == np.uint8
    error = np.abs(frames - reference).mean(axis=(1, 2, 3))
    assert error.max() < 8, error  # codec loss and each backend's own resampling
    assert np.abs(frames[1:] - reference[:-1]).mean() > error.mean()  # the right frame, not a neighbour


@pytest.mark.parametrize("decoder", BACKENDS)
def test_resize_color_and_chunks(archive, decoder):
    root, _ = archive("avenue")
    record = open_dataset("avenue", root)[0]
    rgb = decode(record, Preprocess(size=(32, 40), color="rgb"), decoder=decoder)
    assert rgb.shape == (TINY.frames, 32, 40, 3)
    chunks = list(iter_frames(record, Preprocess(size=(32, 40), color="rgb"), chunk=7, decoder=decoder))
    assert [len(c) for c in chunks] == [7, 7, 7, 3]
    assert np.array_equal(np.concatenate(chunks), rgb)
    frames_record = open_dataset("frames", archive("frames")[0])[0]
    assert decode(frames_record, Preprocess(size=(32, 40), color="gray")).shape == (TINY.frames, 32, 40, 1)


@pytest.mark.parametrize("decoder", BACKENDS)
def test_one_open_gives_the_header_and_every_frame(tmp_path, decoder):
    rendered = render_video(TINY, "test", 0).frames
    record = video_record(write_video(tmp_path / "v.avi", rendered, TINY.fps))
    prep = Preprocess(size=(32, 40), color="gray")
    expected = decode(record, prep, decoder=decoder)
    with open_frames(record, prep, decoder=decoder) as frames:
        header = frames.header()
        chunks = list(frames.chunks(8))
    assert (header.num_frames, header.fps) == (TINY.frames, pytest.approx(TINY.fps))
    assert np.array_equal(np.concatenate(chunks), expected)


def video_record(path):
    return VideoRecord(path.stem, "test", path)


def written_avi(tmp_path):
    return write_video(tmp_path / "ok.avi", render_video(TINY, "test", 0).frames, 10)


@pytest.mark.parametrize("decoder", BACKENDS)
def test_empty_missing_and_garbage_files(tmp_path, decoder):
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(20000))  # fixed: some noise probes as audio
    cases = {"empty.avi": "file is empty", "missing.avi": "file not found",
             "garbage.mp4": rf"not a video {decoder} can read \(corrupt or truncated\)$"}
    for name, reason in cases.items():
        with pytest.raises(VideoDecodeError, match=reason) as info:
            decode(video_record(tmp_path / name), Preprocess(), decoder=decoder)
        assert info.value.path == str(tmp_path / name)
    assert info.value.detail  # the decoder's own words (or what can be said for it) are kept apart from the reason
    if decoder == "decord":
        assert "Error reading" in info.value.detail


@pytest.mark.parametrize("decoder", BACKENDS)
def test_zero_frame_videos_hold_no_frames(tmp_path, decoder):
    for name in ("empty.avi", "empty.mp4"):
        record = video_record(empty_video(tmp_path / name))
        with pytest.raises(VideoDecodeError, match="holds no frames$") as info:
            decode(record, Preprocess(), decoder=decoder)
        assert info.value.path == str(record.source) and info.value.detail
        assert probe(record, decoder).problems[0].reason == "holds no frames"


@pytest.mark.parametrize("decoder", BACKENDS)
def test_a_video_damaged_mid_stream_is_reported_not_shortened(tmp_path, decoder):
    data = bytearray(written_avi(tmp_path).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 3000] = b"\x55" * 3000  # the header intact, frames in the middle gone
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError, match=r"truncated or damaged: decoded \d+ of the 24 frames|corrupt") as info:
        decode(video_record(damaged), Preprocess((24, 32), "gray"), decoder=decoder)
    assert info.value.path == str(damaged)


def test_truncated_avi_is_caught_before_decord_sees_it(tmp_path):
    data = written_avi(tmp_path).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    for decoder in [n for n in DECODERS if STATUS[n] is None]:
        with pytest.raises(VideoDecodeError, match=f"truncated: its header declares {len(data)} bytes"):
            decode(video_record(cut), Preprocess(), decoder=decoder)


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


@pytest.mark.parametrize("decoder", BACKENDS)
def test_probe_reads_the_header_and_turns_failures_into_problems(tmp_path, decoder):
    good = probe(video_record(written_avi(tmp_path)), decoder)
    assert (good.num_frames, good.fps, good.problems) == (TINY.frames, 10.0, ())
    (tmp_path / "bad.avi").write_bytes(b"RIFF")
    bad = probe(video_record(tmp_path / "bad.avi"), decoder)
    assert bad.num_frames is None and "not an AVI file" in bad.problems[0].reason


def test_auto_picks_the_first_usable_backend_and_a_missing_one_says_why(monkeypatch):
    import memae.datasets.decoders as decoders

    usable = [name for name in decoders.AUTO_ORDER if STATUS[name] is None]
    assert resolve_decoder("auto") == usable[0]
    with pytest.raises(ValueError, match="not 'ffmpeg'"):
        resolve_decoder("ffmpeg")
    monkeypatch.setattr(decoders, "unavailable", lambda name: None if name == "decord" else f"no {name} here")
    assert resolve_decoder("auto") == "decord"
    with pytest.raises(ValueError, match="decoder opencv cannot be used here: no opencv here"):
        resolve_decoder("opencv")
    monkeypatch.setattr(decoders, "unavailable", lambda name: f"no {name} here")
    with pytest.raises(ValueError, match="no video decoder can be used here: decord: no decord here"):
        resolve_decoder("auto")


class _RefusesAtFirstChunk:
    """A backend that opens a file and fails on its first chunk, as decord does on some MPEG-TS files."""

    declared, fps = 24, 10.0

    def __init__(self, path, size=None, channels=3):
        self.path = path

    def chunks(self, chunk):
        raise VideoDecodeError(self.path, "decoding failed at frame 0 (corrupt data)")
        yield

    def close(self):
        pass


@pytest.mark.skipif(STATUS["decord"] or STATUS["opencv"], reason="needs decord and opencv")
def test_a_video_the_chosen_decoder_fails_on_at_once_is_read_by_the_next_one_with_a_note(tmp_path, monkeypatch):
    import memae.datasets.decoders as decoders

    record = video_record(written_avi(tmp_path))
    prep = Preprocess((24, 32), "gray")
    expected = decode(record, prep, decoder="opencv")
    monkeypatch.setitem(decoders.BACKENDS, "decord", decoders.Backend("decord", "decord", _RefusesAtFirstChunk, True))
    notes = []
    with open_frames(record, prep, notes, "decord") as frames:
        assert np.array_equal(np.concatenate(list(frames.chunks(8))), expected) and frames.decoder == "opencv"
    assert [n.reason for n in notes] == [
        "read with opencv, as decord failed: decoding failed at frame 0 (corrupt data)"]

    def refuses_to_open(path, size=None, channels=3):
        raise VideoDecodeError(path, "not a video decord can read (corrupt or truncated)")

    monkeypatch.setitem(decoders.BACKENDS, "decord", decoders.Backend("decord", "decord", refuses_to_open, True))
    notes.clear()
    assert np.array_equal(np.concatenate(list(iter_frames(record, prep, 8, notes, "decord"))), expected)
    assert notes[0].reason.startswith("read with opencv, as decord failed: not a video decord can read")

    monkeypatch.setitem(decoders.BACKENDS, "opencv", decoders.Backend("opencv", "cv2", _RefusesAtFirstChunk, False))
    with pytest.raises(VideoDecodeError, match="not a video decord can read"):  # every one fails: the chosen's words
        decode(record, prep, decoder="decord")


@pytest.mark.skipif(STATUS["opencv"], reason="needs opencv")
def test_a_failure_after_the_first_chunk_is_the_files_and_no_other_decoder_tries(tmp_path, monkeypatch):
    import memae.datasets.decoders as decoders

    opened = []
    for name, backend in list(decoders.BACKENDS.items()):
        def counted(*args, name=name, real=backend.open):
            opened.append(name)
            return real(*args)
        monkeypatch.setitem(decoders.BACKENDS, name, decoders.Backend(name, backend.module, counted, False))
    data = bytearray(written_avi(tmp_path).read_bytes())
    data[len(data) * 3 // 4 :] = b"\x55" * (len(data) - len(data) * 3 // 4)  # the last quarter of the frames gone
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError, match="truncated or damaged|corrupt"):
        list(iter_frames(video_record(damaged), Preprocess((24, 32), "gray"), 4, [], "opencv"))
    assert opened == ["opencv"], "the frames already handed on are not decoded again by another backend"


def written_h264(path, container_format):
    """The TINY test video encoded by x264 with its defaults (B-frames, one group of pictures) into `path`, in
    `container_format` ("mpegts", or "h264" for a bare stream); its rendered frames. Skips without PyAV."""
    av = pytest.importorskip("av", reason="PyAV (the bench extra) writes H.264")
    frames = render_video(TINY, "test", 0).frames
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return frames


def test_an_mpeg_ts_decord_refuses_is_read_whole_by_another_decoder(tmp_path):
    """Seen on this machine: decord 0.6 fails at frame 0 on an MPEG-TS of one H.264 group of pictures with B-frames
    (a short clip as x264 writes it by default), a file FFmpeg and OpenCV read whole."""
    if STATUS["decord"] or STATUS["opencv"]:
        pytest.skip("needs decord and opencv")
    path = tmp_path / "clip.ts"
    frames = written_h264(path, "mpegts")
    notes = []
    with open_frames(video_record(path), Preprocess((24, 32), "gray"), notes, "decord") as opened:
        assert len(np.concatenate(list(opened.chunks(8)))) == len(frames) and opened.decoder == "opencv"
    assert notes[0].reason.startswith("read with opencv, as decord failed: ")


class _Stream:
    """A backend's view of a bare stream: no frame count declared, `frames` frames of 8x8 gray."""

    fps = 25.0

    def __init__(self, frames):
        self.declared, self.frames = 0, frames

    def chunks(self, chunk):
        for start in range(0, self.frames, chunk):
            yield np.full((min(chunk, self.frames - start), 8, 8, 1), start % 256, np.uint8)

    def close(self):
        pass


@pytest.mark.parametrize("frames", [40, 0])
def test_a_stream_without_a_frame_count_is_read_whole_and_an_empty_one_refused_at_its_header(tmp_path, monkeypatch,
                                                                                           frames):
    import memae.datasets.decoders as decoders

    path = tmp_path / "cam.h264"
    path.write_bytes(b"\x00\x00\x00\x01" * 10)
    for name in DECODERS:  # every backend sees the same stream: no fallback tells it apart
        monkeypatch.setitem(decoders.BACKENDS, name, decoders.Backend(name, "numpy", lambda *a: _Stream(frames), True))
    record = video_record(path)
    with open_frames(record, Preprocess((8, 8), "gray"), [], "opencv") as opened:
        if not frames:
            with pytest.raises(VideoDecodeError, match="holds no frames$"):
                opened.header()
            return
        header = opened.header()
        pieces = list(opened.chunks(32))
    assert header.num_frames is None and header.fps == 25.0, "no count promised: decoding counts them"
    assert sum(len(p) for p in pieces) == frames and [p[0, 0, 0, 0] for p in pieces][:2] == [0, 16]
    assert probe(record, "opencv").problems == () and probe(record, "opencv").num_frames is None


def test_a_bare_h264_stream_is_a_video_read_whole(tmp_path):
    if STATUS["opencv"]:
        pytest.skip("needs opencv")
    path = tmp_path / "cam1" / "export.h264"
    path.parent.mkdir()
    frames = written_h264(path, "h264")
    (record,) = open_dataset("videos", tmp_path)
    assert record.video_id == "cam1/export.h264" and record.problems == () and record.num_frames is None
    assert len(decode(record, Preprocess((24, 32), "gray"), decoder="opencv")) == len(frames)
