"""Ledger cost per video at 1e3, 1e4 and 1e5 entries: recording a finished video and asking whether a video is done,
against the ledger.json of earlier versions, which was rewritten whole after every video.

    python benchmarks/bench_ledger.py                                # 1e3, 1e4, 1e5 entries in a temporary folder
    python benchmarks/bench_ledger.py --dir /srv/scores/tmp-bench    # on the disk the nightly --out lives on

For each size, one model's section of that many finished videos, then:

- json save: writing that ledger.json once (atomically, synced), what every finished video cost before (mean of
  --json-saves);
- migrate: opening that folder the first time, which moves ledger.json into ledger.sqlite (once per folder);
- open: opening the ledger and loading the section (once per run);
- record: `Ledger.record` of one more finished video, one synced transaction (mean of --records);
- done?: `Ledger.is_done` of a random recorded video, the question the planner asks per listed video (a dictionary
  lookup and one stat of its per-video file; mean of --lookups).

Times depend on the disk (the syncs) and on what else the machine does; the point is how they grow with the size.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from memae.files import write_json_atomic
from pipelines.score.ledger import LEDGER_FILE, LEGACY_FILE, LEGACY_FORMAT, Ledger, LedgerEntry, Stamp

MODEL = "memae-cctv-v7"
SETTINGS = {"clip_len": 16, "height": 256, "width": 256, "channels": 1, "stride": 1, "error_rule": "l1",
            "frame_rule": "mean"}


def entry(i: int) -> tuple[str, dict]:
    """(key, JSON entry) of a plausible finished video: an hour of one camera."""
    video_id = f"cam{i % 97:02d}/2025-{1 + i // 3000 % 12:02d}-{1 + i // 100 % 28:02d}/{i:06d}.mp4"
    return f"train/{video_id}", {
        "video_id": video_id, "split": "train", "source": f"/srv/cctv/{video_id}", "num_frames": 90000,
        "num_clips": 89985, "fps": 25.0, "file": f"scored/{MODEL}/train/{video_id.replace('/', '_')}.parquet",
        "scored_at": "2025-06-01T03:12:45+00:00",
    }


def legacy_ledger(size: int) -> dict:
    videos = dict(entry(i) for i in range(size))
    return {"format": LEGACY_FORMAT, "models": {MODEL: {"model": {"memae.model_name": "cctv"}, "settings": SETTINGS,
                                                         "calibration": None, "videos": videos}}}


def measure(size: int, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    folder.mkdir(parents=True)
    legacy = legacy_ledger(size)
    started = time.perf_counter()
    for _ in range(args.json_saves):
        write_json_atomic(folder / LEGACY_FILE, legacy)
    json_save = (time.perf_counter() - started) / args.json_saves
    json_mb = (folder / LEGACY_FILE).stat().st_size / 1e6

    started = time.perf_counter()
    Ledger(folder, echo=lambda _: None).close()
    migrate = time.perf_counter() - started

    started = time.perf_counter()
    ledger = Ledger(folder, echo=lambda _: None)
    section = ledger.open_section(MODEL, {}, SETTINGS)
    open_s = time.perf_counter() - started
    assert len(section.videos) == size

    records = []
    for i in range(size, size + args.records):
        key, raw = entry(i)
        done = LedgerEntry(**raw, stamp=Stamp(1_500_000_000, time.time_ns()))
        started = time.perf_counter()
        ledger.record(section, key, done)
        records.append(time.perf_counter() - started)

    keys = random.Random(0).choices(list(section.videos), k=args.lookups)
    started = time.perf_counter()
    for key in keys:
        ledger.is_done(section, key)
    lookup = (time.perf_counter() - started) / len(keys)
    ledger.close()
    return {"json_save": json_save, "json_mb": json_mb, "migrate": migrate, "open": open_s,
            "record": statistics.mean(records), "record_p95": sorted(records)[int(0.95 * (len(records) - 1))],
            "lookup": lookup, "sqlite_mb": (folder / LEDGER_FILE).stat().st_size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="entries per ledger")
    parser.add_argument("--records", type=int, default=200, help="finished videos recorded per size")
    parser.add_argument("--lookups", type=int, default=20_000, help="'is this video done?' questions per size")
    parser.add_argument("--json-saves", type=int, default=3, help="whole ledger.json writes timed per size")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the ledgers (default: a temporary one)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-ledger-", dir=args.dir))
    try:
        rows = [(size, measure(size, base / str(size), args)) for size in args.sizes]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"ledger cost per video ({args.records} records, {args.lookups} lookups per size; in {base.parent})\n")
    print("| entries | record one video (sqlite) | p95 | is it done? | open + load (per run) | migrate (once) "
          "| ledger.sqlite | ledger.json save per video (before) | ledger.json |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, r in rows:
        print(f"| {size:,} | {r['record'] * 1e3:.2f} ms | {r['record_p95'] * 1e3:.2f} ms | {r['lookup'] * 1e6:.1f} us "
              f"| {r['open']:.2f} s | {r['migrate']:.2f} s | {r['sqlite_mb']:.1f} MB | {r['json_save'] * 1e3:.0f} ms "
              f"| {r['json_mb']:.1f} MB |")


if __name__ == "__main__":
    main()
