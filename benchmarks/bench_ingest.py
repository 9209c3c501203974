"""Ingest benchmark: raw decode speed, end-to-end ingest speed, shard size and peak memory, on the same files.

    python benchmarks/bench_ingest.py     # 12 videos x 250 frames of 480x640 H.264; stored 256x256 and 64x64; 1x, 10x
    python benchmarks/bench_ingest.py --codec mpeg4 --sizes 64x64 --encodings binary,tensor --decoder decord

The corpus is the synthetic scene (experiments/synthetic.py) encoded as H.264 through PyAV (the `bench` extra) or as
MPEG-4 part 2 by OpenCV, as benchmarks/bench_decode.py writes it; the 10x corpus hard-links the 1x files ten times,
so every figure is about the same bytes. Raw decode runs in this process, reading every 1x file sequentially at full
size with each decoder's fastest plain call (what a program that only wanted frames would do); ingest runs
`jobs/ingest.py` in a subprocess (a fresh local Ray with --num-cpus) while a sampler reads /proc for the whole
process tree (driver, Ray daemons, workers): the peak of its summed proportional set size (PSS, so shared pages count
once) and its CPU time.

Each speed is given twice: per wall-clock second, and per CPU second. On a machine shared with other work the wall
figures fall with the load (printed), the CPU figures move less; "ingest x cores per CPU second" is what an idle
machine would reach if the work spread over all cores. The targets compare like with like, frames per CPU second:
ingest's marginal CPU cost of a frame (from 1x to 10x, so Ray's start and imports cancel out; all its processes,
and Ray's task workers alone, which leaves out the polling of Ray's daemons and agents and of Ray Data's own actors,
which grows with the wall time of a loaded machine)
against the fastest raw decode's. Targets, per stored size: ingest >= 0.8x the fastest raw decode, shard bytes
<= 1.5x the raw uint8 frames, peak memory flat from 1x to 10x.
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

from bench_decode import corpus, rate

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12, help="videos in the 1x corpus")
    parser.add_argument("--frames", type=int, default=250, help="frames per video")
    parser.add_argument("--source", default="480x640", help="HxW of the synthetic videos")
    parser.add_argument("--codec", default="h264", choices=("h264", "mpeg4"), help="how the corpus is encoded")
    parser.add_argument("--sizes", default="256x256,64x64", help="stored HxW (ingest --size), one run set each")
    parser.add_argument("--color", default="gray", choices=("gray", "rgb"))
    parser.add_argument("--scale", type=int, default=10, help="the large corpus is this many times the small one")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the ingest's local Ray")
    parser.add_argument("--encodings", default="binary", help="image column encodings to ingest with (binary,tensor)")
    parser.add_argument("--decoder", default="auto", help="ingest --decoder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/memae-bench-ingest"), help="scratch folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    source = tuple(int(v) for v in args.source.split("x"))

    files = corpus(args.work, args.codec, args.videos, args.frames, source)
    root = files[0].parent
    print(
        f"corpus: {len(files)} {args.codec} videos x {args.frames} frames of {source[0]}x{source[1]} "
        f"({args.videos * args.frames} frames), stored {args.color} at {args.sizes}; ingest --decoder {args.decoder}; "
        f"{os.cpu_count()} cores; load average {_load()}"
    )
    figures: dict = {"load_average_start": _load(), "decode": {}, "ingest": {}, "targets": {}}
    print("\nraw decode at full size, one process, every frame of every 1x file (frames/s: per wall second, "
          "per CPU second):")
    for name, fn in _decoders().items():
        wall, cpu = rate(files, fn)
        figures["decode"][name] = {"wall_fps": round(wall), "cpu_fps": round(cpu)}
        print(f"  {name:<52} {wall:6.0f} {cpu:6.0f}", flush=True)
    fastest_name = max(figures["decode"], key=lambda k: figures["decode"][k]["cpu_fps"])
    fastest = figures["decode"][fastest_name]
    figures["targets"]["fastest_raw_decoder"] = fastest_name
    big_root = _scaled(args.work, root, args.scale)

    summary = []
    for size in args.sizes.split(","):
        print(f"\ningest at {size} (jobs/ingest.py --num-cpus {args.num_cpus}, fresh output folder):")
        for encoding in args.encodings.split(","):
            key = f"{size} {encoding}"
            runs = figures["ingest"][key] = {}
            for scale in (1, args.scale):
                out = args.work / f"out-{size}-{encoding}-{scale}x"
                run = runs[f"{scale}x"] = _ingest(root if scale == 1 else big_root, out, size, args.color,
                                                  args.num_cpus, encoding, args.decoder)
                print(
                    f"  {encoding:<6} {scale:>2}x: {run['frames']:>6} frames in {run['wall_s']:5.1f} s wall "
                    f"({run['ray_start_s']:.1f} s Ray start): {run['wall_fps']:5.0f} frames/s end to end, "
                    f"{run['wall_fps_after_start']:5.0f} after Ray start, {run['cpu_fps_all_cores']:5.0f} x cores "
                    f"per CPU second; shard/raw {run['shard_over_raw']:.3f}; peak PSS {run['peak_mib']:.0f} MiB "
                    f"({run['peak_processes']} processes); CPU s {run['cpu_s_by_process']}; load {run['load']}; "
                    f"exit {run['exit']}", flush=True
                )
            big, small = runs[f"{args.scale}x"], runs["1x"]
            # CPU per extra frame, from 1x to 10x: the fixed costs (Ray start, imports) cancel out
            extra = big["frames"] - small["frames"]
            marginal = extra / max(1e-9, big["cpu_s"] - small["cpu_s"])  # frames per CPU second, all processes
            workers = extra / max(1e-9, big["cpu_s_by_process"].get("workers", 0)
                                  - small["cpu_s_by_process"].get("workers", 0))
            t = figures["targets"][key] = {
                "ingest_over_fastest_decode_wall": round(big["wall_fps_after_start"] / fastest["wall_fps"], 3),
                "ingest_marginal_cpu_fps": round(marginal, 1),
                "ingest_over_fastest_decode_cpu": round(marginal / fastest["cpu_fps"], 3),
                "ingest_workers_cpu_fps": round(workers, 1),
                "ingest_workers_over_fastest_decode_cpu": round(workers / fastest["cpu_fps"], 3),
                "shard_over_raw": big["shard_over_raw"],
                "peak_memory_large_over_small": round(big["peak_mib"] / small["peak_mib"], 3),
            }
            line = (
                f"{size} {encoding}: ingest {args.scale}x / fastest raw decode ({fastest_name}) = "
                f"{t['ingest_over_fastest_decode_wall']:.2f} wall, {t['ingest_over_fastest_decode_cpu']:.2f} per CPU "
                f"second ({marginal:.0f} frames per marginal CPU second of the whole tree; Ray's task workers alone "
                f"{workers:.0f}, {t['ingest_workers_over_fastest_decode_cpu']:.2f}) (>= 0.8); "
                f"shard bytes / raw frame bytes {t['shard_over_raw']:.3f} (<= 1.5); peak memory {args.scale}x/1x "
                f"{t['peak_memory_large_over_small']:.2f} (flat)"
            )
            print(f"  {line}")
            summary.append(line)
    print(f"\nsummary (load average now {_load()}):")
    for line in summary:
        print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


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


def _decoders() -> dict[str, Callable[[Path], int]]:
    """Each installed decoder's fastest plain full-size reads, as a program that only wanted frames would write them."""
    from memae.datasets.decode import decoder_status

    status = decoder_status()
    decoders: dict[str, Callable[[Path], int]] = {}
    if status["decord"] is None:
        import decord

        def decord_read(path: Path) -> int:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            count = 0
            while True:
                try:
                    reader.next().asnumpy()
                except StopIteration:
                    break
                count += 1
            del reader
            return count

        decoders["decord, RGB"] = decord_read
    if status["opencv"] is None:
        import cv2

        def opencv_read(path: Path, params: list[int]) -> int:
            capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
            count = 0
            while capture.read()[0]:
                count += 1
            capture.release()
            return count

        cv2.setNumThreads(1)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # it warns on every raw-plane frame
        one = [cv2.CAP_PROP_N_THREADS, 1]
        decoders["OpenCV, BGR (FFmpeg's own threads)"] = lambda p: opencv_read(p, [])
        decoders["OpenCV, BGR, one thread"] = lambda p: opencv_read(p, one)
        luma = [*one, cv2.CAP_PROP_CONVERT_RGB, 0]
        decoders["OpenCV, luma plane (gray), one thread"] = lambda p: opencv_read(p, luma)
    if status["torchcodec"] is None:
        from torchcodec.decoders import VideoDecoder

        def torchcodec_read(path: Path) -> int:
            decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="approximate")
            count = 0
            for start in range(0, decoder.metadata.num_frames, 128):
                count += len(decoder.get_frames_in_range(start, min(decoder.metadata.num_frames, start + 128)).data)
            return count

        decoders["torchcodec, RGB, one thread"] = torchcodec_read
    return decoders


