"""Atomic writes, safe file names and strict JSON: the one home of each (memae/files.py)."""

import json

import numpy as np
import pytest

from memae.files import (
    atomic_write,
    json_ready,
    remove_temporary_files,
    safe_name,
    set_aside,
    temporary_path,
    write_json_atomic,
)


def test_safe_names_keep_distinct_ids_apart():
    assert safe_name("Test001") == "Test001"
    assert safe_name("a b") != safe_name("a_b") and "/" not in safe_name("cam/01")
    assert safe_name("cam/01") != safe_name("cam_01")


def test_strict_json_has_no_nan():
    assert json_ready({"a": [float("nan"), np.float64(1.5), np.int64(2), np.bool_(True)]}) == {
        "a": [None, 1.5, 2, True]
    }


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
    with atomic_write(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and list(tmp_path.iterdir()) == [path]


def test_json_is_written_whole_and_strict(tmp_path):
    write_json_atomic(tmp_path / "a" / "m.json", {"x": float("inf")})
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"x": None}


def test_temporary_files_of_a_killed_run_are_found_and_removed(tmp_path):
    kept = tmp_path / "sub" / "v.parquet"
    kept.parent.mkdir()
    kept.write_text("done")
    stale = temporary_path(kept)
    stale.write_text("half")
    assert remove_temporary_files(tmp_path) == [stale]
    assert not stale.exists() and kept.exists()


def test_paths_that_leave_their_folder_are_told_apart(tmp_path):
    from memae.files import resolves_inside

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert resolves_inside(tmp_path / "out" / "a" / "b.parquet", tmp_path / "out")
    assert not resolves_inside(tmp_path / "out" / ".." / "escaped", tmp_path / "out")
    assert not resolves_inside(tmp_path / "out" / "link" / "x", tmp_path / "out")


def test_a_rename_into_place_is_flushed_to_disk_file_first_then_its_folder(tmp_path, monkeypatch):
    import os

    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    path = tmp_path / "sub" / "m.json"
    write_json_atomic(path, {"a": 1})
    assert len(synced) == 2 and synced[0].startswith(str(path.parent / ".m.json.tmp-"))
    assert synced[1] == str(path.parent)


def test_a_file_set_aside_keeps_its_bytes_and_never_overwrites_an_earlier_one(tmp_path):
    path = tmp_path / "v.parquet"
    path.write_bytes(b"one")
    assert set_aside(path, ".damaged") == tmp_path / "v.parquet.damaged" and not path.exists()
    path.write_bytes(b"two")
    assert set_aside(path, ".damaged") == tmp_path / "v.parquet.damaged-2"
    assert (tmp_path / "v.parquet.damaged").read_bytes() == b"one"
    assert (tmp_path / "v.parquet.damaged-2").read_bytes() == b"two"
