"""Named model presets: the paper's network, and smaller ones with the same code for CPUs and tests.

The full model costs about 33 GMACs per 16x256x256 clip, so CPU runs shrink the frames and the widths. A preset
fixes what the data and the network must agree on (clip length, frame size, channels) plus the memory size.

    spec = get_preset("cpu-small").model
    model = spec.build()

Every preset's lambda lies in the paper's band [1/N, 3/N] for its N slots (`memae.memory.shrink_for`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from torch import nn

from memae.memory import shrink_for
from memae.models import create_model, is_image_model, shrink_threshold


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model; saved with every checkpoint and registered model."""

    arch: str = "memae"  # a name from memae.models.list_models()
    in_channels: int = 1
    mem_dim: int = 2000
    shrink_thres: float = 0.0025  # the official code's; saved specs carry their own, so this default stays
    width: float = 1.0
    addressing: str = "dot"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        # The spec records what is built: an ablation without sparse addressing has no shrinkage.
        object.__setattr__(self, "shrink_thres", shrink_threshold(self.arch, self.shrink_thres))

    def build(self) -> nn.Module:
        kwargs = asdict(self)
        arch = kwargs.pop("arch")
        if is_image_model(arch):
            kwargs.pop("width")
        return create_model(arch, **kwargs)

    def with_arch(self, arch: str) -> ModelSpec:
        return replace(self, arch=arch)

    @property
    def shrink_per_slot(self) -> float:
        """lambda in units of 1/N, the paper's scale: it advises 1 to 3."""
        return self.shrink_thres * self.mem_dim


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    clip_len: int
    height: int
    width: int
    batch_size: int
    model: ModelSpec = field(default_factory=ModelSpec)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.height, self.width


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("paper", "the paper's network: 16x256x256 grey clips, full width, 2000 slots, lambda 2/N = 0.001 as "
               "the paper advises (--shrink-thres 0.0025 gives the official code's 5/N) (train on a GPU)",
               clip_len=16, height=256, width=256, batch_size=14,
               model=ModelSpec(mem_dim=2000, shrink_thres=shrink_for(2000, 2), width=1.0)),
        Preset("cpu-small", "16x64x64 clips, quarter width, 500 slots, lambda 1.25/N = 0.0025: trains in minutes on "
               "2 CPU cores", clip_len=16, height=64, width=64, batch_size=8,
               model=ModelSpec(mem_dim=500, shrink_thres=shrink_for(500, 1.25), width=0.25)),
        Preset("cpu-tiny", "8x32x32 clips, eighth width, 100 slots, lambda 2/N = 0.02: for tests and smoke runs",
               clip_len=8, height=32, width=32, batch_size=4,
               model=ModelSpec(mem_dim=100, shrink_thres=shrink_for(100, 2), width=0.125)),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
