"""Ids that are unique and stable, and archives that are never clean: nothing under --root skipped silently."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from experiments.synthetic import LAYOUTS
from memae.datasets import Preprocess, VideoDecodeError, decode, iter_frames, open_dataset, probe, unlisted_files
from memae.datasets.listing import OUTPUT_FOLDER
from memae.files import OUTPUT_MARKER

from ..conftest import TINY, archive_with_bad_links, empty_video, tiny_video


def ids(root, **kwargs):
    return {r.video_id: r for r in open_dataset("videos", root, probe_videos=False, **kwargs)}


def test_ids_are_the_path_under_the_root_with_its_suffix_so_former_collisions_are_distinct(tmp_path):
    for rel in ("x/0001.mp4", "x/0001.avi", "cam1__0001.mp4", "cam1/0001.mp4"):
        tiny_video(tmp_path / rel)
    records = ids(tmp_path)
    assert sorted(records) == ["cam1/0001.mp4", "cam1__0001.mp4", "x/0001.avi", "x/0001.mp4"]
    assert all(not r.problems for r in records.values())
    assert records["x/0001.avi"].source == tmp_path / "x" / "0001.avi"


def test_an_id_does_not_change_when_a_same_named_file_appears_elsewhere(tmp_path):
    tiny_video(tmp_path / "cam1" / "0001.mp4")
    before = ids(tmp_path)
    tiny_video(tmp_path / "cam2" / "0001.mp4")
    after = ids(tmp_path)
    assert list(before) == ["cam1/0001.mp4"] and sorted(after) == ["cam1/0001.mp4", "cam2/0001.mp4"]
    assert after["cam1/0001.mp4"].source == before["cam1/0001.mp4"].source


def test_an_output_folder_inside_the_archive_is_reported_once_and_never_read_as_footage(tmp_path):
    tiny_video(tmp_path / "cam1" / "0001.mp4")
    out = tmp_path / "scores"  # a user's --out /srv/cctv/scores, after a night
    tiny_video(out / "report" / "previews" / "alarm.mp4")
    (out / "scored").mkdir()
    (out / "scored" / "cam1_0001.mp4.parquet").write_bytes(b"PAR1")
    (out / OUTPUT_MARKER).write_text("{}")
    records = open_dataset("videos", tmp_path, probe_videos=False)
    assert [r.video_id for r in records] == ["cam1/0001.mp4"]
    assert [(i.file, i.reason) for i in unlisted_files(tmp_path, records)] == [(str(out), OUTPUT_FOLDER)]
    (out / OUTPUT_MARKER).unlink()  # a folder that merely looks like one is an archive's folder like any other
    assert len(open_dataset("videos", tmp_path, probe_videos=False)) == 2


def test_ids_that_would_share_a_file_are_refused_naming_both_files(tmp_path):
    tiny_video(tmp_path / "videos" / "A.mp4")
    tiny_video(tmp_path / "videos" / "a.mp4")
    records = ids(tmp_path / "videos")
    assert records["A.mp4"].problems[0].reason.startswith(
        f"its id 'A.mp4' differs only in case from that of {tmp_path / 'videos' / 'a.mp4'}")
    assert str(tmp_path / "videos" / "A.mp4") in records["a.mp4"].problems[0].reason

    avenue = tmp_path / "avenue"
    shutil.copytree(tmp_path / "videos", avenue / "training_videos")
    (avenue / "training_videos" / "A.mp4").rename(avenue / "training_videos" / "01.avi")
    (avenue / "training_videos" / "a.mp4").rename(avenue / "training_videos" / "01.mp4")
    first, second = open_dataset("avenue", avenue, probe_videos=False)
    assert first.video_id == second.video_id == "01"
    assert first.problems[0].reason == f"has the same id ('01') as {second.source}: rename one of them"
    assert second.problems[0].reason == f"has the same id ('01') as {first.source}: rename one of them"


def test_links_folders_loops_and_empty_videos_are_reported_in_plain_words(tmp_path):
    root = tmp_path / "archive"
    bad_links = archive_with_bad_links(root, tmp_path / "elsewhere")
    os.symlink(root / "cam1" / "0001.mp4", root / "cam1" / "latest.mp4")  # read once, under the file's own path
    tiny_video(root / "cam2" / ".recording.mp4")
    os.symlink(root / "cam2" / ".recording.mp4", root / "cam2" / "only.mp4")  # the only listed path to its file
    tiny_video(root / "clip.mp4" / "0002.mp4")  # a folder named like a video: searched, and reported
    os.symlink(root / "cam1", root / "cam1-latest")  # a link to a folder: not followed, so nothing is listed twice
    empty_video(root / "cam2" / "empty.avi")
    empty_video(root / "cam2" / "empty.mp4")
    (root / "cam2" / "notes.txt").write_text("not a video")
    (root / "cam2" / ".partial.mp4").write_bytes(b"still uploading")

    records = open_dataset("videos", root)  # probing, as scoring a raw archive does
    reasons = {r.video_id: r.problems[0].reason if r.problems else None for r in records}
    assert reasons == {
        **bad_links,
        "cam1/0001.mp4": None,
        "cam2/only.mp4": None,
        "cam2/empty.avi": "holds no frames",
        "cam2/empty.mp4": "holds no frames",
        "clip.mp4/0002.mp4": None,
    }
    skipped = {os.path.relpath(i.file, root): i.reason for i in unlisted_files(root, records)}
    assert skipped == {
        "cam1-latest": "a symbolic link to a folder (not followed)",
        "cam1/latest.mp4": f"a symbolic link to {root / 'cam1' / '0001.mp4'}, which is read under its own name",
        "cam2/.partial.mp4": "a hidden file",
        "cam2/.recording.mp4": "a hidden file",
        "cam2/notes.txt": "not a video file (.txt)",
        "clip.mp4": "a folder named like a video file (the files in it are searched)",
    }


def test_a_zero_frame_video_says_so_and_keeps_the_decoders_words_apart(tmp_path):
    for name in ("empty.avi", "empty.mp4"):
        record = open_dataset("videos", empty_video(tmp_path / name).parent, probe_videos=False)[0]
        with pytest.raises(VideoDecodeError, match="holds no frames$") as info:
            decode(record, Preprocess())
        assert info.value.detail and "holds no frames" not in info.value.detail
        assert probe(record).problems[0].reason == "holds no frames"
        (tmp_path / name).unlink()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_file_of_a_clean_archive_is_used_and_a_stray_one_is_reported(archive, layout, tmp_path):
    root, _ = archive(layout)
    assert unlisted_files(root, open_dataset(layout, root, probe_videos=False)) == []
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "README").write_text("how this archive was made")
    (copy / "extra.avi").write_bytes(b"")
    found = {os.path.basename(i.file): i.reason for i in unlisted_files(copy, open_dataset(layout, copy))}
    assert found["README"] == "not a video file (no suffix)"
    if layout != "videos":  # the videos layout reads every video file, wherever it is
        assert found["extra.avi"] == "a video file in no folder this layout reads"


def test_a_frame_size_that_changes_mid_video_is_noted_or_refused(archive, tmp_path):
    root, _ = archive("frames")
    shutil.copytree(root, tmp_path / "frames")
    record = open_dataset("frames", tmp_path / "frames", split="train")[0]
    changed = record.frame_files[10]
    Image.open(changed).resize((TINY.width * 2, TINY.height * 2)).save(changed)
    notes = []
    frames = np.concatenate(list(iter_frames(record, Preprocess((24, 32), "gray"), chunk=8, notes=notes)))
    assert frames.shape == (TINY.frames, 24, 32, 1)
    assert [(n.file, n.reason) for n in notes] == [
        (str(changed), f"frame size changes from {TINY.height}x{TINY.width} to {TINY.height * 2}x{TINY.width * 2} "
                       "at frame 10; rescaled to 24x32 like the others")]
    with pytest.raises(VideoDecodeError, match="frame size changes from 48x64 to 96x128 at frame 10: frames kept"):
        decode(record, Preprocess(None, "gray"))
