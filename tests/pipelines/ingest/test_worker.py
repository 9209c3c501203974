import dataclasses

import numpy as np
import pytest

from experiments.synthetic import render_video, write_video
from memae.datasets import Preprocess, VideoRecord, decode, decoders
from memae.datasets.decode import resolve_decoder
from pipelines.ingest.shards import read_shard
from pipelines.ingest.worker import VideoTask, ingest_video

from ..conftest import TINY


def test_a_video_is_opened_once_for_its_header_and_its_frames(tmp_path, monkeypatch):
    path = write_video(tmp_path / "cam" / "v.avi", render_video(TINY, "test", 0).frames, TINY.fps)
    record, prep, decoder = VideoRecord("v", "test", path), Preprocess((32, 40), "gray"), resolve_decoder("auto")
    backend, opened = decoders.BACKENDS[decoder], []

    def counted_open(*args):
        opened.append(args)
        return backend.open(*args)

    monkeypatch.setitem(decoders.BACKENDS, decoder, dataclasses.replace(backend, open=counted_open))
    entry = ingest_video(VideoTask.of(record, prep, tmp_path / "out", "videos", "binary", decoder))
    assert entry.status == "done" and entry.num_frames == TINY.frames
    assert entry.fps == pytest.approx(TINY.fps), "the header was read"
    assert len(opened) == 1, "one reader gives the header and decodes"
    frames, _ = read_shard(tmp_path / "out" / entry.shard)
    assert np.array_equal(frames, decode(record, prep, decoder=decoder))
