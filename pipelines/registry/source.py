"""Where the scoring job's model comes from, and the preprocessing that makes new footage look like its training data.

Four kinds of `--model`:

- `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/m-<id>`: a registered (or logged) model. Its artifacts are
  downloaded; the checkpoint inside is loaded as our own model (so actors get error maps, not only the pyfunc's
  scores) and its metadata gives clip length, frame size, colour, error and frame rules and the calibration of
  thresholds.
- `runs:/RUN_ID/model`: the same, by run.
- one of our checkpoint files: clip length, error and frame rules from its training config; frame size from the
  training corpus when it is still there, else the preset's.
- an official MemAE `.pt` state_dict: the paper's protocol, 16-frame clips of 256x256 grey frames, the l1 error,
  and each clip scoring its centre frame.

A model that does not name its frame rule (a checkpoint from before training stored one) is scored with
`memae.scoring.DEFAULT_FRAME_RULE`.

Flags override all of these. `ModelSource.key` names the model version in the incremental ledger: registry name and
version, run id, or the file's SHA-256, so a new champion rescores everything and an unchanged one skips work. It is
also a folder name under the scoring job's --out, so it is always one plain file-name component (`safe_name`).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memae.checkpoint import (
    CHECKPOINT_FORMAT,
    is_official_state_dict,
    model_from_checkpoint,
    official_model_from_state_dict,
)
from memae.files import safe_name
from memae.models import DOWNSAMPLING_3D, is_image_model
from memae.presets import ModelSpec, get_preset
from memae.scoring import DEFAULT_FRAME_RULE, FRAME_RULES
from pipelines.ingest.manifest import MANIFEST_FILE, Manifest

OFFICIAL_CLIP_LEN, OFFICIAL_SIZE, OFFICIAL_FRAME_RULE = 16, (256, 256), "centre"
MLFLOW_SCHEMES = ("models:/", "runs:/")


@dataclass
class ModelSource:
    """A loaded model and what it says about its input. None means "the model does not say"."""

    uri: str
    kind: str  # "registry", "run", "logged-model", "checkpoint" or "official"
    key: str
    spec: ModelSpec
    state: dict[str, torch.Tensor] = field(repr=False)
    clip_len: int | None = None
    frame_size: tuple[int, int] | None = None
    error_rule: str | None = None
    frame_rule: str | None = None
    calibration: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.spec.in_channels

    def build(self) -> nn.Module:
        """A fresh copy of the model with its weights, in eval mode."""
        model = self.spec.build()
        model.load_state_dict(self.state)
        return model.eval()


@dataclass(frozen=True)
class ScoringSettings:
    """What every clip looks like and how errors become frame scores; fixed for one model in one output folder."""

    clip_len: int
    height: int
    width: int
    channels: int
    stride: int
    error_rule: str
    frame_rule: str
    precision: str = "fp32"  # the model's arithmetic in the actors: bf16 only on GPUs (pipelines/score/actors.py)

    @property
    def color(self) -> str:
        return "gray" if self.channels == 1 else "rgb"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The fields added after the first release, with their defaults: what a setting recorded before its field
        existed must have been."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def load_model_source(uri: str) -> ModelSource:
    """Resolves and loads `--model`; raises ValueError with the reason when it cannot."""
    if uri.startswith(MLFLOW_SCHEMES):
        return _from_mlflow(uri)
    path = Path(uri).expanduser()
    if not path.is_file():
        raise ValueError(f"{uri}: no such model file, and not a models:/ or runs:/ URI")
    return _from_file(path.resolve())


def scoring_settings(source: ModelSource, config: Any, stored_shape: tuple[int, int, int] | None) -> ScoringSettings:
    """Flags, else the model's own preprocessing, else the stored frames' size; checked against the network.

    Args:
        source: the model.
        config: a ScoreConfig (clip_len, height, width, stride, error_rule, frame_rule).
        stored_shape: (H, W, C) of ingested shards being scored, which cannot be resized; None for raw archives.
    """
    frame_rule = config.frame_rule or source.frame_rule or DEFAULT_FRAME_RULE
    if frame_rule not in FRAME_RULES:
        raise ValueError(f"the model's frame rule {frame_rule!r} is not one of {FRAME_RULES}: give --frame-rule")
    clip_len = config.clip_len or source.clip_len or OFFICIAL_CLIP_LEN
    if stored_shape is None:
        model_size = source.frame_size or OFFICIAL_SIZE
        height, width = config.height or model_size[0], config.width or model_size[1]
    else:
        height, width, channels = stored_shape
        if (config.height or height, config.width or width) != (height, width):
            raise ValueError(f"--height/--width differ from the shards' {height}x{width} frames, which cannot be "
                             "resized: score the raw archive with --root instead")
        exact = source.kind in ("registry", "run", "logged-model") and source.frame_size is not None
        if exact and not (config.height or config.width) and source.frame_size != (height, width):
            size = source.frame_size
            raise ValueError(f"the shards hold {height}x{width} frames but the model was trained on {size[0]}x"
                             f"{size[1]}: ingest again with --size {size[0]}x{size[1]}, or score --root")
        if channels != source.channels:
            raise ValueError(f"the shards hold {channels}-channel frames but the model takes {source.channels}")
    t, h, w = DOWNSAMPLING_3D
    if clip_len % t or height % h or width % w:
        raise ValueError(f"clips of {clip_len} frames of {height}x{width} do not fit the network: the clip length must "
                         f"be a multiple of {t}, height and width multiples of {h}")
    return ScoringSettings(clip_len, height, width, source.channels, config.stride,
                           config.error_rule or source.error_rule or "l1", frame_rule)


def _from_file(path: Path) -> ModelSource:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or holding code rather than tensors
        raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    digest = _sha256(path)
    tags = {"memae.model_uri": str(path), "memae.model_sha256": digest}
    key = f"{safe_name(path.stem)}-{digest[:12]}"
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        model, spec = model_from_checkpoint(data)
        clip_len, size, rule = _training_preprocessing(data.get("config") or {})
        frame_rule = (data.get("config") or {}).get("frame_rule")
        return _checked(ModelSource(str(path), "checkpoint", key, spec, model.state_dict(), clip_len, size, rule,
                                    frame_rule, tags={**tags, "memae.model_kind": "checkpoint"}))
    if is_official_state_dict(data):
        model, spec = official_model_from_state_dict(data, str(path))
        return ModelSource(str(path), "official", key, spec, model.state_dict(), OFFICIAL_CLIP_LEN, OFFICIAL_SIZE,
                           "l1", OFFICIAL_FRAME_RULE, tags={**tags, "memae.model_kind": "official"})
    raise ValueError(f"{path}: neither a memae checkpoint nor an official MemAE state_dict")


def _training_preprocessing(config: dict[str, Any]) -> tuple[int | None, tuple[int, int] | None, str | None]:
    """(clip length, frame size, error rule) a checkpoint was trained with, from its stored TrainConfig."""
    preset = get_preset(config["preset"]) if config.get("preset") else None
    size = preset.frame_size if preset else None
    if config.get("shards") and (Path(config["shards"]) / MANIFEST_FILE).is_file():
        shape = Manifest.read(config["shards"]).frame_shape
        size = shape[:2] if shape else size
    return (preset.clip_len if preset else None), size, config.get("error_rule")


def _from_mlflow(uri: str) -> ModelSource:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        kind, key, tags = _mlflow_identity(uri)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            info = Model.load(folder)
            artifacts = info.flavors.get("python_function", {}).get("artifacts", {})
            if "checkpoint" not in artifacts:
                raise ValueError(f"{uri}: not a memae model (no 'checkpoint' artifact; was it logged by pipelines/"
                                 "registry/pyfunc.py?)")
            data = torch.load(folder / artifacts["checkpoint"]["path"], map_location="cpu", weights_only=True)
    except MlflowException as exc:
        raise ValueError(f"{uri}: {exc.message}") from None
    model, spec = model_from_checkpoint(data)
    meta = info.metadata or {}
    prep = meta.get("preprocessing") or {}
    size = (prep["height"], prep["width"]) if "height" in prep else None
    tags["memae.model_id"] = str(getattr(info, "model_id", "") or "")
    tags["memae.model_uri"] = uri
    return _checked(ModelSource(uri, kind, key, spec, model.state_dict(), prep.get("clip_len"), size,
                                prep.get("error_rule"), prep.get("frame_rule"), meta.get("calibration") or None, tags))


def _mlflow_identity(uri: str) -> tuple[str, str, dict[str, str]]:
    """(kind, ledger key, tags) of a models:/ or runs:/ URI, with the registry version an alias points at now."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/")[0]
        return "run", f"run-{safe_name(run_id)}", {"memae.model_kind": "run", "memae.model_run_id": run_id}
    body = uri.removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in body:
        name, number = body.split("/", 1)
        version = client.get_model_version(name, number)
    else:
        return "logged-model", safe_name(body), {"memae.model_kind": "logged-model"}
    tags = {"memae.model_kind": "registry", "memae.model_name": name, "memae.model_version": str(version.version),
            "memae.model_run_id": str(version.run_id or "")}
    return "registry", f"{safe_name(name)}-v{version.version}", tags


def _checked(source: ModelSource) -> ModelSource:
    if is_image_model(source.spec.arch):
        raise ValueError(f"{source.uri}: {source.spec.arch} is an image model; batch scoring takes video models")
    return source


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
