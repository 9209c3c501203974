"""Per-video Parquet shards of decoded frames; pure pyarrow, no Ray, so notebooks and tests can read them.

One file per video, one row per frame: `frame` (int32, 0-based position in the video), `label` (int8: 0/1, -1 when
unknown) and `image`, the frame as uint8 (H, W, C). Frames are stored once; clips are cut when reading, so storage
does not grow with the clip length. Row groups hold a fixed number of frames, so a reader fetches only the frames a
clip range needs.

The image column comes in two encodings, read alike by `iter_shard` (a folder may hold both: each manifest entry
and each shard's footer says which):

- "binary" (the default since issue 14): `fixed_size_binary(H*W*C)`, one value per frame, the frame's bytes in
  C order (row by row, channels last); Parquet stores it as FIXED_LEN_BYTE_ARRAY, PLAIN, uncompressed, so writing
  it is a copy. The field's metadata says how to read a value: `memae.shape` (JSON [H, W, C]), `memae.dtype`
  ("uint8") and `memae.layout` ("HWC"); any Arrow reader gets the bytes, and numpy turns them into frames:

      table = pyarrow.parquet.read_table(path)
      field = table.schema.field("image")
      shape = json.loads(field.metadata[b"memae.shape"])
      frames = numpy.frombuffer(table.column("image").combine_chunks().buffers()[1], numpy.uint8).reshape(-1, *shape)

  Bytes on disk are the raw frames plus about 0.1% (benchmarks/bench_ingest.py; the limit is 1.5x).
- "tensor" (the default before): the canonical Arrow extension type `arrow.fixed_shape_tensor`, which Arrow
  readers turn into tensors by themselves. Parquet has no 8-bit physical type and widens each uint8 to an INT32, so
  it is written with BYTE_STREAM_SPLIT and zstd (the three zero bytes of each value compress away), but encoding
  costs about 7 ns of CPU per pixel: 0.5-1 ms for a 256x256 frame, as much as decoding it. Still written on request
  (--encoding tensor), and read wherever it was written.

Measured on 250 frames of 256x256 gray from the synthetic scene (2 cores): "binary" uncompressed costs 0.03 ms of
CPU a frame to write and 1.0x the raw bytes; with zstd level 1 it would cost 0.15 ms and 0.23x (lz4 and snappy do
not compress these frames at all); "tensor" costs 0.6-1.2 ms and 0.37x. Decoding a 480x640 H.264 frame costs about
1 ms, so "binary" without compression is what keeps ingest near the speed of decoding (README, "Decoders and shard
encoding").

A shard is written under a hidden temporary name in its final folder and renamed into place when complete, so a
`*.parquet` file is never half-written. Its footer carries the video's manifest entry (`ShardWriter.seal`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memae.files import replace_atomically, temporary_path

SHARD_DIR = "shards"  # shards/<split>/<video id>.parquet in an ingest's output folder
FRAME, LABEL, IMAGE = "frame", "label", "image"
META_KEY = b"memae"
ENCODINGS = ("binary", "tensor")
DEFAULT_ENCODING = "binary"
COMPRESSION = {"binary": ("none", None), "tensor": ("zstd", 1)}  # (codec, level) per encoding
SHAPE_KEY = b"memae.shape"  # binary: JSON [H, W, C] of each value
BINARY_FIELD_METADATA = {b"memae.dtype": b"uint8", b"memae.layout": b"HWC"}
RECORD_KEY = b"memae.entry"  # in the footer: the video's manifest entry, written when the shard is complete
ROW_GROUP_BYTES = 8 << 20  # frames held in memory at once while writing or reading


def storage_description(encoding: str) -> dict:
    """How shards of `encoding` store frames, in the words an ingest manifest records."""
    codec, level = COMPRESSION[encoding]
    image = "uint8 (H, W, C)" if encoding == "tensor" else "fixed_size_binary(H*W*C): uint8 (H, W, C) in C order"
    return {
        "unit": "one Parquet file per video, one row per frame; clips are cut when reading",
        "columns": {FRAME: "int32, 0-based", LABEL: "int8, 0/1, -1 unknown", IMAGE: image},
        "encoding": encoding,
        "compression": codec if level is None else f"{codec} level {level}",
    }


def frames_per_row_group(frame_shape: tuple[int, ...]) -> int:
    """Rows per row group: about ROW_GROUP_BYTES of frames, between 16 and 1024."""
    return int(np.clip(ROW_GROUP_BYTES // max(1, int(np.prod(frame_shape))), 16, 1024))


class ShardWriter:
    """Writes one video's frames to `path` atomically, a row group per `write` call.

    Use as a context manager: the file appears at `path` only when the block exits without an exception.
    """

    def __init__(
        self, path: str | Path, frame_shape: tuple[int, int, int], metadata: dict, encoding: str = DEFAULT_ENCODING
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
        self.path = Path(path)
        self.frame_shape = tuple(frame_shape)
        self.encoding = encoding
        self.tmp = temporary_path(self.path)
        if encoding == "tensor":
            image = pa.field(IMAGE, pa.fixed_shape_tensor(pa.uint8(), self.frame_shape), nullable=False)
        else:
            shape = json.dumps(self.frame_shape).encode()
            image = pa.field(IMAGE, pa.binary(int(np.prod(self.frame_shape))), False,
                             {SHAPE_KEY: shape, **BINARY_FIELD_METADATA})
        schema = pa.schema(
            [pa.field(FRAME, pa.int32(), nullable=False), pa.field(LABEL, pa.int8(), nullable=False), image],
            metadata={META_KEY: json.dumps(metadata).encode()},
        )
        codec, level = COMPRESSION[encoding]
        self._writer = pq.ParquetWriter(
            self.tmp,
            schema,
            compression=codec,
            compression_level=level,
            use_dictionary=False,
            write_statistics=[FRAME],
            use_byte_stream_split=[f"{IMAGE}.list.element"] if encoding == "tensor" else False,
        )
        self.num_frames = 0

    def write(self, frames: np.ndarray, labels: np.ndarray) -> None:
        """Append frames (n, H, W, C) uint8 and their labels (n,) int8 as the next row group."""
        if frames.shape[1:] != self.frame_shape or frames.dtype != np.uint8:
            raise ValueError(
                f"{self.path.name}: frames {frames.shape} {frames.dtype}, expected (n, *{self.frame_shape}) uint8"
            )
        n = len(frames)
        frames = np.ascontiguousarray(frames)
        if self.encoding == "tensor":
            images = pa.FixedShapeTensorArray.from_numpy_ndarray(frames)
        else:
            images = pa.FixedSizeBinaryArray.from_buffers(
                self._writer.schema.field(IMAGE).type, n, [None, pa.py_buffer(frames)]
            )
        table = pa.table(
            {
                FRAME: pa.array(np.arange(self.num_frames, self.num_frames + n, dtype=np.int32)),
                LABEL: pa.array(np.asarray(labels, dtype=np.int8)),
                IMAGE: images,
            },
            schema=self._writer.schema,
        )
        self._writer.write_table(table, row_group_size=n)
        self.num_frames += n

    def __enter__(self) -> ShardWriter:
        return self

    def seal(self, record: dict) -> None:
        """Writes `record` (the video's manifest entry) into the file's footer, so that a finished shard says what it
        holds even when the manifest never heard of it (a driver killed before it could record the video)."""
        self._writer.add_key_value_metadata({RECORD_KEY.decode(): json.dumps(record)})

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if exc_type is None:
            replace_atomically(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def shard_metadata(path: str | Path) -> dict:
    """The metadata a shard was written with (video id, split, preprocessing...)."""
    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw[META_KEY]) if META_KEY in raw else {}


def shard_record(path: str | Path) -> dict | None:
    """The manifest entry a finished shard was sealed with (`ShardWriter.seal`); None for shards written before
    shards were sealed."""
    raw = pq.read_metadata(path).metadata or {}
    return json.loads(raw[RECORD_KEY]) if RECORD_KEY in raw else None


def iter_shard(
    path: str | Path, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Frames [start, stop) of a shard as (first frame index, frames (n,H,W,C) uint8, labels (n,) int8) pieces.

    Only the row groups overlapping the range are read.
    """
    file = pq.ParquetFile(path)
    field = file.schema_arrow.field(IMAGE)
    first = 0
    for group in range(file.num_row_groups):
        rows = file.metadata.row_group(group).num_rows
        lo, hi = max(start, first), rows + first if stop is None else min(stop, rows + first)
        if lo < hi:
            table = file.read_row_group(group, columns=[LABEL, IMAGE])
            frames = images_to_numpy(table.column(IMAGE), field)
            labels = table.column(LABEL).to_numpy()
            yield lo, frames[lo - first : hi - first], labels[lo - first : hi - first]
        first += rows
        if stop is not None and first >= stop:
            return


def read_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames (T,H,W,C) uint8 and labels (T,) int8 of a shard."""
    pieces = list(iter_shard(path))
    if not pieces:
        raise ValueError(f"{path}: shard holds no frames")
    return np.concatenate([p[1] for p in pieces]), np.concatenate([p[2] for p in pieces])


def images_to_numpy(column: pa.ChunkedArray, field: pa.Field) -> np.ndarray:
    """The image column, in either encoding, as one (n, H, W, C) uint8 array; no copy when it is one chunk."""
    if isinstance(field.type, pa.FixedShapeTensorType):
        shape = tuple(field.type.shape)
        parts = [chunk.storage.flatten().to_numpy(zero_copy_only=True).reshape(-1, *shape) for chunk in column.chunks]
    else:
        shape = tuple(json.loads(field.metadata[SHAPE_KEY]))
        width = field.type.byte_width
        parts = [
            np.frombuffer(chunk.buffers()[1], np.uint8, len(chunk) * width, chunk.offset * width).reshape(-1, *shape)
            for chunk in column.chunks
        ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
