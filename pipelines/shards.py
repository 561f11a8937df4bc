"""Parquet shards of face crops: the schema, a deterministic writer and the readers.

One row is one 256x256 RGB face crop (encoded PNG or JPEG-95) with its landmarks in crop pixels, the
frame->crop affine and the box it was cut from (frame pixels). Layout of a shards folder::

    <shards>/<split>/part-00000.parquet, part-00001.parquet, ...   rows sorted by (dataset, source_id, frame_index)
    <shards>/report.json                                           counts, bad items, timings (pipelines.preprocess)

Stills have ``frame_index == -1``; a video's frames are never split across two files of its split, so
``iter_video_sequences`` streams one file at a time. Readers: ``decode_batch`` (numpy batches from Ray
Data's ``iter_batches`` or a pyarrow table), ``collate_torch`` / ``torch_collate_fn()`` (for
``iter_torch_batches(collate_fn=...)``), ``load_split`` (a ``ray.data.Dataset``) and
``iter_video_sequences`` (pure pyarrow, no Ray).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ldeq_core.defaults import JPEG_QUALITY as JPEG_QUALITY
from ldeq_core.fileio import atomic_path, file_sha256
from ldeq_shared.params import IMAGE_CODECS as IMAGE_CODECS

if TYPE_CHECKING:
    import ray.data
    import torch

SCHEMA_VERSION = 1
CROP_SIZE = 256
PNG_COMPRESSION = 3
STILL_FRAME_INDEX = -1
PART_PATTERN = "part-{:05d}.parquet"
PathLike = str | os.PathLike[str]

SCHEMA = pa.schema(
    [
        pa.field("image", pa.binary()),  # PNG or JPEG-95 bytes of the (256, 256, 3) RGB crop
        pa.field("landmarks", pa.list_(pa.float32())),  # L*2 values: (x, y) crop pixels, row-major
        pa.field("affine", pa.list_(pa.float64())),  # 6 values: 2x3 frame->crop affine, row-major
        pa.field("box", pa.list_(pa.float64())),  # x1, y1, x2, y2 in frame pixels
        pa.field("source_id", pa.string()),  # still name or video id
        pa.field("frame_index", pa.int32()),  # frame number in the video, -1 for stills
        pa.field("split", pa.string()),  # train / val / test / video_easy / video_hard / ...
        pa.field("dataset", pa.string()),  # synthetic / 300w / 300w_anim / wflw / wflw_v
        pa.field("n_landmarks", pa.int16()),
        pa.field("schema_version", pa.int16()),
    ],
    metadata={b"ldeq.schema_version": str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(SCHEMA.names)
_NO_STATS = ("image", "landmarks", "affine", "box")  # statistics of these columns are useless


# ------------------------------------------------------------------------------------------------ images
def encode_image(rgb: np.ndarray, codec: str, quality: int = JPEG_QUALITY) -> bytes:
    """Encode a (256, 256, 3) uint8 RGB crop as PNG (lossless) or JPEG at ``quality`` (1-100, default 95)."""
    img = np.asarray(rgb)
    if img.shape != (CROP_SIZE, CROP_SIZE, 3) or img.dtype != np.uint8:
        raise ValueError(f"crop must be ({CROP_SIZE}, {CROP_SIZE}, 3) uint8, got {img.shape} {img.dtype}")
    if codec == "png":
        ok, buf = cv2.imencode(
            ".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
        )
    elif codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        raise ValueError(f"image codec must be one of {IMAGE_CODECS}, got {codec!r}")
    if not ok:
        raise ValueError(f"cv2.imencode failed for codec {codec!r}")
    return buf.tobytes()


def image_codec_of(data: bytes) -> str | None:
    """``"png"`` or ``"jpeg"`` from the magic bytes of ``data``, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def decode_image(data: bytes, *, where: str = "image") -> np.ndarray:
    """Decode shard image bytes to a (256, 256, 3) uint8 RGB array; ``ValueError`` naming ``where``."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError(f"{where}: image bytes cannot be decoded ({len(data)} bytes)")
    if arr.shape != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"{where}: decoded image has shape {arr.shape}, expected ({CROP_SIZE}, {CROP_SIZE}, 3)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


# -------------------------------------------------------------------------------------------------- rows
def make_row(
    image: bytes,
    landmarks: np.ndarray,
    affine: np.ndarray,
    box: np.ndarray,
    *,
    source_id: str,
    frame_index: int,
    split: str,
    dataset: str,
) -> dict[str, Any]:
    """One shard row as a dict (column -> Python value); landmarks (L, 2) are crop pixels.

    ``ValueError`` if the landmarks are not finite (L, 2), the affine not a finite (2, 3) or the box not
    four finite numbers.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    aff = np.asarray(affine, dtype=np.float64)
    bx = np.asarray(box, dtype=np.float64).reshape(-1)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] < 1 or not np.all(np.isfinite(lm)):
        raise ValueError(f"{source_id}[{frame_index}]: landmarks must be finite (L, 2), got shape {lm.shape}")
    if aff.shape != (2, 3) or not np.all(np.isfinite(aff)):
        raise ValueError(f"{source_id}[{frame_index}]: affine must be a finite (2, 3) matrix, got {aff.shape}")
    if bx.shape != (4,) or not np.all(np.isfinite(bx)):
        raise ValueError(f"{source_id}[{frame_index}]: box must be 4 finite numbers, got {bx.tolist()}")
    return {
        "image": image,
        "landmarks": lm.astype(np.float32).reshape(-1).tolist(),
        "affine": aff.reshape(-1).tolist(),
        "box": bx.tolist(),
        "source_id": source_id,
        "frame_index": int(frame_index),
        "split": split,
        "dataset": dataset,
        "n_landmarks": int(lm.shape[0]),
        "schema_version": SCHEMA_VERSION,
    }


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows from ``make_row`` as a table with exactly ``SCHEMA``."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def check_schema(schema: pa.Schema, where: str) -> None:
    """``ValueError`` naming ``where`` unless ``schema`` has every shard column with its type."""
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"{where}: not an ldeq shard, missing columns {missing}")
    for name in COLUMNS:
        if not schema.field(name).type.equals(SCHEMA.field(name).type):
            raise ValueError(
                f"{where}: column {name!r} has type {schema.field(name).type}, expected {SCHEMA.field(name).type}"
            )


