"""Validation of what clients send: video files (container from magic bytes, codec and size from the decoder,
every frame decoded once), and per-frame boxes / ground-truth landmarks (.npy or JSON).

Nothing here trusts a file name or extension: a text file renamed ``.mp4`` is rejected because its first bytes are
not a video container. Every failure raises :class:`serve.errors.ServiceError` with a message naming the file.
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldeq_core.npyio import load_npy
from ldeq_shared.errors import DataError
from ldeq_shared.video_io import verify_video
from serve.errors import ServiceError, unprocessable
from serve.settings import Limits

NPY_MAGIC = b"\x93NUMPY"
MAX_INDEX_BYTES = 256 * 1024 * 1024
_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


@dataclass(frozen=True)
class VideoFacts:
    """A validated video: container (from magic bytes), codec (decoder fourcc), decoded frame count and size."""

    container: str
    codec: str
    n_frames: int
    fps: float
    width: int
    height: int


def _mp4_boxes(size: int, path: Path) -> tuple[list[tuple[bytes, int, int]], str | None]:
    """Walk the top-level ISO-BMFF boxes; return (type, offset, size) of each and a problem description (or None)."""
    boxes: list[tuple[bytes, int, int]] = []
    with open(path, "rb") as fh:
        off = 0
        while off < size:
            fh.seek(off)
            hdr = fh.read(16)
            if len(hdr) < 8:
                return boxes, f"truncated: {size - off} stray bytes after the last complete box"
            box_size, box_type = struct.unpack(">I4s", hdr[:8])
            if box_size == 1:
                if len(hdr) < 16:
                    return boxes, "truncated: incomplete 64-bit box header"
                box_size = struct.unpack(">Q", hdr[8:16])[0]
            elif box_size == 0:
                box_size = size - off  # extends to the end of the file
            if box_size < 8:
                return boxes, f"malformed box {box_type!r} of size {box_size} at offset {off}"
            boxes.append((box_type, off, box_size))
            if off + box_size > size:
                name = box_type.decode("latin-1")
                return boxes, f"truncated: box '{name}' needs {off + box_size} bytes, the file has {size}"
            off += box_size
    return boxes, None


_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _sample_counts(data: bytes) -> list[int]:
    """Sample counts of every ``stsz``/``stz2`` box nested in moov/trak/mdia/minf/stbl boxes of ``data``."""
    counts: list[int] = []
    off = 0
    while off + 8 <= len(data):
        box_size, box_type = struct.unpack(">I4s", data[off : off + 8])
        header = 8
        if box_size == 1 and off + 16 <= len(data):
            box_size, header = struct.unpack(">Q", data[off + 8 : off + 16])[0], 16
        elif box_size == 0:
            box_size = len(data) - off
        if box_size < header or off + box_size > len(data):
            break
        body = data[off + header : off + box_size]
        if box_type in _CONTAINER_BOXES:
            counts += _sample_counts(body)
        elif box_type in (b"stsz", b"stz2") and len(body) >= 12:
            counts.append(struct.unpack(">I", body[8:12])[0])
        off += box_size
    return counts


def sniff_container(path: str | os.PathLike[str], name: str) -> str:
    """Container family from the file's first bytes: mp4, mov, matroska, webm or avi.

    Raises 415 ``unsupported_container`` if the bytes are not a known video container, and 422 ``invalid_video``
    for an MP4/MOV whose box structure is truncated, that has no ``moov`` index, or whose index lists no sample.
    """
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(64)
    if size == 0:
        raise unprocessable("invalid_video", f"{name}: empty file (0 bytes)")
    if len(head) >= 8 and head[4:8] in _MP4_FIRST_BOXES:
        boxes, problem = _mp4_boxes(size, p)
        brand = head[8:12] if head[4:8] == b"ftyp" else b""
        container = "mov" if brand == b"qt  " else "mp4"
        moov = [(off, n) for typ, off, n in boxes if typ == b"moov"]
        if problem is None and not moov:
            problem = "no 'moov' index box (an unfinished recording)"
        fragmented = any(typ == b"moof" for typ, _, _ in boxes)  # fMP4: samples live in moof boxes
        if problem is None and not fragmented and moov[0][1] <= MAX_INDEX_BYTES:
            with open(p, "rb") as fh:
                fh.seek(moov[0][0])
                counts = _sample_counts(fh.read(moov[0][1]))
            if not counts or max(counts) == 0:
                problem = "its index lists 0 frames (a zero-frame recording)"
        if problem is not None:
            raise unprocessable("invalid_video", f"{name}: {container} container is damaged: {problem}")
        return container
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head else "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    kind = "text" if _looks_like_text(head) else "unknown binary data"
    raise ServiceError(
        415, "unsupported_container", f"{name}: not a video container (first bytes look like {kind}: {head[:12]!r})"
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def probe_and_verify(path: str | os.PathLike[str], name: str, limits: Limits) -> VideoFacts:
    """Check container, codec, resolution and frame count of a video file against ``limits``; decode every frame.

    Status codes: 415 container/codec not accepted, 413 resolution or frame count over the limits, 422 a file
    that does not decode (corrupt, truncated, zero frames).
    """
    container = sniff_container(path, name)
    if container not in limits.accepted_containers:
        raise ServiceError(
            415,
            "unsupported_container",
            f"{name}: container {container!r} is not accepted ({limits.accepted_containers})",
        )
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise unprocessable("invalid_video", f"{name}: the {container} file cannot be opened by the decoder")
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    codec = fourcc.to_bytes(4, "little").decode("latin-1").strip("\x00 ").lower()
    if codec not in limits.accepted_codecs:
        raise ServiceError(415, "unsupported_codec", f"{name}: codec {codec!r} is not accepted")
    if width > limits.max_width or height > limits.max_height:
        raise ServiceError(
            413, "resolution_too_large", f"{name}: {width}x{height} exceeds {limits.max_width}x{limits.max_height}"
        )
    if declared > limits.max_frames:
        raise ServiceError(413, "too_many_frames", f"{name}: {declared} frames exceed the limit of {limits.max_frames}")
    try:
        info = verify_video(path)
    except DataError as exc:
        raise unprocessable("invalid_video", f"{name}: {exc.reason}") from None
    if info.n_frames > limits.max_frames:
        raise ServiceError(
            413, "too_many_frames", f"{name}: {info.n_frames} frames exceed the limit of {limits.max_frames}"
        )
    return VideoFacts(container, codec, info.n_frames, info.fps, info.width, info.height)


def parse_array(data: bytes, name: str, field: str) -> np.ndarray:
    """A numeric array from ``.npy`` bytes (detected by magic, no pickles) or JSON text; 422 when neither."""
    code = f"invalid_{field}"
    if data.startswith(NPY_MAGIC):
        try:
            arr = load_npy(io.BytesIO(data))
        except (ValueError, OSError, EOFError) as exc:
            raise unprocessable(code, f"{field} {name}: not a readable .npy array ({exc})") from None
    else:
        try:
            arr = np.asarray(json.loads(data.decode("utf-8")), dtype=np.float64)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
            raise unprocessable(code, f"{field} {name}: neither a .npy file nor a JSON numeric array ({exc})") from None
    if not (np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)):
        raise unprocessable(code, f"{field} {name}: expected real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_boxes(boxes: np.ndarray, name: str, n_frames: int, frame_size: tuple[int, int]) -> np.ndarray:
    """Validate (T, >=4) boxes (x1, y1, x2, y2 first) for a video of ``n_frames`` frames; return (T, 4) float64."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.size >= 4 and n_frames == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] < 4:
        raise unprocessable("invalid_boxes", f"boxes {name}: expected shape (T, 4) (x1, y1, x2, y2), got {b.shape}")
    if b.shape[0] != n_frames:
        raise unprocessable(
            "invalid_boxes", f"boxes {name}: {b.shape[0]} boxes for a video of {n_frames} frames (one box per frame)"
        )
    b = b[:, :4]
    bad = np.flatnonzero(~np.isfinite(b).all(axis=1))
    if bad.size:
        raise unprocessable("invalid_boxes", f"boxes {name}: NaN or inf box in frame {bad[0]}: {b[bad[0]].tolist()}")
    bad = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
    if bad.size:
        raise unprocessable(
            "invalid_boxes", f"boxes {name}: empty or inverted box in frame {bad[0]}: {b[bad[0]].tolist()}"
        )
    w, h = frame_size
    bad = np.flatnonzero((b[:, 2] < 0) | (b[:, 3] < 0) | (b[:, 0] >= w) | (b[:, 1] >= h))
    if bad.size:
        raise unprocessable(
            "invalid_boxes", f"boxes {name}: box of frame {bad[0]} {b[bad[0]].tolist()} lies outside the {w}x{h} frame"
        )
    return b


def check_landmarks(gt: np.ndarray, name: str, n_frames: int, n_landmarks: int) -> np.ndarray:
    """Validate ground-truth landmarks (T, L, 2) in frame pixels against the video and the model."""
    g = np.asarray(gt, dtype=np.float64)
    if g.shape != (n_frames, n_landmarks, 2):
        raise unprocessable(
            "invalid_landmarks",
            f"landmarks {name}: expected shape ({n_frames}, {n_landmarks}, 2) (frames, model landmarks, xy), "
            f"got {g.shape}",
        )
    bad = np.flatnonzero(~np.isfinite(g).all(axis=(1, 2)))
    if bad.size:
        raise unprocessable("invalid_landmarks", f"landmarks {name}: NaN or inf in frame {bad[0]}")
    return g
