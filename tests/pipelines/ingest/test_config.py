import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.common.config import config_from_args, config_parser
from pipelines.ingest.config import IngestConfig

from .test_ingest import REPO, load_job

# The flags jobs/ingest.py has always taken, and the one added with the shared configuration.
FLAGS = ["--dataset", "--root", "--out", "--size", "--color", "--split", "--clip-len", "--num-cpus", "--encoding",
         "--verbose", "--config", "--wait-s"]


def parse(*argv: str) -> IngestConfig:
    return config_from_args(IngestConfig, config_parser(IngestConfig).parse_args(argv))


def test_help_lists_every_flag_and_the_exit_status():
    command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--help"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0
    assert all(flag in result.stdout for flag in FLAGS), result.stdout
    assert "Exit status" in result.stdout and "shanghaitech" in result.stdout and "'native'" in result.stdout
    for status in ("0  every listed video", "1  some videos failed", "2  the ingest could not start",
                   "3  the job itself failed", "4  another job is writing --out"):
        assert status in result.stdout


def test_flags_override_the_yaml_file(tmp_path):
    yaml_file = tmp_path / "ingest.yaml"
    yaml_file.write_text("root: /data/ped2\nout: shards\nsize: 64x48\ncolor: rgb\nsplit: test\nclip-len: 8\n"
                         "encoding: binary\nverbose: true\n")
    config = parse("--config", str(yaml_file), "--clip-len", "32")
    expected = IngestConfig(root=Path("/data/ped2"), out=Path("shards"), size=(64, 48), color="rgb", split="test",
                            clip_len=32, encoding="binary", verbose=True)
    assert config == expected and isinstance(config.root, Path)
    yaml_file.write_text("size: [16, 8]\n")
    assert parse("--config", str(yaml_file)).size == (16, 8)


def test_native_size_keeps_each_videos_own_size(tmp_path):
    assert parse("--size", "native").size is None
    assert parse().size == (256, 256)
    yaml_file = tmp_path / "ingest.yaml"
    yaml_file.write_text("size: native\n")
    assert parse("--config", str(yaml_file)).size is None
    assert IngestConfig(root="r", out="o", size=None).size is None


def test_check_names_the_flag_at_fault():
    good = {"root": "/r", "out": "/o"}
    IngestConfig(**good).check()
    cases = [({"out": "/o"}, "--root"), ({**good, "encoding": "png"}, "--encoding"),
             ({**good, "size": (0, 4)}, "--size"), ({**good, "split": "val"}, "--split"),
             ({**good, "num_cpus": 0}, "--num-cpus"), ({**good, "wait_s": -1}, "--wait-s")]
    for values, flag in cases:
        with pytest.raises(ValueError, match=f"^{flag}"):
            IngestConfig(**values).check()


def test_the_job_refuses_a_missing_root_with_status_two(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_job("ingest").main(["--out", "somewhere"])
    assert exit_.value.code == 2 and "--root is required" in capsys.readouterr().err


def test_the_job_takes_its_settings_from_yaml(ingested_ped2, tmp_path, capsys):
    """The folder holds 32x48 frames: a run with the default size would refuse it (status 2)."""
    yaml_file = tmp_path / "ingest.yaml"
    yaml_file.write_text(f"root: {ingested_ped2.root}\nout: {ingested_ped2.out}\nsize: 32x48\n")
    assert load_job("ingest").main(["--config", str(yaml_file)]) == 0
    assert "4 already ingested, 0 to ingest" in capsys.readouterr().out
