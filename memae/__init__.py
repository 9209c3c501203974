"""memae: MemAE (Gong et al., ICCV 2019) for video anomaly detection. The model library; it never imports Ray.

    from memae import AutoEncoderCov3DMem
    model = AutoEncoderCov3DMem(chnum_in=1, mem_dim=2000)
    out = model(clip)            # {'output': reconstruction, 'att': memory weights}
"""

from memae.checkpoint import load_any_model, load_checkpoint, load_official_model, save_checkpoint
from memae.diagnostics import MemoryUsage, MemoryUsageAccumulator, memory_usage
from memae.losses import entropy_loss, memae_loss
from memae.memory import MemModule, MemoryUnit, hard_shrink_relu
from memae.metrics import FrameMetrics, frame_metrics
from memae.models import AutoEncoderCov3DMem, MemAE2D, MemAE3D, create_model, list_models
from memae.presets import PRESETS, ModelSpec, Preset, get_preset
from memae.scoring import GlobalNormalizer, anomaly_score, clip_errors, error_maps, frames_from_clips, normality

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AutoEncoderCov3DMem",
    "FrameMetrics",
    "GlobalNormalizer",
    "MemAE2D",
    "MemAE3D",
    "MemModule",
    "MemoryUnit",
    "MemoryUsage",
    "MemoryUsageAccumulator",
    "ModelSpec",
    "Preset",
    "anomaly_score",
    "clip_errors",
    "create_model",
    "entropy_loss",
    "error_maps",
    "frame_metrics",
    "frames_from_clips",
    "get_preset",
    "hard_shrink_relu",
    "list_models",
    "load_any_model",
    "load_checkpoint",
    "load_official_model",
    "memae_loss",
    "memory_usage",
    "normality",
    "save_checkpoint",
]
