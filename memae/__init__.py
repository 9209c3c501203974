"""memae: MemAE (Gong et al., ICCV 2019) for video anomaly detection. The model library; it never imports Ray.

    from memae import AutoEncoderCov3DMem
    model = AutoEncoderCov3DMem(chnum_in=1, mem_dim=2000)
    out = model(clip)            # {'output': reconstruction, 'att': memory weights}

Names are imported on first use (PEP 562), so `import memae.datasets` in a decoding worker does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "load_any_model": "memae.checkpoint",
    "load_checkpoint": "memae.checkpoint",
    "load_official_model": "memae.checkpoint",
    "save_checkpoint": "memae.checkpoint",
    "MemoryUsage": "memae.diagnostics",
    "MemoryUsageAccumulator": "memae.diagnostics",
    "memory_usage": "memae.diagnostics",
    "entropy_loss": "memae.losses",
    "memae_loss": "memae.losses",
    "MemModule": "memae.memory",
    "MemoryUnit": "memae.memory",
    "hard_shrink_relu": "memae.memory",
    "FrameMetrics": "memae.metrics",
    "frame_metrics": "memae.metrics",
    "AutoEncoderCov3DMem": "memae.models",
    "MemAE2D": "memae.models",
    "MemAE3D": "memae.models",
    "create_model": "memae.models",
    "list_models": "memae.models",
    "PRESETS": "memae.presets",
    "ModelSpec": "memae.presets",
    "Preset": "memae.presets",
    "get_preset": "memae.presets",
    "GlobalNormalizer": "memae.scoring",
    "anomaly_score": "memae.scoring",
    "clip_errors": "memae.scoring",
    "error_maps": "memae.scoring",
    "frames_from_clips": "memae.scoring",
    "normality": "memae.scoring",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'memae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
