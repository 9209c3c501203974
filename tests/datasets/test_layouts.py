"""Avenue, ShanghaiTech, frame folders, plain video folders, and layout detection."""

import shutil

import numpy as np
import pytest
from scipy.io import savemat

from experiments.synthetic import LAYOUTS, SynthConfig, render_video, write_corpus, write_video
from memae.datasets import detect_layout, load_masks, open_dataset

from ..conftest import TINY


@pytest.mark.parametrize("layout", ["avenue", "shanghaitech", "frames"])
def test_labels_and_masks_line_up_with_what_was_rendered(archive, layout):
    root, written = archive(layout)
    records = open_dataset(layout, root)
    assert [(r.video_id, r.split) for r in records] == [(v.video_id, v.split) for v in written]
    for record, video in zip(records, written, strict=True):
        assert record.num_frames == TINY.frames and not record.problems
        if record.split == "train":
            assert record.labels is None and record.known_normal
            assert np.array_equal(record.frame_labels(TINY.frames), np.zeros(TINY.frames, np.int8))
        else:
            assert np.array_equal(record.labels, video.labels)
            assert np.array_equal(load_masks(record), render_video(TINY, "test", video.index).masks)


def test_avenue_ids_and_label_names(archive):
    root, _ = archive("avenue")
    records = open_dataset("avenue", root)
    assert [(r.split, r.video_id) for r in records] == [
        ("train", "01"),
        ("train", "02"),
        ("test", "01"),
        ("test", "02"),
    ]
    assert records[2].label_source.name == "1_label.mat"  # not zero-padded, unlike the video
    assert records[0].fps == TINY.fps  # probed from the file


def test_avenue_missing_or_malformed_label_files_are_problems(fresh_archive):
    root, _ = fresh_archive("avenue")
    labels = root / "ground_truth_demo" / "testing_label_mask"
    (labels / "1_label.mat").unlink()
    savemat(labels / "2_label.mat", {"somethingElse": np.zeros(3)})
    first, second = open_dataset("avenue", root, split="test")
    assert first.problems[0].file.endswith("1_label.mat") and first.problems[0].reason == "label file not found"
    assert "no variable 'volLabel'" in second.problems[0].reason


def test_avenue_label_count_that_disagrees_with_the_video_is_a_problem(fresh_archive):
    root, _ = fresh_archive("avenue")
    vol = np.empty((1, TINY.frames - 4), dtype=object)
    for i in range(vol.shape[1]):
        vol[0, i] = np.zeros((TINY.height, TINY.width), np.uint8)
    savemat(root / "ground_truth_demo" / "testing_label_mask" / "1_label.mat", {"volLabel": vol})
    record = open_dataset("avenue", root, split="test")[0]
    assert record.problems[0].file.endswith("1_label.mat")
    assert "20 frame labels for 01, which has 24 frames" in record.problems[0].reason


@pytest.mark.parametrize("layout", ["shanghaitech", "frames"])
def test_npy_labels_missing_or_of_the_wrong_length_are_problems(fresh_archive, layout):
    root, written = fresh_archive(layout)
    first, second = [v.video_id for v in written if v.split == "test"]
    (root / "testing" / "test_frame_mask" / f"{first}.npy").unlink()
    np.save(root / "testing" / "test_frame_mask" / f"{second}.npy", np.zeros(TINY.frames + 1, np.int8))
    a, b = open_dataset(layout, root, split="test")
    assert a.problems[0].reason == "ground-truth file not found"
    assert b.problems[0].reason == f"has {TINY.frames + 1} labels for a video of {TINY.frames} frames"


def test_frames_without_any_label_folder_are_simply_unlabelled(fresh_archive):
    root, _ = fresh_archive("frames")
    shutil.rmtree(root / "testing" / "test_frame_mask")
    record = open_dataset("frames", root, split="test")[0]
    assert not record.problems and record.labels is None
    assert (record.frame_labels(TINY.frames) == -1).all()


def test_video_folders_are_searched_recursively_with_splits_and_path_ids(tmp_path):
    frames = render_video(TINY, "train", 0).frames
    for rel in ["cam1/0001.mp4", "cam2/night/0001.avi", "cam2/0002.mkv", "test/0001.mp4", "notes/readme.txt"]:
        path = tmp_path / rel
        if rel.endswith(".txt"):
            path.parent.mkdir(parents=True)
            path.write_text("not a video")
        else:
            write_video(path, frames, 10.0)
    records = open_dataset("videos", tmp_path, probe_videos=False)
    assert [(r.split, r.video_id) for r in records] == [
        ("train", "cam1/0001.mp4"),
        ("train", "cam2/0002.mkv"),
        ("train", "cam2/night/0001.avi"),
        ("test", "test/0001.mp4"),
    ]
    assert all(r.labels is None and not r.known_normal and not r.problems for r in records)
    assert [r.video_id for r in open_dataset("videos", tmp_path, split="test")] == ["test/0001.mp4"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_auto_detection_recognises_every_layout(archive, layout):
    root, written = archive(layout)
    name, reason = detect_layout(root)
    assert name == layout and reason
    assert len(open_dataset("auto", root)) == len(written)


def test_shanghaitech_test_part_alone_is_still_recognised(archive, tmp_path):
    root, _ = archive("shanghaitech")
    shutil.copytree(root / "testing", tmp_path / "testing")
    assert detect_layout(tmp_path)[0] == "shanghaitech"


def test_auto_detection_says_what_it_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(FileNotFoundError, match="no known layout.*training_videos"):
        detect_layout(tmp_path)


def test_unknown_dataset_and_split_are_refused(archive):
    root, _ = archive("frames")
    with pytest.raises(ValueError, match="unknown dataset"):
        open_dataset("kitti", root)
    with pytest.raises(ValueError, match="split"):
        open_dataset("frames", root, split="validation")


def test_a_training_only_ucsd_archive_has_no_test_folder(tmp_path):
    cfg = SynthConfig(height=48, width=64, frames=20, train_videos=1, test_videos=0)
    write_corpus("ucsd-ped2", tmp_path, cfg)
    assert not (tmp_path / "Test").exists()
    assert sorted(p.name for p in (tmp_path / "Train" / "Train001").iterdir())[:2] == ["001.tif", "002.tif"]
    assert [r.video_id for r in open_dataset("ucsd-ped2", tmp_path)] == ["Train001"]
