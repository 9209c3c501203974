"""Times the MemAE forward pass and training step per clip on this machine, for any preset or clip size.

    python benchmarks/bench_model.py                       # the paper's network at 16x64x96 and 16x256x256
    python benchmarks/bench_model.py --preset cpu-small    # a CPU preset at its own clip size
"""

from __future__ import annotations

import argparse
import time

import torch

from memae.losses import memae_loss
from memae.presets import get_preset


def seconds_per_call(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench(preset_name: str, size: tuple[int, int, int], batch: int, repeats: int) -> None:
    spec = get_preset(preset_name).model
    model = spec.build()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(batch, spec.in_channels, *size) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        memae_loss(x, model(x)).total.backward()
        optimizer.step()

    @torch.no_grad()
    def forward() -> None:
        model(x)

    model.train()
    train = seconds_per_call(train_step, repeats)
    model.eval()
    infer = seconds_per_call(forward, repeats)
    t, h, w = size
    print(f"{preset_name:>10} {t}x{h}x{w} batch {batch}: {params:,} params | "
          f"train {train / batch:.3f} s/clip ({batch / train:.2f} clips/s) | "
          f"forward {infer / batch:.3f} s/clip ({batch / infer:.2f} clips/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", action="append", help="TxHxW; repeatable (default: the preset's, or the paper's "
                        "two sizes for --preset paper)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = get_preset(args.preset)
    if args.size:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.size]
    elif args.preset == "paper":
        sizes = [(16, 64, 96), (16, 256, 256)]
    else:
        sizes = [(preset.clip_len, preset.height, preset.width)]
    print(f"torch {torch.__version__}, {args.threads} threads")
    for size in sizes:
        bench(args.preset, size, args.batch, args.repeats)


if __name__ == "__main__":
    main()
