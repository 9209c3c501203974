"""The image readers on tiny files written here in each real layout, and on the bundled digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from experiments.images.data import (
    CIFAR10_CLASSES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DatasetError,
    load_cifar10,
    load_digits,
    load_image_dataset,
    load_mnist,
    read_idx,
)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(side.to_bytes(4, "big") for side in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, gz: bool, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Writes the four MNIST files with random 28 x 28 images; returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, count in (sizes or {"train": 5, "t10k": 3}).items():
        images = rng.integers(1, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        for name, array, magic in ((f"{prefix}-images-idx3-ubyte", images, IDX_IMAGES_MAGIC),
                                   (f"{prefix}-labels-idx1-ubyte", labels, IDX_LABELS_MAGIC)):
            data = idx_bytes(array, magic)
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        written[prefix] = (images, labels)
    return written


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Records as CIFAR-10 stores them: label byte, then the R, G and B planes row by row."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def write_cifar(folder: Path, per_batch: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        images = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch, dtype=np.uint8)
        (folder / name).write_bytes(cifar_bytes(images, labels))
        all_images.append(images)
        all_labels.append(labels)
    return np.concatenate(all_images), np.concatenate(all_labels)


def test_digits_are_uint8_images_with_every_original_pixel_replicated():
    data = load_digits()
    assert data.images.shape == (1797, 16, 16, 1) and data.images.dtype == np.uint8
    assert data.images.max() == 255 and data.images.min() == 0
    assert sorted(np.unique(data.labels)) == list(range(10))
    native = load_digits(size=8).images
    assert np.array_equal(data.images[:, ::2, ::2], native)  # what the stride-2 1x1 first layer sees
    assert np.array_equal(data.images[:, 1::2, 1::2], native)


def test_digits_size_must_suit_the_network():
    with pytest.raises(ValueError, match="multiple of 8"):
        load_digits(size=12)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_pools_both_parts_and_pads_to_32(tmp_path, gz):
    written = write_mnist(tmp_path, gz)
    data = load_mnist(tmp_path)
    assert data.images.shape == (8, 32, 32, 1)
    originals = np.concatenate([written["train"][0], written["t10k"][0]])
    assert np.array_equal(data.images[:, 2:30, 2:30, 0], originals)
    assert data.images[:, :2].max() == 0 and data.images[:, 30:].max() == 0 and data.images[:, :, :2].max() == 0
    assert np.array_equal(data.labels, np.concatenate([written["train"][1], written["t10k"][1]]))
    assert len(load_mnist(tmp_path, split="test").images) == 3


def test_mnist_found_in_the_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert len(load_image_dataset("mnist", tmp_path).images) == 8


def test_idx_magic_number_is_checked(tmp_path):
    write_mnist(tmp_path, gz=False)
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: IDX magic number 0x00000801"):
        read_idx(tmp_path / "train-labels-idx1-ubyte", IDX_IMAGES_MAGIC)


def test_idx_truncated_file_names_the_file_and_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8), IDX_IMAGES_MAGIC)[:-10])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: header promises shape \(2, 28, 28\)"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(b"x" * 1000)[:20])
    with pytest.raises(DatasetError, match="corrupt gzip"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_mnist_missing_file_is_named(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: missing"):
        load_mnist(tmp_path)


def test_mnist_label_count_must_match(tmp_path):
    write_mnist(tmp_path, gz=False)
    labels = np.zeros(4, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, IDX_LABELS_MAGIC))
    with pytest.raises(DatasetError, match="4 labels for 5 images"):
        load_mnist(tmp_path)


def test_cifar_binary_batches_keep_channels_in_place(tmp_path):
    images, labels = write_cifar(tmp_path / "cifar-10-batches-bin")
    data = load_image_dataset("cifar10", tmp_path)
    assert data.images.shape == (12, 32, 32, 3)
    assert np.array_equal(data.images, images) and np.array_equal(data.labels, labels)
    assert data.class_names == CIFAR10_CLASSES
    assert len(load_cifar10(tmp_path, split="train").images) == 10


def test_cifar_class_names_come_from_the_meta_file(tmp_path):
    write_cifar(tmp_path)
    names = [f"c{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    assert load_cifar10(tmp_path).class_names == tuple(names)


def test_cifar_wrong_size_is_reported(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x00" * 3074)
    with pytest.raises(DatasetError, match="data_batch_3.bin: 3074 bytes is not a whole number of 3073-byte"):
        load_cifar10(tmp_path)


def test_cifar_pickle_release_is_refused_not_unpickled(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"\x80\x02}q\x00" + b"\x00" * 3068)
    with pytest.raises(DatasetError, match="pickle"):
        load_cifar10(tmp_path)


def test_cifar_label_out_of_range(tmp_path):
    write_cifar(tmp_path)
    record = np.zeros((1, 3073), np.uint8)
    record[0, 0] = 57
    (tmp_path / "data_batch_1.bin").write_bytes(record.tobytes())
    with pytest.raises(DatasetError, match="label byte 57"):
        load_cifar10(tmp_path)


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_5.bin").unlink()
    with pytest.raises(DatasetError, match="data_batch_5.bin: missing"):
        load_cifar10(tmp_path)


def test_local_datasets_need_an_existing_root(tmp_path):
    with pytest.raises(DatasetError, match="pass the folder"):
        load_image_dataset("mnist")
    with pytest.raises(DatasetError, match="no such directory"):
        load_image_dataset("cifar10", tmp_path / "absent")
    with pytest.raises(DatasetError, match="no data_batch_1.bin found"):
        load_image_dataset("cifar10", tmp_path)
