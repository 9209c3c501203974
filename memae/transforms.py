"""Pixel conversions between stored uint8 frames and the model's [-1, 1] float input."""

from __future__ import annotations

import numpy as np
import torch


def clips_to_tensor(clips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 clips N x T x H x W x C (the stored layout) to float N x C x T x H x W in [-1, 1]."""
    clips = _as_tensor(clips)
    if clips.dim() != 5:
        raise ValueError(f"expected clips N x T x H x W x C, got shape {tuple(clips.shape)}")
    return clips.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images N x H x W x C to float N x C x H x W in [-1, 1]."""
    images = _as_tensor(images)
    if images.dim() != 4:
        raise ValueError(f"expected images N x H x W x C, got shape {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """Inverse of the above for display: [-1, 1] floats to uint8, channels kept where they are."""
    return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Read-only arrays (Arrow-backed batches) are copied: torch refuses to wrap memory it may not write."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array)
