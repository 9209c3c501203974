"""Walking an archive without skipping anything silently: every path is either used or reported with a reason.

Archives are never clean: links that point nowhere or outside the archive, link loops, a folder named `x.mp4`, notes
and sidecar files beside the videos. `walk` visits everything under a root without following links to folders (so
no loop and no video is reached twice), `path_problem` says in plain words why a path cannot be read as a file, and
`unlisted_files` lists what no record of a layout uses, so that a report can account for every file under --root.

    from memae.datasets import open_dataset, unlisted_files
    records = open_dataset("auto", "/srv/cctv")
    for issue in unlisted_files("/srv/cctv", records):
        print(issue.file, issue.reason)        # /srv/cctv/notes.txt  not a video file (.txt)
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from memae.datasets.records import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Issue, VideoRecord
from memae.files import OUTPUT_MARKER

OUTPUT_FOLDER = f"an output folder of memae's jobs (it holds {OUTPUT_MARKER}; not searched)"
OUTSIDE_ROOT = "symbolic link to a {kind} outside --root ({target})"
_NOT_REGULAR = "not a regular file (a device, pipe or socket)"


class Entry(NamedTuple):
    """A path met while walking: `problem` is None for a readable regular file (or a link to one inside the root)."""

    path: Path
    problem: str | None
    is_folder: bool = False


def walk(root: str | Path) -> Iterator[Entry]:
    """Every file under `root`, and the folders it does not search (hidden, linked, unreadable), in name order.

    Links to folders are reported, not followed. Folders named like a video file are reported and searched. A job's
    output folder put inside the archive (`--out /srv/cctv/scores`) is reported once and not searched, so a night
    neither walks nor lists the files earlier nights wrote there.
    """
    root = Path(root)
    real_root = Path(os.path.realpath(root))
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as found:
                children = sorted(found, key=lambda e: e.name)
        except OSError as exc:
            yield Entry(folder, f"a folder that cannot be read ({exc.strerror or type(exc).__name__})", True)
            continue
        subfolders = []
        for child in children:
            path = Path(child.path)
            is_folder = child.is_dir(follow_symlinks=False)
            if child.name.startswith("."):
                yield Entry(path, "a hidden folder (not searched)" if is_folder else "a hidden file", is_folder)
            elif child.is_symlink():
                problem = path_problem(path, real_root)
                if problem is None and path.is_dir():
                    yield Entry(path, "a symbolic link to a folder (not followed)", True)
                else:
                    yield Entry(path, problem)
            elif is_folder and (path / OUTPUT_MARKER).exists():
                yield Entry(path, OUTPUT_FOLDER, True)
            elif is_folder:
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    yield Entry(path, "a folder named like a video file (the files in it are searched)", True)
                subfolders.append(path)
            else:
                yield Entry(path, None if child.is_file(follow_symlinks=False) else _NOT_REGULAR)
        pending.extend(reversed(subfolders))


def path_problem(path: str | Path, root: str | Path | None = None) -> str | None:
    """Why `path` cannot be read as a file, in plain words; None for a regular file, or a link to one.

    Args:
        root: when given, a link whose target lies outside it is refused: an archive does not reach elsewhere.
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot be looked up ({exc.strerror or type(exc).__name__})"
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return f"a dangling symbolic link (to {os.readlink(path)}, which does not exist)"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop"
            return f"a symbolic link that cannot be followed ({exc.strerror or type(exc).__name__})"
        target = Path(os.path.realpath(path))
        if root is not None and not target.is_relative_to(os.path.realpath(root)):
            return OUTSIDE_ROOT.format(kind="folder" if stat.S_ISDIR(info.st_mode) else "file", target=target)
        if stat.S_ISDIR(info.st_mode):
            return None  # a link to a folder inside the root: the caller decides whether to follow it
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return _NOT_REGULAR
    return None


def check_sources(records: Iterable[VideoRecord], root: str | Path) -> list[VideoRecord]:
    """`records`, each whose video file or frame folder cannot be read where it is (a dangling or looping link, a
    link out of `root`, a folder where a file should be) carrying that as its first problem."""
    checked = []
    for record in records:
        if record.is_video_file or record.source.is_symlink():  # a frame folder is checked only for where it leads
            problem = path_problem(record.source, root)
        else:
            problem = None
        if problem is not None:
            record = dataclasses.replace(record, problems=(Issue(str(record.source), problem), *record.problems))
        checked.append(record)
    return checked


def unlisted_files(root: str | Path, records: Iterable[VideoRecord]) -> list[Issue]:
    """Every file under `root` that no record uses, each with the reason it is not a video of the archive.

    A record uses its video file or frame images, its label file and its pixel masks. Hidden files and folders,
    links to folders and unreadable folders are listed as one item each, not searched. These are not failures:
    they are what a report lists so that no file under --root goes unaccounted for.

    Args:
        root: the archive's root folder.
        records: what the layout's reader made of it (all splits, so that no split's files look unused).

    Returns:
        Issue(file, reason) per unused path, in walking order (name order, depth first).
    """
    used: set[str] = set()
    sources: dict[str, Path] = {}  # a listed video file's real path -> its path, for the links left out as repeats
    for record in records:
        used.add(os.path.abspath(record.source))
        if record.is_video_file:
            sources.setdefault(os.path.realpath(record.source), record.source)
        used.update(os.path.abspath(p) for p in record.frame_files)
        if record.label_source is not None:
            used.add(os.path.abspath(record.label_source))
        if record.masks is not None:
            used.update(os.path.abspath(p) for p in record.masks.paths)
    unused = []
    for entry in walk(root):
        if os.path.abspath(entry.path) in used:
            continue
        if entry.problem is not None:
            unused.append(Issue(str(entry.path), entry.problem))
        elif not entry.is_folder:
            unused.append(Issue(str(entry.path), _unused_reason(entry.path, sources)))
    return unused


def _unused_reason(path: Path, sources: dict[str, Path]) -> str:
    if path.is_symlink() and (listed := sources.get(os.path.realpath(path))) is not None:
        return f"a symbolic link to {listed}, which is read under its own name"
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "a video file in no folder this layout reads"
    if suffix in IMAGE_SUFFIXES:
        return "an image that is no video's frame or mask"
    return f"not a video file ({suffix or 'no suffix'})"
