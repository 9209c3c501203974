"""Files that are either whole or absent: atomic writes, safe names, strict JSON.

Every output of the project (checkpoints, shards, manifests, per-video scores, ledgers) is written to a hidden
temporary sibling and renamed into place, so a reader, or a rerun after a kill, sees the old file or the new one,
never half of one. The file and its folder are flushed to disk around the rename, so the same holds after a power
loss or on a network filesystem.

    with atomic_write(path) as tmp:       # write to tmp however you like: pyarrow, torch.save, numpy
        pq.write_table(table, tmp)
    write_json_atomic(path, {"a": 1})
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

TEMPORARY_PATTERN = ".*.tmp-*"  # what `temporary_path` names look like, for `remove_temporary_files`
OUTPUT_MARKER = ".memae.lock"  # in every folder a job writes (its lock, pipelines/common/lock.py): not an archive's


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden, unique temporary sibling of `path` (its folder created), to be renamed onto it when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def replace_atomically(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Renames a finished temporary file onto `path`, flushing the file before and its folder after."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_folder(Path(path).parent)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it becomes `path`, on an exception it is removed."""
    tmp = temporary_path(path)
    try:
        yield tmp
        replace_atomically(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, content: Any) -> None:
    """Writes strict JSON (NaN as null) so that readers see the old file or the new one, never a partial one."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(json_ready(content), indent=1) + "\n")


def set_aside(path: str | os.PathLike, suffix: str) -> Path:
    """Renames `path` to a sibling named `<name><suffix>` (`-2`, `-3`... after it when taken) and returns it: a file
    that must no longer be used, kept for a person to look at instead of deleted or overwritten."""
    path = Path(path)
    target, n = path.with_name(path.name + suffix), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}-{n}")
    os.rename(path, target)
    _fsync_folder(path.parent)
    return target


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files an interrupted run left under `folder`; returns what was removed."""
    folder = Path(folder)
    stale = sorted(folder.rglob(TEMPORARY_PATTERN)) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def resolves_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` stays inside `folder` once resolved: no `..` and no symbolic link leads it elsewhere."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def safe_name(name: str) -> str:
    """A file name for any id: unchanged when already safe, else made safe plus a hash of the original, so that
    two ids never share a file ("a b" and "a_b" stay apart)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def json_ready(value: Any) -> Any:
    """`value` with NaN and infinities as None (null) and numpy scalars as Python ones: strict JSON."""
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def _fsync_folder(folder: Path) -> None:
    """Makes a rename inside `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
