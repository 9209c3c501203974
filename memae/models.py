"""MemAE networks: the 3D video autoencoder of the paper, its ablations, and a 2D variant for images.

The 3D network is layer for layer the official `AutoEncoderCov3DMem`, so its `state_dict` keys are the official
ones (`encoder.{0,1,3,...}`, `mem_rep.memory.weight`, `decoder.{0,1,3,...}`). A width multiplier scales every
channel count for CPU presets; width=1 is the paper's network (6,492,801 parameters for grey input, mem 2000).

    model = create_model("memae", in_channels=1)          # the paper's network
    out = model(clip)                                     # clip: N x C x 16 x 256 x 256 in [-1, 1]
    out["output"], out["att"]                             # reconstruction, N x 2000 x 2 x 16 x 16 weights
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from memae.memory import Addressing, MemModule

PAPER_WIDTHS_3D = (96, 128, 256, 256)
# Time, height and width shrink by these factors from input to memory (strides (1,2,2) then three times 2).
DOWNSAMPLING_3D = (8, 16, 16)


def init_weights(module: nn.Module) -> None:
    """The official initialisation: conv weights N(0, 0.02), batch-norm weights N(1, 0.02) and biases 0."""
    if isinstance(module, nn.modules.conv._ConvNd):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def scaled_widths(widths: Sequence[int], width: float) -> tuple[int, ...]:
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    return tuple(max(1, round(c * width)) for c in widths)


def _conv_block(conv: nn.Module, channels: int, batch_norm: type[nn.Module]) -> list[nn.Module]:
    return [conv, batch_norm(channels), nn.LeakyReLU(0.2, inplace=True)]


class MemAE3D(nn.Module):
    """Memory-augmented 3D convolutional autoencoder for 16-frame clips (the paper's video model).

    Args:
        in_channels: 1 for grey, 3 for RGB clips.
        mem_dim: memory slots N; ignored when `use_memory` is False.
        shrink_thres: hard-shrinkage lambda; 0 gives MemAE-nonSpar.
        use_memory: False gives the plain autoencoder ablation (the decoder reads the encoding directly).
        width: channel multiplier; 1.0 is the paper's network.
        addressing, temperature: see `memae.memory.MemoryUnit`.
        concat_query: MNAD-style reading (Park et al., CVPR 2020): the decoder gets the query and its memory read
            stacked along channels, so its first layer takes twice the channels. The query then bypasses the
            memory, which no longer bounds what the decoder can rebuild.
    """

    def __init__(
        self,
        in_channels: int = 1,
        mem_dim: int = 2000,
        shrink_thres: float = 0.0025,
        use_memory: bool = True,
        width: float = 1.0,
        addressing: Addressing = "dot",
        temperature: float = 1.0,
        concat_query: bool = False,
    ) -> None:
        super().__init__()
        if concat_query and not use_memory:
            raise ValueError("concat_query stacks the query with its memory read, so it needs the memory")
        c1, c2, c3, c4 = scaled_widths(PAPER_WIDTHS_3D, width)
        self.in_channels = in_channels
        self.feature_dim = c4
        self.concat_query = concat_query
        self.encoder = nn.Sequential(
            *_conv_block(nn.Conv3d(in_channels, c1, 3, stride=(1, 2, 2), padding=1), c1, nn.BatchNorm3d),
            *_conv_block(nn.Conv3d(c1, c2, 3, stride=2, padding=1), c2, nn.BatchNorm3d),
            *_conv_block(nn.Conv3d(c2, c3, 3, stride=2, padding=1), c3, nn.BatchNorm3d),
            *_conv_block(nn.Conv3d(c3, c4, 3, stride=2, padding=1), c4, nn.BatchNorm3d),
        )
        self.mem_rep = MemModule(mem_dim, c4, shrink_thres, addressing, temperature) if use_memory else None
        c_in = 2 * c4 if concat_query else c4  # into the decoder: MNAD-style reading stacks the query and its read
        self.decoder = nn.Sequential(
            *_conv_block(nn.ConvTranspose3d(c_in, c3, 3, stride=2, padding=1, output_padding=1), c3, nn.BatchNorm3d),
            *_conv_block(nn.ConvTranspose3d(c3, c2, 3, stride=2, padding=1, output_padding=1), c2, nn.BatchNorm3d),
            *_conv_block(nn.ConvTranspose3d(c2, c1, 3, stride=2, padding=1, output_padding=1), c1, nn.BatchNorm3d),
            nn.ConvTranspose3d(c1, in_channels, 3, stride=(1, 2, 2), padding=1, output_padding=(0, 1, 1)),
        )
        self.apply(init_weights)

    @property
    def uses_memory(self) -> bool:
        return self.mem_rep is not None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Returns {'output': reconstruction, 'att': memory weights, or None for the plain autoencoder}."""
        check_clip_shape(x, self.in_channels)
        return encode_remember_decode(self, x)


class AutoEncoderCov3DMem(MemAE3D):
    """The official class name and signature, so code written against the official repository runs as is."""

    def __init__(self, chnum_in: int, mem_dim: int, shrink_thres: float = 0.0025) -> None:
        super().__init__(in_channels=chnum_in, mem_dim=mem_dim, shrink_thres=shrink_thres)
        self.chnum_in = chnum_in


def encode_remember_decode(model: MemAE3D | MemAE2D, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Encoder, then the memory read (skipped by the plain autoencoder), then the decoder.

    The decoder reads the memory's output, or with MNAD-style reading (`MemAE3D.concat_query`) the query and the
    memory's output stacked along channels.
    """
    features = model.encoder(x)
    att = None
    if model.mem_rep is not None:
        read = model.mem_rep(features)
        att = read["att"]
        stack = getattr(model, "concat_query", False)  # MemAE2D has no MNAD-style reading
        features = torch.cat([features, read["output"]], dim=1) if stack else read["output"]
    return {"output": model.decoder(features), "att": att}


def check_clip_shape(x: torch.Tensor, in_channels: int) -> None:
    """Fails early with the rule, instead of a shape mismatch deep inside the decoder."""
    if x.dim() != 5 or x.shape[1] != in_channels:
        raise ValueError(f"expected clips N x {in_channels} x T x H x W, got shape {tuple(x.shape)}")
    if any(size % factor for size, factor in zip(x.shape[2:], DOWNSAMPLING_3D, strict=True)):
        raise ValueError(f"clip T, H, W must be divisible by {DOWNSAMPLING_3D}, got {tuple(x.shape[2:])}")


class MemAE2D(nn.Module):
    """Memory-augmented 2D autoencoder for small images (the paper's MNIST / CIFAR-10 experiments).

    The paper's appendix: encoder Conv2(1,2,16)-Conv2(3,2,32)-Conv2(3,2,64) for MNIST and (3,2,64)-(3,2,128)-
    (3,2,256) for CIFAR-10, written Conv2(kernel, stride, channels), each with batch norm and ReLU, a mirrored
    decoder of stride-2 transposed convolutions, memory over every position of the code. Images must have
    height and width divisible by 8; pixels in [-1, 1]. The first kernel is the paper's for the input: 1 for grey
    (MNIST), 3 for colour (CIFAR-10).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        mem_dim: int = 100,
        shrink_thres: float = 0.0025,
        use_memory: bool = True,
        addressing: Addressing = "dot",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.in_channels = in_channels
        kernel = 1 if in_channels == 1 else 3
        self.encoder = nn.Sequential(
            *_relu_block(nn.Conv2d(in_channels, c1, kernel, stride=2, padding=kernel // 2), c1),
            *_relu_block(nn.Conv2d(c1, c2, 3, stride=2, padding=1), c2),
            *_relu_block(nn.Conv2d(c2, c3, 3, stride=2, padding=1), c3),
        )
        self.mem_rep = MemModule(mem_dim, c3, shrink_thres, addressing, temperature) if use_memory else None
        self.decoder = nn.Sequential(
            *_relu_block(nn.ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1), c2),
            *_relu_block(nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), c1),
            nn.ConvTranspose2d(c1, in_channels, 3, stride=2, padding=1, output_padding=1),
        )
        self.apply(init_weights)

    @property
    def uses_memory(self) -> bool:
        return self.mem_rep is not None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(
                f"expected images N x {self.in_channels} x H x W with H, W divisible by 8, got {tuple(x.shape)}"
            )
        return encode_remember_decode(self, with_row_major_strides(x))


def with_row_major_strides(x: torch.Tensor) -> torch.Tensor:
    """`x` itself if its strides are plain N x C x H x W, else a copy that has them.

    Images permuted from N x H x W x C arrive channels-last, and on AVX2 CPUs oneDNN's weight gradient of a 1x1
    stride-2 convolution (this network's first layer) writes past its buffer for channels-last input with fewer
    than 8 channels (uxlfoundation/oneDNN#6035): heap corruption with one thread, both threads spinning forever
    with two. `contiguous()` does not help: a one-channel channels-last tensor already counts as contiguous.
    """
    strides, step = [], 1
    for size in reversed(x.shape):
        strides.insert(0, step)
        step *= size
    return x if list(x.stride()) == strides else x.clone(memory_format=torch.contiguous_format)


def _relu_block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


@dataclass(frozen=True)
class Variant:
    """One model of the paper's tables, or of the memory follow-ups. The ablations are the same network with a
    device switched off: MemAE-nonSpar drops both sparsity devices (hard shrinkage and the entropy loss), AE drops
    the memory. The follow-ups switch a device on: MNAD-style reading (`MemAE3D.concat_query`)."""

    network: Callable[..., nn.Module]
    memory: bool = True
    sparse: bool = True


# The registry: the one definition of each model and ablation.
VARIANTS: dict[str, Variant] = {
    "memae": Variant(MemAE3D),
    "memae-nonspar": Variant(MemAE3D, sparse=False),
    "ae": Variant(MemAE3D, memory=False),
    "memae-mnad": Variant(partial(MemAE3D, concat_query=True)),
    "memae2d": Variant(MemAE2D),
    "memae2d-nonspar": Variant(MemAE2D, sparse=False),
    "ae2d": Variant(MemAE2D, memory=False),
}


def list_models() -> list[str]:
    return sorted(VARIANTS)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}") from None


def is_image_model(name: str) -> bool:
    """True for the 2D (image) models, which take no width multiplier and no clip length."""
    return "2d" in name


def shrink_threshold(name: str, shrink_thres: float) -> float:
    """The hard-shrinkage lambda a model is built with: 0 for the variants without sparse addressing."""
    return shrink_thres if get_variant(name).sparse else 0.0


def entropy_weight(name: str, alpha: float) -> float:
    """The entropy-loss weight a model trains with: alpha for MemAE, 0 for its ablations (no sparsity, no memory)."""
    variant = get_variant(name)
    return alpha if variant.sparse and variant.memory else 0.0


def create_model(name: str, **kwargs) -> nn.Module:
    """Builds a registered model by name, e.g. `create_model("memae-nonspar", in_channels=1, width=0.25)`."""
    variant = get_variant(name)
    if not variant.sparse:
        kwargs["shrink_thres"] = 0.0
    if not variant.memory:
        kwargs["use_memory"] = False
    return variant.network(**kwargs)
