import json
import subprocess
import sys

import numpy as np
import pytest

from memae.datasets import Preprocess
from pipelines.ingest.clips import (
    block_starts,
    block_units,
    clip_starts,
    clips_from_block,
    frame_block_dataset,
    frames_per_block,
    iter_clips,
    read_block,
    read_video_frames,
    read_video_labels,
)
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


def write_videos(root, lengths, frame_shape=(4, 6, 1), group=5):
    """Shards of videos of the given lengths (row groups of `group` frames), each frame's pixels all different."""
    entries = []
    for i, n in enumerate(lengths):
        frames = np.random.default_rng(i).integers(0, 256, (n, *frame_shape), dtype=np.uint8)
        labels = (np.arange(n) % 4 == 0).astype(np.int8)
        shard = f"shards/test/v{i}.parquet"
        with ShardWriter(root / shard, frame_shape, {}, "binary") as writer:
            for start in range(0, n, group):
                writer.write(frames[start : start + group], labels[start : start + group])
        entries.append(ManifestEntry(f"v{i}", "test", "done", f"v{i}.avi", n, None, (), frame_shape, shard, "binary",
                                     1, True, ()))
    stored = FramePreprocessing.of(Preprocess(frame_shape[:2], "gray"))
    Manifest("frames", "frames", "given", "/archive", ["test"], stored, {}, 7, {}, entries).write(root)


def clips_of_blocks(units, clip_len, stride):
    """(video_id, start, clip bytes, label bytes) of every clip cut from the blocks the read tasks return."""
    for unit in units:
        row = read_block({key: np.array([value]) for key, value in unit.items()})
        frames, labels = row["frames"][0], row["labels"][0]
        for i, clip in enumerate(clips_from_block(frames, clip_len, stride)):
            start = int(row["start"][0]) + i * stride
            offset = start - int(row["start"][0])
            yield str(row["video_id"][0]), start, clip.tobytes(), labels[offset : offset + clip_len].tobytes()


LENGTHS = [3, 16, 17, 40, 61, 200]  # shorter than a clip, exactly one, one frame more, several blocks


@pytest.mark.parametrize("clip_len, stride", [(16, 1), (16, 4), (8, 3), (4, 9)])
@pytest.mark.parametrize("block_frames, multiple_of", [(None, 1), (20, 1), (33, 2), (16, 3)])
def test_cutting_every_block_gives_exactly_the_clips_of_iter_clips(tmp_path, clip_len, stride, block_frames,
                                                                   multiple_of):
    write_videos(tmp_path, LENGTHS)
    units = block_units(tmp_path, clip_len, stride, block_frames=block_frames, multiple_of=multiple_of)
    from_blocks = list(clips_of_blocks(units, clip_len, stride))
    expected = [(c["video_id"], c["start"], c["clip"].tobytes(), c["labels"].tobytes())
                for c in iter_clips(tmp_path, clip_len, stride)]
    assert from_blocks == expected  # the same clips, each once, even in the same order
    assert all(unit["stop"] - unit["first"] <= max(block_frames or 10**9, clip_len) for unit in units)
    if block_frames == 20 and clip_len < 20:
        assert len(units) > len(LENGTHS)  # the long videos were cut into several blocks


def test_block_counts_become_a_multiple_of_the_workers_where_clips_allow():
    for workers in (2, 3, 4):
        plan = block_starts([120, 150, 90], 16, 1, 10**6, multiple_of=workers)
        assert sum(map(len, plan)) % workers == 0
        starts = [[s for block in blocks for s in block] for blocks in plan]
        assert starts == [list(range(n - 15)) for n in (120, 150, 90)]
    one_clip_each = block_starts([16, 16, 16], 16, 1, 10**6, multiple_of=2)
    assert sum(map(len, one_clip_each)) == 3  # a clip is never split: the equal split then drops one block


def test_blocks_move_each_frame_about_once_where_clip_rows_moved_it_clip_len_times(tmp_path):
    """Object-store bytes of the read tasks per stored frame: within 1.3x of the frames' own bytes at stride 1."""
    write_videos(tmp_path, [120, 180, 150], frame_shape=(64, 64, 1), group=32)
    frame_bytes = 64 * 64
    stored = (120 + 180 + 150) * frame_bytes
    moved = sum(sum(value.nbytes for value in read_block({k: np.array([v]) for k, v in unit.items()}).values())
                for unit in block_units(tmp_path, 16, 1))
    assert moved < 1.3 * stored
    clip_rows = sum(1 for _ in iter_clips(tmp_path, 16, 1)) * 16 * frame_bytes  # what clip rows carried
    assert clip_rows > 14 * stored
    # Bytes-limited blocks of larger frames: the overlap of 15 frames stays under the bound for long videos too.
    for shape in [(256, 256, 1), (256, 256, 3), (360, 640, 3)]:
        block = frames_per_block(int(np.prod(shape)), 16)
        for n in (120, 1000, 5000):
            blocks = block_starts([n], 16, 1, block)[0]
            assert sum(b[-1] + 16 - b.start for b in blocks) < 1.3 * n


@pytest.mark.parametrize("clip_len, stride", [(16, 1), (8, 3)])
def test_frame_block_dataset_streams_the_blocks_of_the_read_tasks(ingested_avenue, clip_len, stride):
    shards = ingested_avenue.out
    ds = frame_block_dataset(shards, clip_len, stride, split="test", block_frames=clip_len + 3, multiple_of=2)
    rows = list(ds.iter_rows())
    assert len(rows) == len(block_units(shards, clip_len, stride, "test", block_frames=clip_len + 3, multiple_of=2))
    assert len(rows) % 2 == 0
    clips = {}
    for row in rows:
        assert row["frames"].shape[1:] == (TINY.height, TINY.width, 3) and row["frames"].dtype == np.uint8
        for i, clip in enumerate(clips_from_block(row["frames"], clip_len, stride)):
            clips[(row["video_id"], row["split"], row["start"] + i * stride)] = clip
    local = {(c["video_id"], c["split"], c["start"]): c["clip"] for c in iter_clips(shards, clip_len, stride, "test")}
    assert clips.keys() == local.keys() and len(local) == 2 * len(range(0, TINY.frames - clip_len + 1, stride))
    assert all(np.array_equal(clips[key], clip) for key, clip in local.items())


def test_frame_block_dataset_refuses_a_selection_without_clips(ingested_avenue):
    with pytest.raises(ValueError, match="no clips of 99 frames"):
        frame_block_dataset(ingested_avenue.out, 99)


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
