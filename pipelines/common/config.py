"""Typed job configuration: a dataclass per job, loaded from YAML, overridden on the command line.

Every field becomes a `--flag` (underscores as dashes) whose help text is the field's `help` metadata, so a job's
`--help`, its YAML file and the MLflow params all list the same names:

    parser = config_parser(TrainConfig, description="...")
    config = config_from_args(TrainConfig, parser.parse_args())   # defaults < --config YAML < flags
    mlflow.log_params(flatten(config))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None, parse: Callable[[str], Any] | None = None,
           nargs: str | None = None) -> Any:
    """A dataclass field with a help text for its command-line flag.

    Args:
        default: the value when neither YAML nor a flag gives one (a list or tuple default is copied per instance).
        help: the flag's help text.
        choices: the values allowed.
        parse: turns the flag's text (or a YAML string) into the value, e.g. `parse_size` for "256x256".
        nargs: "+" for a flag taking one or more values (a list in YAML).
    """
    metadata = {"help": help, "choices": choices, "parse": parse, "nargs": nargs}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. '256x256') to (H, W), both positive."""
    try:
        height, width = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 160x240 (height x width), not {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return height, width


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(type to parse with, whether None is allowed) for annotations like `int | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_parser(cls: type, description: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with `--config FILE.yaml` and one flag per field of `cls`."""
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML file of field values; flags given here override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind, _ = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text:  # a help text may say in words what a None default means
            help_text += f" (default: {_shown_default(f)})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, nargs="?", const=True, default=None, type=_parse_bool,
                                help=help_text, metavar="BOOL")
        else:
            nargs = f.metadata.get("nargs")
            if nargs and typing.get_args(kind):  # list[int] -> parse each value as int
                kind = typing.get_args(kind)[0]
            parser.add_argument(flag, dest=f.name, default=None, type=f.metadata.get("parse") or kind, help=help_text,
                                choices=f.metadata.get("choices"), nargs=nargs)
    return parser


def _shown_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return None
    if isinstance(default, tuple) and len(default) == 2 and f.metadata.get("parse"):  # a size, as it is typed
        return "x".join(map(str, default))
    return default


def config_from_mapping(cls: type[C], values: Mapping[str, Any]) -> C:
    """Builds `cls` from a mapping, refusing unknown keys by name (a typo in YAML is an error, not a no-op)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    parsed = dict(values)
    for name, value in values.items():
        parse = fields[name].metadata.get("parse")
        if parse is not None and isinstance(value, str):  # a YAML string such as size: 64x64
            try:
                parsed[name] = parse(value)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"{name}: {exc}") from None
        elif isinstance(value, list) and fields[name].metadata.get("parse") is parse_size:
            parsed[name] = tuple(value)  # size: [64, 64]
    return cls(**parsed)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Defaults, then the YAML file of `--config`, then every flag given on the command line."""
    values: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of field names to values")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return config_from_mapping(cls, values)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Flat {name: value} for MLflow params; nested dataclasses and dicts become dotted names."""
    items = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    out: dict[str, Any] = {}
    for key, value in items.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def save_config(config: Any, path: str | Path) -> None:
    """Writes the resolved configuration as YAML (what was actually run, for the record and for re-runs)."""
    plain = json.loads(json.dumps(dataclasses.asdict(config), default=str))  # tuples as lists, paths as text
    Path(path).write_text(yaml.safe_dump(plain, sort_keys=False))