def check_table(table: pa.Table, where: str) -> None:
    """``ValueError`` naming ``where`` unless ``table`` has the shard columns and this schema version."""
    check_schema(table.schema, where)
    _check_version(table.column("schema_version"), where)


def _check_version(column: pa.ChunkedArray, where: str) -> None:
    versions = set(column.unique().to_pylist())
    if versions - {SCHEMA_VERSION}:
        raise ValueError(
            f"{where}: shard schema version {sorted(versions)}, this code reads {SCHEMA_VERSION} "
            "(re-run the preprocess stage)"
        )


# ------------------------------------------------------------------------------------------------ writer
@dataclass(frozen=True)
class ShardFile:
    """A written shard: path, row count, number of sources (stills or videos) and sha256 of the bytes."""

    path: Path
    rows: int
    sources: int
    sha256: str


class ShardWriter:
    """Write one split's rows into ``<split_dir>/part-NNNNN.parquet`` files, deterministically.

    Rows are written in the order given. A file is closed once it holds ``rows_per_shard`` rows; with
    ``keep_sources_together`` (videos) only at a change of ``source_id``, so no video spans two files.
    Row groups hold ``row_group_size`` rows; images are stored uncompressed (they are PNG/JPEG already).
    Same rows in the same order -> byte-identical files.
    """

    def __init__(
        self,
        split_dir: PathLike,
        *,
        rows_per_shard: int = 1024,
        row_group_size: int = 128,
        keep_sources_together: bool = False,
    ) -> None:
        if rows_per_shard < 1 or row_group_size < 1:
            raise ValueError(f"rows_per_shard and row_group_size must be >= 1, got {rows_per_shard}, {row_group_size}")
        self.split_dir = Path(split_dir)
        self.rows_per_shard = rows_per_shard
        self.row_group_size = row_group_size
        self.keep_sources_together = keep_sources_together
        self.files: list[ShardFile] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._last_source: str | None = None
        self._closed = False

    def write(self, table: pa.Table) -> None:
        """Append rows (a table with ``SCHEMA``'s columns), splitting into files as needed."""
        if self._closed:
            raise ValueError(f"{self.split_dir}: writer already closed")
        table = table.select(list(COLUMNS)).cast(SCHEMA)
        sources = table.column("source_id").to_pylist()
        start = 0
        for i, src in enumerate(sources):
            prev = sources[i - 1] if i > 0 else self._last_source
            full = self._pending_rows + (i - start) >= self.rows_per_shard
            if full and (not self.keep_sources_together or src != prev):
                self._append(table.slice(start, i - start))
                self._flush()
                start = i
        self._append(table.slice(start))

    def _append(self, part: pa.Table) -> None:
        if part.num_rows:
            self._pending.append(part)
            self._pending_rows += part.num_rows
            self._last_source = part.column("source_id")[-1].as_py()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        self._pending, self._pending_rows = [], 0
        self.split_dir.mkdir(parents=True, exist_ok=True)
        path = self.split_dir / PART_PATTERN.format(len(self.files))
        with atomic_path(path) as tmp:
            pq.write_table(
                table,
                tmp,
                row_group_size=self.row_group_size,
                compression={c: ("none" if c == "image" else "zstd") for c in COLUMNS},
                write_statistics=[c for c in COLUMNS if c not in _NO_STATS],
                use_dictionary=["source_id", "split", "dataset"],
            )
        n_sources = len(set(table.column("source_id").to_pylist()))
        self.files.append(ShardFile(path, table.num_rows, n_sources, file_sha256(path)))

    def close(self) -> list[ShardFile]:
        """Write the last file; return every file written."""
        if not self._closed:
            self._flush()
            self._closed = True
        return self.files


