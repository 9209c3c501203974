import json
import subprocess
import sys

import numpy as np
import pytest

from memae.datasets import Preprocess
from pipelines.ingest.clips import clip_dataset, clip_starts, iter_clips, read_video_frames, read_video_labels
from pipelines.ingest.manifest import FramePreprocessing, Manifest, ManifestEntry
from pipelines.ingest.shards import ShardWriter

from ..conftest import TINY


def expected_clips(shards, entries, clip_len, stride):
    """What slicing each stored video by hand gives."""
    for entry in entries:
        frames = read_video_frames(shards, entry["video_id"], entry["split"])
        labels = read_video_labels(shards, entry["video_id"], entry["split"])
        for start in range(0, len(frames) - clip_len + 1, stride):
            yield (
                entry["video_id"],
                entry["split"],
                start,
                frames[start : start + clip_len],
                labels[start : start + clip_len],
            )


def test_clip_starts():
    assert list(clip_starts(24, 16, 1)) == list(range(9))
    assert list(clip_starts(24, 8, 5)) == [0, 5, 10, 15]
    assert list(clip_starts(10, 16, 1)) == []
    with pytest.raises(ValueError):
        clip_starts(10, 0, 1)


@pytest.mark.parametrize("clip_len, stride", [(16, 1), (8, 5), (24, 2)])
def test_iter_clips_equal_slices_of_each_video_and_never_cross_videos(ingested_ped2, clip_len, stride):
    shards = ingested_ped2.out
    entries = json.loads((shards / "manifest.json").read_text())["videos"]
    clips = list(iter_clips(shards, clip_len, stride))
    expected = list(expected_clips(shards, entries, clip_len, stride))
    assert len(clips) == len(expected) == 4 * len(range(0, TINY.frames - clip_len + 1, stride))
    for clip, (video_id, split, start, frames, labels) in zip(clips, expected, strict=True):
        assert (clip["video_id"], clip["split"], clip["start"]) == (video_id, split, start)
        assert clip["clip"].shape == (clip_len, 32, 48, 1) and clip["clip"].dtype == np.uint8
        assert np.array_equal(clip["clip"], frames)
        assert clip["labels"].dtype == np.int8 and np.array_equal(clip["labels"], labels)


def test_clip_labels_are_the_archive_labels(ingested_ped2):
    test_videos = [v for v in ingested_ped2.written if v.split == "test"]
    for video in test_videos:
        for clip in iter_clips(ingested_ped2.out, 4, 4, video_ids=[video.video_id]):
            assert np.array_equal(clip["labels"], video.labels[clip["start"] : clip["start"] + 4])
    train = list(iter_clips(ingested_ped2.out, 16, 8, split="train"))
    assert train and all((c["labels"] == 0).all() and c["split"] == "train" for c in train)


def test_filters_and_unknown_or_ambiguous_ids(ingested_avenue):
    shards = ingested_avenue.out
    assert {c["split"] for c in iter_clips(shards, 16, 4, split="test")} == {"test"}
    assert {c["video_id"] for c in iter_clips(shards, 16, 4, video_ids=["02"])} == {"02"}
    with pytest.raises(KeyError, match="'07'"):
        list(iter_clips(shards, 16, 4, video_ids=["07"]))
    with pytest.raises(ValueError, match="pass split="):
        read_video_frames(shards, "01")  # Avenue has a train 01 and a test 01
    assert read_video_frames(shards, "01", "test").shape == (TINY.frames, TINY.height, TINY.width, 3)


