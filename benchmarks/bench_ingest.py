"""Ingest benchmark: raw decode speed, end-to-end ingest speed, shard size and peak memory, on the same files.

    python benchmarks/bench_ingest.py            # 8 videos x 250 frames of 360x640 (Avenue-sized), 1x and 10x
    python benchmarks/bench_ingest.py --size 64x64 --encodings binary

The corpus is the synthetic one (jobs/synth.py, MPEG-4 part 2 in .mp4); the 10x corpus hard-links the 1x files ten
times, so every figure is about the same bytes. Raw decode runs in this process on one core, reading every 1x file
sequentially; ingest runs `jobs/ingest.py` in a subprocess (a fresh local Ray with --num-cpus) while a sampler reads
/proc for the whole process tree (driver, Ray daemons, workers): the peak of its summed proportional set size (PSS,
so shared pages count once) and its CPU time.

Each speed is given twice: per wall-clock second, and per CPU second. On a machine shared with other work the wall
figures fall with the load (printed), the CPU figures hardly move; "ingest x cores per CPU second" is what an idle
machine would reach if the work spread over all cores, and the CPU target uses the marginal CPU cost of a frame
(from 1x to 10x, so Ray's start and imports cancel out). Targets: ingest >= 0.8x the fastest raw decode,
shard bytes <= 1.5x the raw uint8 frames, peak memory flat from 1x to 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="videos in the 1x corpus")
    parser.add_argument("--frames", type=int, default=250, help="frames per video")
    parser.add_argument("--source", default="360x640", help="HxW of the synthetic videos")
    parser.add_argument("--size", default="256x256", help="stored HxW (ingest --size)")
    parser.add_argument("--color", default="gray", choices=("gray", "rgb"))
    parser.add_argument("--scale", type=int, default=10, help="the large corpus is this many times the small one")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the ingest's local Ray")
    parser.add_argument("--encodings", default="tensor,binary", help="image column encodings to ingest with")
    parser.add_argument("--work", type=Path, default=Path("/tmp/memae-bench-ingest"), help="scratch folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    source = tuple(int(v) for v in args.source.split("x"))
    size = tuple(int(v) for v in args.size.split("x"))

    corpus = _corpus(args.work, args.videos, args.frames, source)
    files = sorted(corpus.rglob("*.mp4"))
    print(
        f"corpus: {len(files)} videos x {args.frames} frames of {source[0]}x{source[1]} "
        f"({args.videos * args.frames} frames), stored as {size[0]}x{size[1]} {args.color}; "
        f"{os.cpu_count()} cores; load average {_load()}"
    )
    figures: dict = {"load_average_start": _load(), "decode": {}, "ingest": {}, "targets": {}}
    print("\nraw decode, one process, every frame of every 1x file (frames/s: per wall second, per CPU second):")
    for name, fn in _decoders(size, args.color).items():
        wall, cpu = _rate(files, fn)
        figures["decode"][name] = {"wall_fps": round(wall), "cpu_fps": round(cpu)}
        print(f"  {name:<46} {wall:6.0f} {cpu:6.0f}")
    fastest_name = max(figures["decode"], key=lambda k: figures["decode"][k]["cpu_fps"])
    fastest = figures["decode"][fastest_name]
    figures["targets"]["fastest_raw_decoder"] = fastest_name

    print(f"\ningest (jobs/ingest.py --num-cpus {args.num_cpus}, fresh output folder):")
    for encoding in args.encodings.split(","):
        runs = figures["ingest"][encoding] = {}
        for scale in (1, args.scale):
            root = corpus if scale == 1 else _scaled(args.work, corpus, scale)
            out = args.work / f"out-{encoding}-{scale}x"
            run = runs[f"{scale}x"] = _ingest(root, out, args.size, args.color, args.num_cpus, encoding)
            print(
                f"  {encoding:<6} {scale:>2}x: {run['frames']:>6} frames in {run['wall_s']:5.1f} s wall "
                f"({run['ray_start_s']:.1f} s Ray start): {run['wall_fps']:5.0f} frames/s end to end, "
                f"{run['wall_fps_after_start']:5.0f} after Ray start, {run['cpu_fps_all_cores']:5.0f} x cores per "
                f"CPU second; shard/raw {run['shard_over_raw']:.3f}; peak PSS {run['peak_mib']:.0f} MiB "
                f"({run['peak_processes']} processes); load {run['load']}; exit {run['exit']}"
            )
        big, small = runs[f"{args.scale}x"], runs["1x"]
        # CPU per extra frame, from 1x to 10x: the fixed costs (Ray start, imports) cancel out
        marginal = (big["frames"] - small["frames"]) / max(1e-9, big["cpu_s"] - small["cpu_s"]) * args.num_cpus
        t = figures["targets"][encoding] = {
            "ingest_over_fastest_decode_wall": round(big["wall_fps_after_start"] / fastest["wall_fps"], 3),
            "ingest_marginal_cpu_fps_all_cores": round(marginal, 1),
            "ingest_over_fastest_decode_cpu": round(marginal / fastest["cpu_fps"], 3),
            "shard_over_raw": big["shard_over_raw"],
            "peak_memory_large_over_small": round(big["peak_mib"] / small["peak_mib"], 3),
        }
        print(
            f"  {encoding:<6} targets: ingest {args.scale}x / fastest raw decode ({fastest_name}) = "
            f"{t['ingest_over_fastest_decode_wall']:.2f} wall, {t['ingest_over_fastest_decode_cpu']:.2f} CPU "
            f"({marginal:.0f} frames x cores per marginal CPU second) (>= 0.8); "
            f"shard/raw {t['shard_over_raw']:.3f} (<= 1.5); peak memory {args.scale}x/1x "
            f"{t['peak_memory_large_over_small']:.2f} (flat)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def _corpus(work: Path, videos: int, frames: int, source: tuple[int, int]) -> Path:
    """The 1x synthetic corpus, reused when already written with the same parameters."""
    from experiments.synthetic import SynthConfig, write_corpus

    root = work / f"corpus-{videos}x{frames}-{source[0]}x{source[1]}"
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        cfg = SynthConfig(height=source[0], width=source[1], frames=frames, train_videos=videos, test_videos=0)
        write_corpus("videos", root, cfg)
        (root / ".complete").touch()
    return root


def _scaled(work: Path, corpus: Path, scale: int) -> Path:
    """`scale` hard-linked copies of the corpus, each in its own folder (ids become copyN__train__NN)."""
    root = work / f"{corpus.name}-x{scale}"
    shutil.rmtree(root, ignore_errors=True)
    for copy in range(scale):
        for path in corpus.rglob("*.mp4"):
            target = root / f"copy{copy}" / path.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    return root


def _decoders(size: tuple[int, int], color: str) -> dict[str, Callable[[Path], int]]:
    import decord

    height, width = size

    def decord_read(path: Path, post: Callable[[np.ndarray], object] | None = None, **kw) -> int:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **kw)
        count = 0
        while True:
            try:
                frame = reader.next().asnumpy()
            except StopIteration:
                break
            if post is not None:
                post(frame)
            count += 1
        del reader
        return count

    mode = "L" if color == "gray" else "RGB"
    pillow = lambda f: Image.fromarray(f).convert(mode).resize((width, height), Image.BILINEAR)  # noqa: E731
    pillow_color = lambda f: Image.fromarray(f).convert(mode)  # noqa: E731
    decoders = {
        "decord, full size": lambda p: decord_read(p),
        "decord, resized while decoding": lambda p: decord_read(p, width=width, height=height),
        f"decord, resized while decoding, {color} (ingest)": lambda p: decord_read(
            p, pillow_color, width=width, height=height
        ),
        f"decord full size, then Pillow {color} + resize": lambda p: decord_read(p, pillow),
    }
    try:
        import cv2
    except ImportError:
        return decoders

    def opencv_read(path: Path, resize: bool) -> int:
        capture = cv2.VideoCapture(str(path))
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if resize:
                cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            count += 1
        capture.release()
        return count

    cv2.setNumThreads(1)  # one core, like the other decoders
    resize = lambda f: cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)  # noqa: E731
    decoders["decord full size, then OpenCV resize"] = lambda p: decord_read(p, resize)
    decoders["OpenCV, full size"] = lambda p: opencv_read(p, False)
    decoders["OpenCV, full size, then resize"] = lambda p: opencv_read(p, True)
    return decoders


def _rate(files: list[Path], decode: Callable[[Path], int]) -> tuple[float, float]:
    """Frames per wall second and per CPU second, best of two passes over all files."""
    wall = cpu = 0.0
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        frames = sum(decode(path) for path in files)
        wall = max(wall, frames / (time.perf_counter() - start))
        cpu = max(cpu, frames / (time.process_time() - start_cpu))
    return wall, cpu


def _ingest(root: Path, out: Path, size: str, color: str, num_cpus: int, encoding: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--dataset", "videos", "--root", str(root)]
    command += ["--out", str(out), "--size", size, "--color", color, "--num-cpus", str(num_cpus)]
    command += ["--encoding", encoding]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sampler = _TreeSampler(process.pid)
    sampler.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    if process.returncode != 0:
        print(output)
    report = json.loads((out / "ingest_report.json").read_text())
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return {
        "frames": counts["frames"],
        "wall_s": round(wall, 2),
        "ray_start_s": report["ray_start_s"],
        "wall_fps": round(counts["frames"] / wall, 1),
        "wall_fps_after_start": report["frames_per_s"],
        "cpu_s": round(sampler.cpu_s, 2),
        "cpu_fps_all_cores": round(counts["frames"] / sampler.cpu_s * num_cpus, 1),
        "shard_bytes": counts["bytes"],
        "raw_bytes": counts["raw_bytes"],
        "shard_over_raw": round(counts["bytes"] / counts["raw_bytes"], 4),
        "peak_mib": round(sampler.peak / 2**20, 1),
        "peak_processes": sampler.processes,
        "load": _load(),
        "exit": process.returncode,
    }


class _TreeSampler(threading.Thread):
    """Every 0.1 s: summed PSS of a process and all its descendants (peak kept), and each one's CPU time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.processes = pid, 0, 0
        self._cpu_ticks: dict[int, int] = {}
        self._stop_event = threading.Event()

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_ticks.values()) / TICKS

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _descendants(self.pid)
            total = 0
            for pid in pids:
                total += _pss(pid)
                self._cpu_ticks[pid] = max(self._cpu_ticks.get(pid, 0), _cpu_ticks(pid))
            if total > self.peak:
                self.peak, self.processes = total, len(pids)
            self._stop_event.wait(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process (its own threads; reaped children are counted where they ran)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
