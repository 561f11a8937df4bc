"""Video decoding and encoding with OpenCV, validated (spec §10.10: never trust CAP_PROP_FRAME_COUNT).

Frames are decoded as OpenCV gives them (BGR uint8); writers take RGB, like the rest of the project's
image arrays, and swap channels themselves.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldeq_core.fileio import atomic_path
from ldeq_shared.errors import DataError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VideoInfo:
    """Container facts of a video; ``n_frames`` is the decoded count once verified, else the declared one."""

    path: str
    n_frames: int
    declared_frames: int
    fps: float
    width: int
    height: int


def _open(path: PathLike) -> cv2.VideoCapture:
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "video file does not exist")
    cap = cv2.VideoCapture(os.fspath(p))
    if not cap.isOpened():
        cap.release()
        raise DataError(p, "cannot open as a video (not a video, truncated or unsupported codec)")
    return cap


def _info(path: PathLike, cap: cv2.VideoCapture, n_frames: int | None = None) -> VideoInfo:
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    return VideoInfo(
        path=os.fspath(path),
        n_frames=declared if n_frames is None else n_frames,
        declared_frames=declared,
        fps=float(cap.get(cv2.CAP_PROP_FPS)),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )


def probe_video(path: PathLike) -> VideoInfo:
    """Declared frame count, fps and frame size of ``path`` without decoding; ``DataError`` if unopenable."""
    cap = _open(path)
    try:
        return _info(path, cap)
    finally:
        cap.release()


def iter_frames(path: PathLike, *, strict: bool = True) -> Generator[np.ndarray, None, None]:
    """Yield the BGR uint8 frames of ``path`` until decoding stops.

    Raises ``DataError`` if the file cannot be opened or a frame changes size. With ``strict`` it also
    raises, after the last good frame, when no frame decodes or fewer frames decode than the container
    declares (a truncated download).
    """
    cap = _open(path)
    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        shape: tuple[int, ...] | None = None
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise DataError(path, f"frame {n} has shape {frame.shape}, earlier frames {shape}")
            n += 1
            yield frame
    finally:
        cap.release()
    if strict:
        _check_count(path, n, declared)


def _check_count(path: PathLike, decoded: int, declared: int) -> None:
    if decoded == 0:
        raise DataError(path, "no frame could be decoded")
    if decoded < declared:
        raise DataError(path, f"truncated video: decoded {decoded} of {declared} declared frames")


def read_frames(path: PathLike, *, rgb: bool = False) -> np.ndarray:
    """All frames of ``path`` as a (T, H, W, 3) uint8 array (BGR, or RGB with ``rgb``); strict decoding."""
    frames = list(iter_frames(path, strict=True))
    arr = np.stack(frames)
    return arr[..., ::-1].copy() if rgb else arr


def verify_video(
    path: PathLike, *, expected_frames: int | None = None, expected_size: tuple[int, int] | None = None
) -> VideoInfo:
    """Decode every frame of ``path`` and check it; return its ``VideoInfo`` with the decoded count.

    ``DataError`` when the file is not a decodable video, is truncated (fewer decoded than declared
    frames), has no frame, or differs from ``expected_frames`` / ``expected_size`` (width, height).
    """
    cap = _open(path)
    try:
        decoded = 0
        while cap.grab():
            decoded += 1
        info = _info(path, cap, decoded)
    finally:
        cap.release()
    _check_count(path, decoded, info.declared_frames)
    if expected_frames is not None and decoded != expected_frames:
        raise DataError(path, f"video has {decoded} frames but {expected_frames} are expected")
    if expected_size is not None and (info.width, info.height) != tuple(expected_size):
        raise DataError(path, f"frame size {info.width}x{info.height}, expected {expected_size[0]}x{expected_size[1]}")
    return info


def write_video(path: PathLike, frames_rgb: np.ndarray, fps: float, *, fourcc: str = "mp4v") -> VideoInfo:
    """Encode (T, H, W, 3) uint8 RGB frames to ``path`` atomically and verify the file decodes to T frames.

    H and W must be even (MPEG-4 encoders silently drop an odd last row/column).
    """
    frames = np.asarray(frames_rgb)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(f"{path}: expected non-empty (T, H, W, 3) uint8 RGB frames, got {frames.shape} {frames.dtype}")
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        raise ValueError(f"{path}: frame size {w}x{h} must be even for {fourcc}")
    if not fps > 0:
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(os.fspath(tmp), cv2.VideoWriter.fourcc(*fourcc), float(fps), (w, h))
        if not writer.isOpened():
            raise DataError(path, f"cv2.VideoWriter cannot open a {fourcc} writer")
        try:
            for frame in frames:
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
        finally:
            writer.release()
        info = verify_video(tmp, expected_frames=t, expected_size=(w, h))
    return VideoInfo(os.fspath(path), info.n_frames, info.declared_frames, info.fps, info.width, info.height)
