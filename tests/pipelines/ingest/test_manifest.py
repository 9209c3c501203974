import dataclasses
import json
import re
from pathlib import Path

import pytest

from memae.datasets import VideoRecord
from memae.datasets.records import Issue
from pipelines.ingest.clips import iter_clips
from pipelines.ingest.corpus import Corpus
from pipelines.ingest.manifest import Manifest, ManifestEntry, ManifestError

# What manifest.json held before the manifest was typed, in the order it was written: scripts rely on these.
TOP_KEYS = ["format", "dataset", "layout", "layout_evidence", "root", "splits", "preprocessing", "storage", "clip_len",
            "software", "videos", "complete", "frame_shape", "counts", "updated"]
ENTRY_KEYS = ["video_id", "split", "status", "source", "num_frames", "fps", "notes"]
DONE_KEYS = [*ENTRY_KEYS, "frame_shape", "shard", "encoding", "bytes", "labelled", "anomaly_ranges", "seconds",
             "source_stamp"]
FAILED_KEYS = [*ENTRY_KEYS, "file", "reason"]


def manifest_json(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_an_ingested_manifest_holds_the_documented_keys_in_order(ingested_ped2):
    data = manifest_json(ingested_ped2.out)
    assert list(data) == TOP_KEYS and data["format"] == "memae-frames/1"
    assert list(data["preprocessing"]) == ["size", "color", "channels", "resize", "gray"]
    assert list(data["counts"]) == ["videos", "done", "failed", "frames", "bytes", "raw_bytes", "by_split"]
    assert data["counts"]["by_split"] == {"train": {"videos": 2, "frames": 48}, "test": {"videos": 2, "frames": 48}}
    assert all(list(v) == DONE_KEYS for v in data["videos"])


def test_pending_and_failed_entries_keep_their_keys():
    record = VideoRecord("01", "test", Path("/a/01.avi"), fps=25.0, notes=(Issue("/a/gt.mat", "two ground truths"),))
    pending = ManifestEntry.pending(record).to_json()
    assert list(pending) == ENTRY_KEYS and pending["notes"] == [{"file": "/a/gt.mat", "reason": "two ground truths"}]
    failed = ManifestEntry.failed(record, Issue("/a/01.avi", "file is empty")).to_json()
    assert list(failed) == FAILED_KEYS and (failed["status"], failed["reason"]) == ("failed", "file is empty")


def test_read_then_write_leaves_the_file_byte_for_byte_the_same(ingested_ped2, tmp_path):
    manifest = Manifest.read(ingested_ped2.out)
    assert manifest.complete and manifest.frame_shape == (32, 48, 1) and len(manifest.select("test")) == 2
    manifest.write(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == (ingested_ped2.out / "manifest.json").read_text()


def _break(data: dict, change: str) -> str:
    """Applies one kind of damage to a manifest's JSON; returns the field the error must name."""
    video = data["videos"][1]
    if change == "escaping split":
        video["split"] = "../../x"
        return r"field videos\[1\]\.split: '\.\./\.\./x' is not a plain name"
    if change == "escaping shard":
        video["shard"] = "../../elsewhere.parquet"
        return r"field videos\[1\]\.shard: .* is not a path inside"
    if change == "absolute shard":
        video["shard"] = "/etc/passwd"
        return r"field videos\[1\]\.shard"
    if change == "missing field":
        del data["dataset"]
        return "field dataset: missing"
    if change == "wrong type":
        video["num_frames"] = "24"
        return r"field videos\[1\]\.num_frames: expected int"
    if change == "unknown status":
        video["status"] = "half-done"
        return r"field videos\[1\]\.status: 'half-done' is not one of"
    if change == "bad frame shape":
        video["frame_shape"] = [32, 48]
        return r"field videos\[1\]\.frame_shape: expected 3 integers"
    data["format"] = "memae-frames/0"
    return "not a memae-frames/1 manifest"


CHANGES = ["escaping split", "escaping shard", "absolute shard", "missing field", "wrong type", "unknown status",
           "bad frame shape", "other format"]


@pytest.mark.parametrize("change", CHANGES)
def test_a_malformed_manifest_is_refused_naming_the_file_and_the_field(ingested_ped2, tmp_path, change):
    data = manifest_json(ingested_ped2.out)
    field = _break(data, change)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=f"^{re.escape(str(tmp_path / 'manifest.json'))}: .*{field}"):
        Manifest.read(tmp_path)


@pytest.mark.parametrize("field, value", [("split", "../../escaped"), ("shard", "../../escaped.parquet"),
                                          ("shard", "/etc/passwd")])
def test_write_refuses_what_read_would_refuse(ingested_ped2, tmp_path, field, value):
    manifest = Manifest.read(ingested_ped2.out)
    manifest.videos[1] = dataclasses.replace(manifest.videos[1], **{field: value})
    with pytest.raises(ManifestError, match=rf"refusing to write videos\[1\]\.{field} '{re.escape(value)}'"):
        manifest.write(tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_a_shard_is_never_planned_outside_the_output_folder(tmp_path):
    from memae.datasets import Preprocess
    from pipelines.ingest.worker import VideoTask

    record = VideoRecord("../../x.mp4", "train", tmp_path / "x.mp4")
    task = VideoTask.of(record, Preprocess(), tmp_path / "out", "videos", "tensor")
    assert task.shard.startswith("shards/train/") and "/" not in task.shard[len("shards/train/"):]
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "shards" / "train").symlink_to(tmp_path)  # a link already in --out, leading out of it
    with pytest.raises(ValueError, match="would be stored outside"):
        VideoTask.of(record, Preprocess(), tmp_path / "out", "videos", "tensor")


def test_text_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json: not JSON"):
        Manifest.read(tmp_path)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        Manifest.read(tmp_path / "elsewhere")


def test_every_reader_goes_through_the_checks(ingested_ped2, tmp_path):
    """Clips, corpora and the scoring listing refuse a split that would lead a shard path out of the folder."""
    from pipelines.score.data import list_shards

    data = manifest_json(ingested_ped2.out)
    data["videos"][0]["split"] = "../../x"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    for read in (lambda: list(iter_clips(tmp_path, 8)), lambda: Corpus.open(tmp_path),
                 lambda: list_shards(tmp_path, "all")):
        with pytest.raises(ManifestError, match=r"videos\[0\]\.split"):
            read()


def test_the_job_will_not_resume_into_a_folder_with_a_damaged_manifest(ingested_ped2, tmp_path, capsys):
    from .test_ingest import load_job

    data = manifest_json(ingested_ped2.out)
    data["videos"][2]["split"] = "../x"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    status = load_job("ingest").main(["--root", str(ingested_ped2.root), "--out", str(tmp_path), "--size", "32x48"])
    assert status == 2
    assert "videos[2].split" in capsys.readouterr().err
    assert json.loads((tmp_path / "manifest.json").read_text()) == data  # left as it was


def test_a_checkpoint_takes_its_frame_size_from_the_manifest_of_its_training_shards(ingested_ped2, tmp_path):
    from memae.checkpoint import save_checkpoint
    from memae.presets import get_preset
    from pipelines.registry.source import load_model_source

    preset = get_preset("cpu-tiny")
    path = tmp_path / "model.pt"
    save_checkpoint(path, preset.model.build(), preset.model, config={"preset": "cpu-tiny",
                                                                      "shards": str(ingested_ped2.out)})
    assert preset.frame_size != (32, 48) and load_model_source(str(path)).frame_size == (32, 48)
