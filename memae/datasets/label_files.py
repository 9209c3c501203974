"""Ground-truth files checked against their own size before anything is loaded.

A label file's header says how much data follows; a damaged or hostile one can claim 10^12 labels in a few bytes, and
loading it would ask for terabytes (a MemoryError, or a killed process) while merely listing the archive. Each reader
here compares what the header declares with what the file can hold and raises `LabelFileError` in plain words, which
the layouts turn into a problem of that one video.

    shape, dtype = npy_header(path)          # no data read
    labels = load_npy(path)                  # only after the header was found consistent with the file's size
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memae.datasets.decode import first_line

MAX_TEXT_BYTES = 16 << 20  # a frame-range file (UCSD's .m) is a few kilobytes
ZLIB_MAX_RATIO = 1032  # the most a zlib stream expands: bounds what a compressed MATLAB variable can hold
MAT_CELL_BYTES = 8  # the least a MATLAB cell takes uncompressed (its element tag)


class LabelFileError(ValueError):
    """A label file that cannot be what it claims; the message is the reason, in plain words."""


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) an .npy file declares, refused unless the file holds that much data.

    Raises:
        LabelFileError: not an .npy file, Python objects (pickles), or fewer bytes than the header declares.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except (ValueError, OSError, SyntaxError) as exc:
            raise LabelFileError(f"not a readable .npy file ({first_line(exc)})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise LabelFileError("holds Python objects, which are never loaded (only plain numeric arrays are)")
    count = int(np.prod(shape, dtype=object))  # exact: the product of a forged shape can exceed 64 bits
    needed = count * dtype.itemsize
    if offset + needed > size:
        raise LabelFileError(f"its header declares {count} values of {dtype.itemsize} byte(s) ({needed} bytes) but the "
                             f"file holds only {size - offset} bytes of data (damaged or truncated)")
    return tuple(shape), dtype


def load_npy(path: str | Path) -> np.ndarray:
    """The array of an .npy file whose header `npy_header` accepted: memory is bounded by the file's size."""
    npy_header(path)
    return np.load(path, allow_pickle=False)


def check_mat_cells(path: str | Path, variable: str) -> tuple[int, ...]:
    """The shape of cell array `variable` in a MATLAB file, refused when the file is too small to hold that many cells.

    Raises:
        KeyError: no such variable.
        LabelFileError: the file cannot be listed, or declares more cells than it can hold.
    """
    from scipy.io import whosmat

    path = Path(path)
    try:
        found = {name: shape for name, shape, _ in whosmat(path)}
    except NotImplementedError:
        raise LabelFileError("a MATLAB v7.3 (HDF5) file, which is not read: save it with -v7") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on files that are not MATLAB files
        raise LabelFileError(f"not a readable MATLAB file ({first_line(exc)})") from None
    if variable not in found:
        raise KeyError(f"no variable {variable!r} in {path.name} (found {sorted(found)})")
    shape = tuple(found[variable])
    cells = int(np.prod(shape, dtype=object))
    size = path.stat().st_size
    if cells * MAT_CELL_BYTES > size * ZLIB_MAX_RATIO:
        raise LabelFileError(f"its header declares {cells} cells in {variable!r}, more than a file of {size} bytes "
                             "can hold (damaged)")
    return shape


def read_small_text(path: str | Path) -> str:
    """A ground-truth text file, refused unread when it is larger than any such file can be."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise LabelFileError(f"is {size} bytes, too large for a ground-truth text file (at most {MAX_TEXT_BYTES})")
    return path.read_text(errors="replace")