@pytest.mark.parametrize("encoding", ["tensor", "binary"])
def test_clips_across_row_group_boundaries(tmp_path, encoding):
    """Shards are read row group by row group; clips that straddle groups must still be exact."""
    frames = np.arange(23 * 2 * 3, dtype=np.uint8).reshape(23, 2, 3, 1)
    labels = (np.arange(23) % 3 == 0).astype(np.int8)
    with ShardWriter(tmp_path / "shards" / "test" / "v.parquet", (2, 3, 1), {}, encoding) as writer:
        for start in range(0, 23, 5):  # row groups of 5 frames
            writer.write(frames[start : start + 5], labels[start : start + 5])
    shard = "shards/test/v.parquet"
    entry = ManifestEntry("v", "test", "done", "v.avi", 23, None, (), (2, 3, 1), shard, encoding, 1, True, ())
    stored = FramePreprocessing.of(Preprocess((2, 3), "gray"))
    Manifest("frames", "frames", "given", "/archive", ["test"], stored, {}, 7, {}, [entry]).write(tmp_path)
    for clip_len, stride in [(7, 1), (5, 5), (6, 4), (23, 1)]:
        clips = list(iter_clips(tmp_path, clip_len, stride))
        assert [c["start"] for c in clips] == list(range(0, 23 - clip_len + 1, stride))
        for c in clips:
            assert np.array_equal(c["clip"], frames[c["start"] : c["start"] + clip_len])
            assert np.array_equal(c["labels"], labels[c["start"] : c["start"] + clip_len])


def test_half_written_shards_are_never_visible(tmp_path):
    path = tmp_path / "v.parquet"
    with pytest.raises(RuntimeError), ShardWriter(path, (2, 3, 1), {}) as writer:
        writer.write(np.zeros((4, 2, 3, 1), np.uint8), np.zeros(4, np.int8))
        assert not path.exists()
        raise RuntimeError("decoder died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("clip_len, stride", [(16, 1), (8, 3)])
def test_clip_dataset_streams_the_same_clips_as_iter_clips(ingested_avenue, clip_len, stride, monkeypatch):
    import pipelines.ingest.clips

    monkeypatch.setattr(pipelines.ingest.clips, "CLIP_TASK_BYTES", 3 * clip_len * TINY.height * TINY.width * 3)
    shards = ingested_avenue.out
    ds = clip_dataset(shards, clip_len, stride, split="test")
    rows = {(r["video_id"], r["split"], r["start"]): r for r in ds.iter_rows()}
    local = {(c["video_id"], c["split"], c["start"]): c for c in iter_clips(shards, clip_len, stride, split="test")}
    assert rows.keys() == local.keys() and len(rows) == 2 * len(range(0, TINY.frames - clip_len + 1, stride))
    for key, clip in local.items():
        assert rows[key]["clip"].shape == (clip_len, TINY.height, TINY.width, 3)
        assert np.array_equal(rows[key]["clip"], clip["clip"])
        assert np.array_equal(rows[key]["labels"], clip["labels"])
    batch = next(iter(ds.iter_batches(batch_size=4, batch_format="numpy")))
    assert batch["clip"].shape == (4, clip_len, TINY.height, TINY.width, 3) and batch["clip"].dtype == np.uint8


def test_clip_dataset_refuses_a_selection_without_clips(ingested_avenue):
    with pytest.raises(ValueError, match="no clips of 99 frames"):
        clip_dataset(ingested_avenue.out, 99)


def test_reading_clips_and_the_library_do_not_import_ray():
    code = ("import sys, pipelines.ingest.clips, memae.datasets, experiments.synthetic; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_binary_shards_are_read_by_any_arrow_reader_from_the_field_metadata(tmp_path):
    """The recipe of the shards module docstring, with nothing of ours: pyarrow and numpy only."""
    import pyarrow.parquet as pq

    frames = np.random.default_rng(1).integers(0, 256, (40, 24, 32, 3), dtype=np.uint8)
    path = tmp_path / "v.parquet"
    with ShardWriter(path, (24, 32, 3), {"video_id": "v"}) as writer:  # the default encoding
        for start in range(0, 40, 16):
            writer.write(frames[start : start + 16], np.zeros(len(frames[start : start + 16]), np.int8))
    table = pq.read_table(path)
    field = table.schema.field("image")
    assert (field.metadata[b"memae.dtype"], field.metadata[b"memae.layout"]) == (b"uint8", b"HWC")
    shape = json.loads(field.metadata[b"memae.shape"])
    read = np.frombuffer(table.column("image").combine_chunks().buffers()[1], np.uint8).reshape(-1, *shape)
    assert np.array_equal(read, frames)
    assert path.stat().st_size <= 1.5 * frames.nbytes  # noise does not compress: the bound holds even so
