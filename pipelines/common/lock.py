"""One writer per output folder: an exclusive lock that names its holder and never outlives it.

Two jobs writing the same folder (two cameras' nightly runs pointed at one --out, a retry overlapping a slow run)
would delete or overwrite each other's files. Each job that writes a folder holds `OUT/.memae.lock` for its whole
run: an advisory `flock` the kernel drops when the process dies however it dies, so a killed job never leaves a
stale lock behind, plus the holder's host, pid, and start time written inside for the message a second job prints.

    with folder_lock(out, wait_s=0):     # raises FolderBusy naming the holder if another job writes there
        ...
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from memae.files import OUTPUT_MARKER

LOCK_FILE = OUTPUT_MARKER  # also what tells an archive walk that a folder is a job's output (memae.datasets.listing)


class FolderBusy(RuntimeError):
    """Another job holds the folder's lock; the message names it (host, pid, start time, command)."""


@contextmanager
def folder_lock(folder: str | os.PathLike, wait_s: float = 0.0, poll_s: float = 1.0) -> Iterator[None]:
    """Holds the exclusive lock of `folder` (created if needed) for the block.

    Args:
        folder: the output folder.
        wait_s: how long to wait for another holder to finish before giving up (0: give up at once).
        poll_s: how often to try while waiting.

    Raises:
        FolderBusy: the lock is still held by another job after `wait_s`.
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FolderBusy(f"{folder} is being written by another job ({_holder(path)}); wait for it to "
                                     "finish, or use another output folder") from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_me()).encode())
        os.fsync(fd)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, naming the last holder


def _me() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")).strip()
            if Path("/proc/self/cmdline").exists() else ""}


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return f"host {info.get('host')}, pid {info.get('pid')}, started {info.get('started')}: {info.get('command')}"
