"""Readers for the image datasets of the paper's Table 1, all returning uint8 N x H x W x C images and labels.

`load_digits` needs no download (scikit-learn ships the 1,797 8x8 handwritten digits). MNIST and CIFAR-10 are
read from the files a user already has, in their original binary formats; nothing is ever unpickled, so the
Python (pickle) release of CIFAR-10 is refused. Every image comes out with height and width divisible by 8,
which `MemAE2D` needs.

Expected layouts (each file may sit directly in `root` or in the named subfolder; MNIST files may be gzipped):

    root/                                   root/
      train-images-idx3-ubyte[.gz]            cifar-10-batches-bin/
      train-labels-idx1-ubyte[.gz]              data_batch_1.bin ... data_batch_5.bin
      t10k-images-idx3-ubyte[.gz]               test_batch.bin
      t10k-labels-idx1-ubyte[.gz]               batches.meta.txt        (optional: class names)
      (or MNIST/raw/ holding them)

    data = load_image_dataset("mnist", "~/data/mnist")     # 70,000 x 32 x 32 x 1, zero-padded from 28 x 28
    data.images, data.labels, data.class_names
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS: tuple[str, ...] = ("digits", "mnist", "cifar10")
SPLITS: tuple[str, ...] = ("all", "train", "test")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32 x 32 planes
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(ValueError):
    """A dataset file is missing or not what its name says; the message names the file and the problem."""


@dataclass(frozen=True)
class ImageDataset:
    """Images (uint8 N x H x W x C) with integer class labels, as every reader returns them."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 N x H x W x C, got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but labels of shape {self.labels.shape}")

    @property
    def channels(self) -> int:
        return self.images.shape[-1]


def load_digits(size: int = 16) -> ImageDataset:
    """scikit-learn's handwritten digits (values 0..16), scaled to uint8 and enlarged by pixel replication.

    The default 16 x 16 matters for the paper's network: its first layer is a 1 x 1 convolution of stride 2,
    which on the native 8 x 8 images would see only a quarter of the pixels; after 2 x 2 replication it sees
    each original pixel exactly once. Replication adds no information, so pixel baselines are unaffected.
    """
    if size % 8:
        raise ValueError(f"digits size must be a multiple of 8, got {size}")
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    factor = size // 8
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)[..., None]
    return ImageDataset("digits", images, bunch.target.astype(np.int64), tuple(str(c) for c in range(10)))


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """One IDX file (MNIST's format), gzipped or not; the magic number and the size are checked."""
    path = Path(path)
    data = _read_bytes(path)
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DatasetError(f"{path}: corrupt gzip data ({err})") from None
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"{path}: IDX magic number {magic:#010x}, expected {expected_magic:#010x} "
                           f"({'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'} of unsigned bytes)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DatasetError(f"{path}: header promises shape {shape} ({expected} bytes) but "
                           f"{len(data) - header} bytes of data follow")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(root: str | os.PathLike, split: str = "all") -> ImageDataset:
    """MNIST from its four IDX files; 28 x 28 digits are zero-padded to 32 x 32 (a multiple of 8).

    `split` "all" pools the 60,000 training and 10,000 test images: the one-class protocol draws its own splits.
    """
    parts = _split_parts(split, {"train": "train", "test": "t10k"})
    folder = _find_folder(Path(root), "train-images-idx3-ubyte", ("MNIST/raw", "mnist"), suffixes=("", ".gz"))
    images, labels = [], []
    for prefix in parts:
        part_images = read_idx(_find_file(folder, f"{prefix}-images-idx3-ubyte", (".gz", "")), IDX_IMAGES_MAGIC)
        labels_path = _find_file(folder, f"{prefix}-labels-idx1-ubyte", (".gz", ""))
        part_labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        if len(part_images) != len(part_labels):
            raise DatasetError(f"{labels_path}: {len(part_labels)} labels for {len(part_images)} images")
        if part_labels.max(initial=0) > 9:
            raise DatasetError(f"{labels_path}: label {part_labels.max()} outside 0..9")
        images.append(part_images)
        labels.append(part_labels)
    stacked = np.concatenate(images)
    padded = np.pad(stacked, [(0, 0), *(_centre_pad(side) for side in stacked.shape[1:])])[..., None]
    return ImageDataset("mnist", padded, np.concatenate(labels).astype(np.int64), tuple(str(c) for c in range(10)))


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte and 3,072 pixel bytes; returns N x 32 x 32 x 3, labels."""
    path = Path(path)
    data = _read_bytes(path)
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04"):
        raise DatasetError(f"{path}: this is the Python (pickle) release of CIFAR-10, which is never unpickled "
                           f"here; use the binary version (cifar-10-binary.tar.gz)")
    if not data or len(data) % CIFAR10_RECORD:
        raise DatasetError(f"{path}: {len(data)} bytes is not a whole number of {CIFAR10_RECORD}-byte records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"{path}: label byte {labels.max()} outside 0..9; is this CIFAR-100 or another file?")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_cifar10(root: str | os.PathLike, split: str = "all") -> ImageDataset:
    """CIFAR-10 from its binary batches; "all" pools the 50,000 training and 10,000 test images."""
    parts = _split_parts(split, {"train": "train", "test": "test"})
    folder = _find_folder(Path(root), "data_batch_1.bin", ("cifar-10-batches-bin",), suffixes=("",))
    files = [*(folder / f"data_batch_{i}.bin" for i in range(1, 6))] if "train" in parts else []
    files += [folder / "test_batch.bin"] if "test" in parts else []
    batches = [read_cifar10_batch(_existing(path)) for path in files]
    names_file = folder / "batches.meta.txt"
    names = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip()) \
        if names_file.is_file() else CIFAR10_CLASSES
    if len(names) != 10:
        raise DatasetError(f"{names_file}: expected 10 class names, found {len(names)}")
    return ImageDataset("cifar10", np.concatenate([b[0] for b in batches]),
                        np.concatenate([b[1] for b in batches]), names)


def load_image_dataset(name: str, root: str | os.PathLike | None = None, split: str = "all") -> ImageDataset:
    """Dispatches on the dataset name; `root` is required for the datasets that are not bundled."""
    if name == "digits":
        return load_digits()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if root is None:
        raise DatasetError(f"dataset {name!r} is read from local files: pass the folder that holds them")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory")
    return load_mnist(root, split) if name == "mnist" else load_cifar10(root, split)


def _centre_pad(side: int) -> tuple[int, int]:
    """Zeros before and after to reach the next multiple of 8, centred: 28 -> (2, 2)."""
    missing = -side % 8
    return missing // 2, missing - missing // 2


def _split_parts(split: str, names: dict[str, str]) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return [names[part] for part in ("train", "test") if split in ("all", part)]


def _find_folder(root: Path, marker: str, subfolders: tuple[str, ...], suffixes: tuple[str, ...]) -> Path:
    """`root` itself or the first known subfolder that holds `marker` (with one of `suffixes`)."""
    for folder in (root, *(root / sub for sub in subfolders)):
        if any((folder / f"{marker}{suffix}").is_file() for suffix in suffixes):
            return folder
    looked = ", ".join(str(folder) for folder in (root, *(root / sub for sub in subfolders)))
    raise DatasetError(f"no {marker} found in {looked}")


def _find_file(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path:
    for suffix in suffixes:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise DatasetError(f"{folder / stem}: missing (looked for {', '.join(stem + s for s in suffixes)})")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror})") from None
