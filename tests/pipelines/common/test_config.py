from dataclasses import dataclass

import pytest

from pipelines.common.config import config_from_args, config_parser, flatten, option, parse_size, save_config


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


@dataclass
class Sized:
    size: tuple[int, int] | None = option((256, 256), "frame size HxW", parse=parse_size)
    seeds: list[int] = option([0, 1, 2], "seeds", nargs="+")


def test_sizes_and_lists_from_flags_and_yaml(tmp_path, capsys):
    parser = config_parser(Sized)
    config = config_from_args(Sized, parser.parse_args(["--size", "64x48", "--seeds", "3", "4"]))
    assert config == Sized(size=(64, 48), seeds=[3, 4])
    assert Sized().seeds == [0, 1, 2] and Sized().seeds is not Sized().seeds
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("size: 32x32\nseeds: [7]\n")
    assert config_from_args(Sized, parser.parse_args(["--config", str(yaml_file)])) == Sized((32, 32), [7])
    yaml_file.write_text("size: [16, 8]\n")
    assert config_from_args(Sized, parser.parse_args(["--config", str(yaml_file)])).size == (16, 8)
    yaml_file.write_text("size: big\n")
    with pytest.raises(ValueError, match="size: size must look like"):
        config_from_args(Sized, parser.parse_args(["--config", str(yaml_file)]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "0x4"])
    assert "must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "(default: 256x256)" in capsys.readouterr().out