def _ingest(root: Path, out: Path, size: str, color: str, num_cpus: int, encoding: str, decoder: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--dataset", "videos", "--root", str(root)]
    command += ["--out", str(out), "--size", size, "--color", color, "--num-cpus", str(num_cpus)]
    command += ["--encoding", encoding, "--decoder", decoder]
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
        "cpu_s_by_process": sampler.cpu_by_kind(),
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
        self._kinds: dict[int, str] = {}
        self._stop_event = threading.Event()

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds of the driver, Ray's daemons, Ray workers and anything else in the tree."""
        out: dict[str, float] = {}
        for pid, ticks in self._cpu_ticks.items():
            kind = self._kinds.get(pid, "other")
            out[kind] = out.get(kind, 0.0) + ticks / TICKS
        return {k: round(v, 2) for k, v in sorted(out.items())}

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
                kind = "driver" if pid == self.pid else _kind(pid)
                if kind == "ray actors" or self._kinds.get(pid, "other") == "other":  # actors start as idle workers
                    self._kinds[pid] = kind
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


def _kind(pid: int) -> str:
    """'workers' for Ray's task workers (decoding and writing), 'ray actors' for Ray's agents and Ray Data's own
    actors (which poll for the whole run), 'ray daemons' for the rest of Ray."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if command.startswith("ray::") and command.split()[0].endswith(("Agent", "Actor")):
        return "ray actors"
    if command.startswith("ray::") or "default_worker.py" in command:
        return "workers"
    return "ray daemons" if "ray" in command else "other"


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
