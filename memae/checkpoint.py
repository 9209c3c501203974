"""Checkpoint files: ours (model, optimizer, epoch, config) and the official MemAE `.pt` state_dicts.

Everything loads with `torch.load(..., weights_only=True)`: a checkpoint is data, never code. Writes go to a
temporary file in the same folder and are renamed into place, so a killed run never leaves half a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from memae.files import atomic_write
from memae.models import AutoEncoderCov3DMem
from memae.presets import ModelSpec

CHECKPOINT_FORMAT = "memae-checkpoint-v1"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    spec: ModelSpec,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Writes model weights with the spec that rebuilds them, plus what a resumed run needs."""
    data = {
        "format": CHECKPOINT_FORMAT,
        "model_spec": asdict(spec),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "config": dict(config or {}),
        "extra": dict(extra or {}),
    }
    with atomic_write(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads one of our checkpoints; refuses files of another format with a clear message."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a memae checkpoint (for an official MemAE .pt use load_official_model)")
    return data


def model_from_checkpoint(data: Mapping[str, Any]) -> tuple[nn.Module, ModelSpec]:
    spec = ModelSpec(**data["model_spec"])
    model = spec.build()
    model.load_state_dict(data["model"])
    return model, spec


def is_official_state_dict(state: Mapping[str, Any]) -> bool:
    return isinstance(state, Mapping) and "mem_rep.memory.weight" in strip_module_prefix(state)


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drops the `module.` prefix that DataParallel adds to every key."""
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_official_model(
    path: str | os.PathLike, shrink_thres: float = 0.0025, map_location: str | torch.device = "cpu"
) -> tuple[AutoEncoderCov3DMem, ModelSpec]:
    """Builds `AutoEncoderCov3DMem` from an official MemAE `.pt` (a plain state_dict) and loads it strictly.

    The shrink threshold is not stored in the file, so the official default 0.0025 is assumed unless given.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    return official_model_from_state_dict(state, str(path), shrink_thres)


def official_model_from_state_dict(
    state: Mapping[str, Any], source: str, shrink_thres: float = 0.0025
) -> tuple[AutoEncoderCov3DMem, ModelSpec]:
    """Channels and memory size come from the tensors' shapes; `source` names the file in errors."""
    if not is_official_state_dict(state):
        raise ValueError(f"{source}: not an official MemAE state_dict (no 'mem_rep.memory.weight' key)")
    state = strip_module_prefix(state)
    in_channels = state["encoder.0.weight"].shape[1]
    mem_dim = state["mem_rep.memory.weight"].shape[0]
    model = AutoEncoderCov3DMem(chnum_in=in_channels, mem_dim=mem_dim, shrink_thres=shrink_thres)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{source}: state_dict does not match the official architecture: {err}") from None
    spec = ModelSpec(arch="memae", in_channels=in_channels, mem_dim=mem_dim, shrink_thres=shrink_thres)
    return model, spec


def load_any_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Loads either one of our checkpoints or an official `.pt`, whichever the file is."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        return model_from_checkpoint(data)
    if is_official_state_dict(data):
        return official_model_from_state_dict(data, str(path))
    raise ValueError(f"{path}: neither a memae checkpoint nor an official MemAE state_dict")
