import numpy as np
import pytest

from experiments.synthetic import ANOMALY_KINDS, SynthConfig, render_video
from memae.datasets.records import ranges_from_labels

from ..conftest import TINY


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b = render_video(TINY, "test", 1), render_video(TINY, "test", 1)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    other = render_video(SynthConfig(**{**TINY.__dict__, "seed": TINY.seed + 1}), "test", 1)
    assert not np.array_equal(a.frames, other.frames)


def test_a_video_does_not_depend_on_how_many_are_asked_for():
    more = SynthConfig(**{**TINY.__dict__, "test_videos": 9, "train_videos": 7})
    assert np.array_equal(render_video(TINY, "test", 1).frames, render_video(more, "test", 1).frames)


def test_labels_are_exactly_the_frames_with_anomaly_pixels():
    for index in range(4):
        video = render_video(TINY, "test", index)
        assert video.frames.shape == (TINY.frames, TINY.height, TINY.width, 3)
        assert np.array_equal(video.labels, video.masks.any(axis=(1, 2)).astype(np.int8))


def test_training_is_normal_and_every_test_video_starts_normal_then_has_an_anomaly():
    cfg = SynthConfig(frames=60, height=64, width=96)
    for index in range(5):
        assert not render_video(cfg, "train", index).masks.any()
        labels = render_video(cfg, "test", index).labels
        assert labels[0] == 0 and labels.sum() > 0


def test_every_anomaly_kind_appears_and_ped1_like_videos_get_several_ranges():
    cfg = SynthConfig(frames=200)
    kinds, multi = set(), 0
    for index in range(8):
        video = render_video(cfg, "test", index)
        kinds |= {event["kind"] for event in video.events}
        multi += len(ranges_from_labels(video.labels)) > 1
    assert kinds == set(ANOMALY_KINDS)
    assert multi >= 1


def test_anomalies_stay_visible_at_the_training_resolution():
    """At 64x64 an anomalous object must still cover a patch of pixels, not a speck."""
    cfg = SynthConfig()
    video = render_video(cfg, "test", 0)
    anomalous = video.masks[video.labels == 1]
    cells = (cfg.height / 64) * (cfg.width / 64)  # source pixels per 64x64 pixel
    assert np.median(anomalous.sum(axis=(1, 2))) / cells >= 8


@pytest.mark.parametrize("kwargs", [{"height": 20}, {"frames": 5}, {"anomaly_kinds": ("ufo",)}, {"anomaly_kinds": ()}])
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_written_archives_are_byte_identical_for_the_same_seed(tmp_path):
    from experiments.synthetic import write_corpus

    cfg = SynthConfig(**{**TINY.__dict__, "train_videos": 1, "test_videos": 1})
    for name in ("a", "b"):
        write_corpus("avenue", tmp_path / name, cfg)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3  # two videos and a label file
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_synth_job_help_lists_every_flag(capsys):
    from jobs.synth import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    flags = ["--config", "--layout", "--out", "--seed", "--train-videos", "--test-videos", "--frames", "--size",
             "--fps"]
    assert [flag for flag in flags if flag not in printed] == []
    assert "(default: 160x240)" in printed  # SynthConfig's size, shown as a flag value


def test_synth_job_from_yaml_writes_what_write_corpus_writes(tmp_path, capsys):
    """YAML sets the corpus, a flag overrides one key; the archive is the one the same SynthConfig gives directly."""
    from experiments.synthetic import write_corpus
    from jobs.synth import main

    config = tmp_path / "synth.yaml"
    config.write_text(f"layout: avenue\nout: {tmp_path / 'job'}\nsize: 48x64\nframes: 24\nseed: 3\ntrain-videos: 1\n"
                      "test_videos: 5\n")
    assert main(["--config", str(config), "--test-videos", "1"]) == 0
    assert "wrote avenue corpus" in capsys.readouterr().out
    write_corpus("avenue", tmp_path / "direct", SynthConfig(**{**TINY.__dict__, "train_videos": 1, "test_videos": 1}))
    files = sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*") if p.is_file())
    assert len(files) == 3
    assert files == sorted(p.relative_to(tmp_path / "job") for p in (tmp_path / "job").rglob("*") if p.is_file())
    assert all((tmp_path / "job" / f).read_bytes() == (tmp_path / "direct" / f).read_bytes() for f in files)


def test_synth_job_requires_layout_and_out(tmp_path, capsys):
    from jobs.synth import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--layout (one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--layout", "avenue", "--out", str(tmp_path), "--size", "20x20"])
    assert "too small to draw people" in capsys.readouterr().err


def test_written_videos_carry_their_events_within_their_labels(tmp_path):
    from experiments.synthetic import write_corpus

    written = write_corpus("ucsd-ped2", tmp_path, SynthConfig(**{**TINY.__dict__, "train_videos": 1, "test_videos": 2}))
    assert [v.events for v in written if v.split == "train"] == [()]
    for video in (v for v in written if v.split == "test"):
        assert video.events and video.events == tuple(render_video(TINY, "test", video.index).events)
        in_view = np.zeros(len(video.labels), dtype=bool)
        for event in video.events:
            in_view[event["first_frame"]:event["last_frame"] + 1] = True
        assert np.array_equal(in_view, video.labels == 1)
