"""Label files whose header claims more than the file holds are a problem of one video, never a MemoryError."""

import struct

import numpy as np
import pytest
from scipy.io import savemat

from memae.datasets import label_files, open_dataset
from memae.datasets.label_files import LabelFileError, load_npy, npy_header

from ..conftest import TINY

HUGE = 10**12


def forged_npy(path, shape=(HUGE,), descr="|i1"):
    """An .npy file whose header declares `shape` but which holds 8 bytes of data."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(bytes(8))
    return path


def test_an_npy_header_is_checked_against_the_files_size(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(24, dtype=np.int8))
    assert npy_header(good) == ((24,), np.dtype("i1")) and load_npy(good).sum() == 276
    with pytest.raises(LabelFileError, match=f"declares {HUGE} values of 1 byte.* holds only 8 bytes of data"):
        load_npy(forged_npy(tmp_path / "huge.npy"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LabelFileError, match="Python objects"):
        npy_header(tmp_path / "objects.npy")
    (tmp_path / "text.npy").write_text("labels: 0 0 1")
    with pytest.raises(LabelFileError, match="not a readable .npy file"):
        npy_header(tmp_path / "text.npy")


@pytest.mark.parametrize("layout", ["shanghaitech", "frames"])
def test_a_frame_mask_claiming_a_trillion_labels_is_a_problem_of_its_video(fresh_archive, layout):
    root, written = fresh_archive(layout)
    first, second = [v.video_id for v in written if v.split == "test"]
    forged_npy(root / "testing" / "test_frame_mask" / f"{first}.npy")
    forged_npy(root / "testing" / "test_pixel_mask" / f"{second}.npy", shape=(HUGE, 64, 64))
    a, b = open_dataset(layout, root, split="test")  # used to raise MemoryError while listing
    assert a.problems[0].file.endswith(f"{first}.npy")
    assert a.problems[0].reason.startswith(f"cannot read labels: its header declares {HUGE} values")
    assert b.problems[0].reason.startswith(f"cannot read pixel masks: its header declares {HUGE * 64 * 64} values")


def test_an_avenue_label_file_claiming_more_cells_than_it_holds_is_a_problem(fresh_archive):
    root, _ = fresh_archive("avenue")
    path = root / "ground_truth_demo" / "testing_label_mask" / "1_label.mat"
    vol = np.empty((1, 3), dtype=object)
    for i in range(3):
        vol[0, i] = np.zeros((4, 5), np.uint8)
    savemat(path, {"volLabel": vol})
    data = path.read_bytes()
    dims = struct.pack("<IIii", 5, 8, 1, 3)  # miINT32, 8 bytes: the cell array's dimensions 1 x 3
    path.write_bytes(data.replace(dims, struct.pack("<IIii", 5, 8, 1, 2**31 - 1), 1))
    record = open_dataset("avenue", root, split="test", probe_videos=False)[0]
    assert record.problems[0].file == str(path)
    assert record.problems[0].reason.startswith(f"its header declares {2**31 - 1} cells in 'volLabel'")


def test_a_ucsd_range_file_too_large_to_be_one_is_a_problem(fresh_archive, monkeypatch):
    root, _ = fresh_archive("ucsd-ped2")
    monkeypatch.setattr(label_files, "MAX_TEXT_BYTES", 100)
    record = open_dataset("ucsd-ped2", root, split="test")[0]
    assert not record.problems and record.labels is not None  # the labels come from the pixel masks instead
    assert "too large for a ground-truth text file (at most 100)" in record.notes[0].reason
    assert len(record.labels) == TINY.frames
