import shutil

import numpy as np
import pytest
from PIL import Image

from experiments.synthetic import render_video
from memae.datasets import load_masks, open_dataset
from memae.datasets.ucsd import parse_gt_m

from ..conftest import TINY


def write_m(path, body):
    path.write_text("TestVideoFile = {};\n" + body + "NumOfTestFiles = 3;\n")
    return path


def test_parse_single_multi_and_indexed_ranges(tmp_path):
    path = write_m(
        tmp_path / "UCSDped1.m",
        "% comment [1:2]\n"
        "TestVideoFile{end+1}.gt_frame = [61:180];\n"
        "TestVideoFile{end+1}.gt_frame = [1:15, 45:113];  % two events\n"
        "TestVideoFile{3}.gt_frame = [5 7:8];\n",
    )
    assert parse_gt_m(path) == [[(60, 180)], [(0, 15), (44, 113)], [(4, 5), (6, 8)]]


@pytest.mark.parametrize(
    "body, message",
    [
        ("TestVideoFile{end+1}.gt_frame = [61:x];\n", "'61:x'"),
        ("TestVideoFile{end+1}.gt_frame = [0:10];\n", "1-based"),
        ("TestVideoFile{2}.gt_frame = [1:10];\n", "never assigned"),
        ("nothing here\n", "no 'TestVideoFile"),
    ],
)
def test_unreadable_m_files_name_the_file_and_the_entry(tmp_path, body, message):
    path = write_m(tmp_path / "UCSDped2.m", body)
    with pytest.raises(ValueError, match=message) as info:
        parse_gt_m(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("layout", ["ucsd-ped1", "ucsd-ped2"])
def test_frames_labels_and_masks_line_up_with_what_was_rendered(archive, layout):
    root, written = archive(layout)
    records = open_dataset(layout, root)
    assert [r.video_id for r in records] == ["Train001", "Train002", "Test001", "Test002"]
    for record, video in zip(records, written, strict=True):
        assert record.num_frames == TINY.frames == len(record.frame_files)
        assert record.fps == 10.0 and not record.problems and not record.notes
        if record.split == "train":
            assert record.labels is None and record.known_normal
            continue
        assert np.array_equal(record.labels, video.labels)  # frame i has label i
        rendered = render_video(TINY, "test", video.index).masks
        masks = load_masks(record)
        if layout == "ucsd-ped1" and video.index % 2:  # like the real Ped1, not every test video has masks
            assert masks is None
        else:
            assert np.array_equal(masks, rendered)


def test_the_folder_above_ucsdped2_is_accepted(archive, tmp_path):
    root, _ = archive("ucsd-ped2")
    shutil.copytree(root, tmp_path / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped2")
    records = open_dataset("auto", tmp_path / "UCSD_Anomaly_Dataset.v1p2", split="test")
    assert [r.video_id for r in records] == ["Test001", "Test002"]


def test_masks_that_disagree_with_the_m_file_are_noted(fresh_archive):
    root, written = fresh_archive("ucsd-ped2")
    first_normal = int(np.flatnonzero(written[2].labels == 0)[0])
    Image.fromarray(np.full((TINY.height, TINY.width), 255, np.uint8)).save(
        root / "Test" / "Test001_gt" / f"{first_normal + 1:03d}.bmp"
    )
    record = open_dataset("ucsd-ped2", root, split="test")[0]
    assert not record.problems
    assert len(record.notes) == 1 and "disagree on 1 frame(s)" in record.notes[0].reason
    assert f"first at frame {first_normal}" in record.notes[0].reason
    assert np.array_equal(record.labels, written[2].labels)  # the .m file wins


def test_range_past_the_video_and_missing_entries_are_problems(fresh_archive):
    root, _ = fresh_archive("ucsd-ped2")
    write_m(root / "Test" / "UCSDped2.m", "TestVideoFile{end+1}.gt_frame = [5:99];\n")
    first, second = open_dataset("ucsd-ped2", root, split="test")
    assert first.labels is None and "goes past its 24 frames" in first.problems[0].reason
    assert second.labels is None and "no entry for Test002" in second.problems[0].reason


def test_missing_m_file_falls_back_to_masks_or_is_a_problem(fresh_archive):
    root, written = fresh_archive("ucsd-ped1")
    (root / "Test" / "UCSDped1.m").unlink()
    with_masks, without_masks = open_dataset("ucsd-ped1", root, split="test")
    assert np.array_equal(with_masks.labels, written[2].labels)
    assert "labels taken from its pixel masks" in with_masks.notes[0].reason
    assert without_masks.labels is None
    assert without_masks.problems[0].file.endswith("UCSDped1.m")
    assert without_masks.problems[0].reason == "ground-truth file not found"


def test_mask_folder_of_the_wrong_length_is_ignored_with_a_note(fresh_archive):
    root, _ = fresh_archive("ucsd-ped2")
    (root / "Test" / "Test002_gt" / "024.bmp").unlink()
    record = open_dataset("ucsd-ped2", root, split="test")[1]
    assert record.masks is None and "23 mask images for 24 frames" in record.notes[0].reason
