"""The training step and epoch, in plain PyTorch: the Ray Train loop and the bare-loop benchmark both call these.

    for epoch in range(epochs):
        set_shrink_threshold(model, linear_warmup(spec.shrink_thres, epoch, warmup_epochs))  # optional warm-up
        result = train_one_epoch(model, optimizer, batches, alpha=linear_warmup(0.0002, epoch, warmup_epochs))
        print(result.loss, result.memory.active_query_fraction)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from memae.checkpoint import unwrap
from memae.diagnostics import MemoryUsage, MemoryUsageAccumulator
from memae.losses import DEFAULT_ALPHA, memae_loss


@dataclass
class EpochResult:
    loss: float
    reconstruction: float
    entropy: float
    steps: int
    clips: int
    seconds: float
    memory: MemoryUsage | None = None
    stopped_early: bool = False  # the step or time budget ran out inside the epoch
    losses: list[float] = field(default_factory=list)  # per step, for curves

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        out = {
            "train_loss": self.loss,
            "train_reconstruction": self.reconstruction,
            "train_entropy": self.entropy,
            "train_clips_per_s": self.clips_per_second,
        }
        if self.memory is not None:
            out.update(self.memory.as_dict())
        return out


def memory_dim(model: nn.Module) -> int | None:
    """Slots of the model's memory, or None for the plain autoencoder (also through DDP wrappers)."""
    bare = unwrap(model)
    return bare.mem_rep.mem_dim if getattr(bare, "mem_rep", None) is not None else None


def linear_warmup(target: float, elapsed: float, duration: float) -> float:
    """`target` ramped linearly from 0: 0 at elapsed 0, `target` from elapsed >= duration (epochs or steps).

    Warming up lambda and alpha lets the addressing sharpen before shrinkage zeroes the weights of queries that
    match no slot yet; duration 0 gives `target` throughout, the official recipe.
    """
    if duration < 0 or elapsed < 0:
        raise ValueError(f"elapsed and duration must be non-negative, got {elapsed} and {duration}")
    if duration == 0:
        return target
    return target * min(1.0, elapsed / duration)


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on GPUs when asked; full precision elsewhere."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def memory_format_for(device: torch.device, channels_last: bool) -> torch.memory_format:
    """channels_last_3d (NDHWC) on GPUs when asked, where cuDNN may pick faster 3D convolutions; as is elsewhere."""
    return torch.channels_last_3d if channels_last and device.type == "cuda" else torch.preserve_format


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[torch.Tensor],
    alpha: float = DEFAULT_ALPHA,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    should_stop: Callable[[int], bool] | None = None,
    channels_last: bool = False,
) -> EpochResult:
    """One pass over `batches` of [-1, 1] clips, stopping early once `should_stop(steps so far)` says so.

    `should_stop` carries the step and time budgets; under DDP it must agree on every rank. Memory diagnostics
    come from the same forward passes as the loss, so they cost nothing extra. `channels_last` sends the batches in
    channels_last_3d on GPUs (the model should be converted alike: `model.to(memory_format=...)`).
    """
    device = torch.device(device)
    memory_format = memory_format_for(device, channels_last)
    model.train()
    mem_dim = memory_dim(model)
    usage = MemoryUsageAccumulator(mem_dim) if mem_dim else None
    totals = torch.zeros(3, dtype=torch.float64)
    steps = clips = 0
    losses: list[float] = []
    stopped = False
    start = time.perf_counter()
    for x in batches:
        if should_stop is not None and should_stop(steps):
            stopped = True
            break
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, bf16):
            output = model(x)
            parts = memae_loss(x, {"output": output["output"].float(), "att": output["att"]}, alpha)
        parts.total.backward()
        optimizer.step()
        n = x.shape[0]
        values = torch.stack([parts.total.detach(), parts.reconstruction.detach(), parts.entropy.detach()])
        totals += values.double().cpu() * n
        losses.append(float(values[0]))
        steps += 1
        clips += n
        if usage is not None:
            usage.update(output["att"].float())
    seconds = time.perf_counter() - start
    mean = (totals / max(clips, 1)).tolist()
    return EpochResult(
        loss=mean[0], reconstruction=mean[1], entropy=mean[2], steps=steps, clips=clips, seconds=seconds,
        memory=usage.result() if usage is not None else None, stopped_early=stopped, losses=losses,
    )