# ------------------------------------------------------------------------------------------------ readers
def list_splits(shards_dir: PathLike) -> list[str]:
    """Names of the split folders under ``shards_dir`` that hold shard files, sorted."""
    root = Path(shards_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: shards folder does not exist (run `ldeq data preprocess`)")
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("part-*.parquet")))


def split_files(shards_dir: PathLike, split: str) -> list[Path]:
    """The shard files of ``split`` in order; ``ValueError`` if there are none."""
    d = Path(shards_dir) / split
    files = sorted(d.glob("part-*.parquet"))
    if not files:
        known = list_splits(shards_dir) if Path(shards_dir).is_dir() else []
        raise ValueError(f"{d}: no shard files for split {split!r} (splits present: {known})")
    return files


def read_split_table(shards_dir: PathLike, split: str, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of ``split`` as one pyarrow table (``columns`` selects a subset), schema-checked."""
    tables = []
    for path in split_files(shards_dir, split):
        table = pq.read_table(path)
        check_table(table, os.fspath(path))
        tables.append(table.select(list(columns)) if columns is not None else table)
    return pa.concat_tables(tables)


def load_split(shards_dir: PathLike, split: str, **read_kwargs: Any) -> ray.data.Dataset:
    """``ray.data.read_parquet`` of one split (schema of every file and version of the first checked).

    Batches from ``iter_batches(batch_format="numpy")`` go through ``decode_batch``; with
    ``iter_torch_batches`` pass ``collate_fn=torch_collate_fn()``.
    """
    import ray.data

    files = split_files(shards_dir, split)
    for path in files:
        check_schema(pq.read_schema(path), os.fspath(path))
    _check_version(pq.read_table(files[0], columns=["schema_version"]).column(0), os.fspath(files[0]))
    return ray.data.read_parquet([os.fspath(f) for f in files], **read_kwargs)


def _column(batch: Mapping[str, Any] | pa.Table, name: str) -> np.ndarray | None:
    if isinstance(batch, pa.Table):
        return batch.column(name).to_numpy(zero_copy_only=False) if name in batch.column_names else None
    value = batch.get(name)
    if value is None:
        return None
    return value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)


def _stack(col: np.ndarray, width: int | None, name: str) -> np.ndarray:
    """(N,) object array of 1-D sequences (or an (N, K) array) -> (N, K) float64."""
    if col.dtype != object and col.ndim == 2:
        out = col.astype(np.float64)
    else:
        rows = [np.asarray(v, dtype=np.float64).reshape(-1) for v in col]
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise ValueError(f"batch column {name!r} mixes row lengths {sorted(lengths)}")
        out = np.stack(rows) if rows else np.zeros((0, width or 0))
    if width is not None and out.shape[1] != width:
        raise ValueError(f"batch column {name!r} has {out.shape[1]} values per row, expected {width}")
    return out


def decode_batch(batch: Mapping[str, Any] | pa.Table) -> dict[str, np.ndarray]:
    """Decode a batch of shard rows (dict of numpy columns, as Ray's ``iter_batches`` gives, or a table).

    Returns ``image`` (N, 256, 256, 3) uint8 RGB, ``landmarks`` (N, L, 2) float32 crop pixels, ``affine``
    (N, 2, 3) float64, ``box`` (N, 4) float64, plus the other columns present as numpy arrays. Columns
    absent from the batch are absent from the result.
    """
    out: dict[str, np.ndarray] = {}
    images = _column(batch, "image")
    if images is not None:
        out["image"] = (
            np.stack([decode_image(bytes(b), where=f"batch row {i}") for i, b in enumerate(images)])
            if len(images)
            else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        )
    lms = _column(batch, "landmarks")
    if lms is not None:
        flat = _stack(lms, None, "landmarks")
        if flat.shape[1] % 2:
            raise ValueError(f"batch column 'landmarks' has an odd number of values ({flat.shape[1]})")
        out["landmarks"] = flat.reshape(len(flat), -1, 2).astype(np.float32)
    aff = _column(batch, "affine")
    if aff is not None:
        out["affine"] = _stack(aff, 6, "affine").reshape(-1, 2, 3)
    box = _column(batch, "box")
    if box is not None:
        out["box"] = _stack(box, 4, "box")
    for name in ("source_id", "split", "dataset"):
        col = _column(batch, name)
        if col is not None:
            out[name] = col.astype(str)
    for name, dtype in (("frame_index", np.int32), ("n_landmarks", np.int16), ("schema_version", np.int16)):
        col = _column(batch, name)
        if col is not None:
            out[name] = col.astype(dtype)
    return out


def collate_torch(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``collate_fn`` for ``iter_torch_batches``: numeric columns of ``decode_batch`` as CPU tensors.

    ``image`` stays (N, 256, 256, 3) uint8 (use ``ldeq_core.geometry.to_model_input`` to normalise);
    string columns are dropped.
    """
    import torch

    return {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in decode_batch(batch).items() if v.dtype.kind in "uif"
    }


def torch_collate_fn() -> Any:
    """``collate_fn`` object for ``iter_torch_batches`` (Ray's callable-class form) applying ``collate_torch``."""
    from ray.data.collate_fn import NumpyBatchCollateFn

    class TorchCollate(NumpyBatchCollateFn):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
            return collate_torch(batch)

    return TorchCollate()


@dataclass(frozen=True)
class VideoSequence:
    """One video's rows in frame order; ``frames`` is None when images were not decoded."""

    source_id: str
    dataset: str
    frame_indices: np.ndarray  # (T,) int32
    frames: np.ndarray | None  # (T, 256, 256, 3) uint8 RGB crops
    landmarks: np.ndarray  # (T, L, 2) float32 crop pixels
    affines: np.ndarray  # (T, 2, 3) float64 frame -> crop
    boxes: np.ndarray  # (T, 4) float64 frame pixels

    def __len__(self) -> int:
        return len(self.frame_indices)


def iter_video_sequences(shards_dir: PathLike, split: str, *, decode_images: bool = True) -> Iterator[VideoSequence]:
    """Yield each video of ``split`` as a ``VideoSequence`` sorted by ``frame_index`` (pure pyarrow).

    Reads one shard file at a time (the writer keeps a video inside one file); ``ValueError`` if a video
    spans files, a frame index repeats, or the split holds stills (``frame_index == -1``).
    """
    seen: set[str] = set()
    columns = list(COLUMNS) if decode_images else [c for c in COLUMNS if c != "image"]
    for path in split_files(shards_dir, split):
        table = pq.read_table(path)
        check_table(table, os.fspath(path))
        table = table.select(columns)
        ids = table.column("source_id").to_numpy(zero_copy_only=False).astype(str)
        order = {sid: i for i, sid in enumerate(dict.fromkeys(ids.tolist()))}
        for sid in order:
            if sid in seen:
                raise ValueError(f"{path}: video {sid!r} also appears in an earlier shard file of {split!r}")
            seen.add(sid)
            idx = np.flatnonzero(ids == sid)
            rows = table.take(pa.array(idx))
            dec = decode_batch(rows)
            fi = dec["frame_index"]
            if np.any(fi < 0):
                raise ValueError(f"{path}: {sid!r} has still rows (frame_index -1); {split!r} is not a video split")
            if len(np.unique(fi)) != len(fi):
                raise ValueError(f"{path}: video {sid!r} repeats a frame index")
            srt = np.argsort(fi, kind="stable")
            yield VideoSequence(
                source_id=sid,
                dataset=str(dec["dataset"][0]),
                frame_indices=fi[srt],
                frames=dec["image"][srt] if decode_images else None,
                landmarks=dec["landmarks"][srt],
                affines=dec["affine"][srt],
                boxes=dec["box"][srt],
            )
