"""Decoder benchmark: frames/s of each video backend, per stored size and colour, on generated H.264 and MPEG-4 videos.

    python benchmarks/bench_decode.py                          # 4 videos x 250 frames of 480x640, H.264 and MPEG-4
    python benchmarks/bench_decode.py --codecs h264 --videos 12 --sizes native,256x256

Every figure decodes every frame of every file through `memae.datasets.decode.iter_frames(..., decoder=NAME)`, the
code ingest runs, in this process, one file after another: what one ingest worker does on one core. decord resizes
while decoding; OpenCV and torchcodec decode at full size and resize after (memae/datasets/decoders.py). Each is
given per wall-clock second and per CPU second of this process (all its threads), best of two passes: on a machine
shared with other work the wall figures fall with the load (printed), the CPU figures hardly move. Backends that
cannot be imported here are listed with the reason and skipped.

The corpus is the synthetic surveillance scene (experiments/synthetic.py) at the source size: MPEG-4 part 2 as the
project writes it (OpenCV, mp4v), H.264 (libx264, yuv420p, its default settings) through PyAV, which the `bench`
extra installs (`pip install -e ".[bench]"`); without PyAV the H.264 corpus is skipped and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

CODECS = ("h264", "mpeg4")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="videos per corpus")
    parser.add_argument("--frames", type=int, default=250, help="frames per video")
    parser.add_argument("--source", default="480x640", help="HxW of the generated videos")
    parser.add_argument("--codecs", default=",".join(CODECS), help="corpora to generate: h264, mpeg4")
    parser.add_argument("--sizes", default="native,256x256,64x64", help="stored sizes, HxW or native")
    parser.add_argument("--colors", default="gray,rgb", help="stored colours")
    parser.add_argument("--work", type=Path, default=Path("/tmp/memae-bench-decode"), help="scratch folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from memae.datasets.decode import DECODERS, decoder_status

    source = parse_hw(args.source)
    status = decoder_status()
    backends = [name for name in DECODERS if status[name] is None]
    print(f"{os.cpu_count()} cores; load average {load()}; backends: {', '.join(backends)}")
    for name in DECODERS:
        if status[name] is not None:
            print(f"  {name} skipped: {status[name]}")
    figures: dict = {"load_average_start": load(), "skipped": {n: r for n, r in status.items() if r}, "rates": []}
    for codec in args.codecs.split(","):
        try:
            files = corpus(args.work, codec, args.videos, args.frames, source)
        except ImportError as exc:
            print(f"\n{codec}: skipped ({exc})")
            continue
        print(f"\n{codec}: {len(files)} videos x {args.frames} frames of {source[0]}x{source[1]} "
              f"({args.videos * args.frames} frames); frames/s per wall second / per CPU second")
        header = "".join(f"{name:>16}" for name in backends)
        print(f"  {'stored as':<18}{header}")
        for size_text in args.sizes.split(","):
            size = None if size_text == "native" else parse_hw(size_text)
            for color in args.colors.split(","):
                cells = []
                for name in backends:
                    wall, cpu = rate(files, decode_with(name, size, color))
                    figures["rates"].append({"codec": codec, "size": size_text, "color": color, "decoder": name,
                                             "wall_fps": round(wall), "cpu_fps": round(cpu)})
                    cells.append(f"{wall:7.0f} /{cpu:6.0f}")
                print(f"  {size_text + ' ' + color:<18}" + "".join(f"{c:>16}" for c in cells), flush=True)
    print(f"\nload average at the end {load()}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def decode_with(decoder: str, size: tuple[int, int] | None, color: str) -> Callable[[Path], int]:
    """A function decoding every frame of one file as ingest would, returning how many it decoded."""
    from memae.datasets.decode import Preprocess, iter_frames
    from memae.datasets.records import VideoRecord

    prep = Preprocess(size, color)

    def run(path: Path) -> int:
        record = VideoRecord(path.name, "train", path)
        return sum(len(chunk) for chunk in iter_frames(record, prep, chunk=128, decoder=decoder))

    return run


def rate(files: list[Path], decode: Callable[[Path], int]) -> tuple[float, float]:
    """Frames per wall second and per CPU second of this process, best of two passes over all files."""
    wall = cpu = 0.0
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        frames = sum(decode(path) for path in files)
        wall = max(wall, frames / (time.perf_counter() - start))
        cpu = max(cpu, frames / max(1e-9, time.process_time() - start_cpu))
    return wall, cpu


def corpus(work: Path, codec: str, videos: int, frames: int, source: tuple[int, int]) -> list[Path]:
    """`videos` synthetic videos of `codec`, reused when already written with the same parameters.

    Raises:
        ImportError: H.264 asked for without PyAV.
    """
    from experiments.synthetic import SynthConfig, render_video, write_video

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")
    if codec == "h264":
        import av  # noqa: F401  (fails here, before anything is written, when PyAV is missing)
    root = work / f"{codec}-{videos}x{frames}-{source[0]}x{source[1]}"
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        cfg = SynthConfig(height=source[0], width=source[1], frames=frames, train_videos=videos, test_videos=0)
        for index in range(videos):
            rendered = render_video(cfg, "train", index).frames
            path = root / f"{index:03d}.mp4"
            if codec == "h264":
                write_h264(path, rendered, cfg.fps)
            else:
                write_video(path, rendered, cfg.fps)
        (root / ".complete").touch()
    return sorted(root.glob("*.mp4"))


def write_h264(path: Path, frames, fps: float) -> Path:
    """RGB frames (T, H, W, 3) as H.264 (libx264, yuv420p, its default preset and CRF) in .mp4, through PyAV."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def parse_hw(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
