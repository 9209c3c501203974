"""Where the scoring job writes a video's files, and the guarantee that every such path stays inside --out.

Split names and video ids come from archives and manifests that someone else wrote; each becomes one file-name
component through `memae.files.safe_name`, and the result is resolved (following any symlink already on the way) and
refused unless it lies inside the output folder.
"""

from __future__ import annotations

from pathlib import Path

from memae.files import resolves_inside, safe_name


class UnsafePath(ValueError):
    """A path built from archive data that would lead outside the output folder."""


def contained(path: Path, root: Path) -> Path:
    """`path`, checked to resolve inside `root`.

    Raises:
        UnsafePath: when it resolves elsewhere (a `..` component, a symlink leading out).
    """
    if not resolves_inside(path, root):
        raise UnsafePath(f"{path} would be written outside {root}")
    return path


def model_folder(out: Path, scored_dir: str, key: str) -> Path:
    """OUT/<scored_dir>/<key>, the folder of one model's per-video files.

    Raises:
        UnsafePath: unless `key` is one plain file name (a --restart deletes this folder).
    """
    if not key or key in (".", "..") or safe_name(key) != key:
        raise UnsafePath(f"model key {key!r} is not a plain folder name")
    return contained(out / scored_dir / key, out)


def video_path(folder: Path, split: str, video_id: str, suffix: str) -> Path:
    """Where one video's scores (".parquet") or error maps (".maps.npy") live in a model's folder.

    Raises:
        UnsafePath: when the split or id would lead outside `folder`.
    """
    return contained(folder / safe_name(split) / f"{safe_name(video_id)}{suffix}", folder)
