from dataclasses import dataclass

import pytest

from pipelines.config import config_from_args, config_parser, flatten, option, save_config


@dataclass
class Demo:
    shards: str | None = option(None, "where the shards are")
    epochs: int = option(10, "epochs")
    lr: float = option(1e-4, "learning rate")
    use_gpu: bool | None = option(None, "GPU or not")
    model: str = option("memae", "which model", choices=["memae", "ae"])


def test_defaults_then_yaml_then_flags(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 3\nlr: 0.01\nuse-gpu: true\n")
    parser = config_parser(Demo)
    config = config_from_args(Demo, parser.parse_args(["--config", str(yaml_file), "--lr", "0.5"]))
    assert config == Demo(shards=None, epochs=3, lr=0.5, use_gpu=True, model="memae")
    config = config_from_args(Demo, parser.parse_args(["--use-gpu", "false", "--model", "ae"]))
    assert config.use_gpu is False and config.model == "ae" and config.epochs == 10


def test_unknown_yaml_keys_and_bad_choices_are_errors(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epoch: 3\n")
    parser = config_parser(Demo)
    with pytest.raises(ValueError, match="unknown Demo field.*epoch"):
        config_from_args(Demo, parser.parse_args(["--config", str(yaml_file)]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "vae"])


def test_help_lists_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit):
        config_parser(Demo).parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--epochs" in out and "(default: 10)" in out and "--use-gpu" in out


def test_flatten_and_save_round_trip(tmp_path):
    import yaml

    save_config(Demo(shards="/x"), tmp_path / "c.yaml")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["shards"] == "/x"
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
