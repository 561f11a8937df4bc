"""WFLW-V layout (spec §5.4): ``<root>/{videos,landmarks,bboxes}/<id>.{mp4,npy,npy}``.

``landmarks/<id>.npy`` is (T, L, 2) float (x, y) in frame pixels, L = 98 for WFLW-V (68 allowed for
animated stills of 300-W); ``bboxes/<id>.npy`` is (T, >=4) with x1, y1, x2, y2 first. Readers verify
that the video decodes to exactly T frames (spec §10.10) and that the annotations are sane.

A clip without a ``bboxes`` file loads with ``require_boxes=False``: its boxes are then the tight landmark box of
each frame grown by :data:`LANDMARK_BOX_EXPAND` (the 300-W convention) and ``VideoClip.boxes_given`` is False, so
that the evaluation stage finds the face with the detector instead (:mod:`pipelines.evaluate.boxes`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ldeq_core.defaults import BOX_EXPAND
from ldeq_core.fileio import save_npy_atomic
from ldeq_core.geometry import grow_box, landmarks_to_box
from ldeq_core.npyio import load_npy
from ldeq_shared.errors import BadItem, DataError
from ldeq_shared.video_io import VideoInfo, iter_frames, probe_video, verify_video, write_video

N_POINTS = 98
LANDMARK_BOX_EXPAND = BOX_EXPAND  # boxes of a clip without a bboxes file: landmark box x 1.1 (the 300-W convention)
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VideoClip:
    """A validated WFLW-V clip; ``landmarks`` (T, L, 2) and ``boxes`` (T, 4) are float64 frame pixels."""

    id: str
    path: Path
    landmarks: np.ndarray
    boxes: np.ndarray
    fps: float
    n_frames: int
    frame_size: tuple[int, int]  # (width, height)
    boxes_given: bool = True  # False: no bboxes file, ``boxes`` are grown ground-truth landmark boxes

    def frames(self) -> Iterator[np.ndarray]:
        """Decode the clip's BGR frames (strict: a truncated file raises ``DataError``)."""
        return iter_frames(self.path)


def clip_paths(root: PathLike, vid_id: str) -> tuple[Path, Path, Path]:
    """(video, landmarks, bboxes) paths of clip ``vid_id``."""
    if not vid_id or any(c in vid_id for c in "/\\") or vid_id in (".", ".."):
        raise ValueError(f"invalid video id {vid_id!r}")
    root = Path(root)
    return (root / "videos" / f"{vid_id}.mp4", root / "landmarks" / f"{vid_id}.npy", root / "bboxes" / f"{vid_id}.npy")


def list_wflw_v(root: PathLike) -> list[str]:
    """Sorted ids having any of a video, landmarks or bboxes file (incomplete clips fail on loading)."""
    root = Path(root)
    ids: set[str] = set()
    for sub, ext in (("videos", ".mp4"), ("landmarks", ".npy"), ("bboxes", ".npy")):
        d = root / sub
        if d.is_dir():
            # names starting with "." are hidden or temporary files of an atomic write
            ids.update(p.name[: -len(ext)] for p in d.glob(f"*{ext}") if not p.name.startswith("."))
    return sorted(ids)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "annotation file does not exist")
    try:
        arr = load_npy(path)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(path, f"cannot load as .npy ({err})") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(path, f"expected a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _first(mask: npt.ArrayLike) -> int:
    return int(np.flatnonzero(mask)[0])


def check_landmarks(path: PathLike, landmarks: np.ndarray, n_points: int | None) -> None:
    """``DataError`` unless ``landmarks`` is finite (T>0, L, 2) with L == ``n_points`` (any L if None)."""
    lm = np.asarray(landmarks)
    if lm.ndim != 3 or lm.shape[2] != 2 or lm.shape[0] == 0:
        raise DataError(path, f"landmarks must be (T, L, 2) with T > 0, got shape {lm.shape}")
    if n_points is not None and lm.shape[1] != n_points:
        raise DataError(path, f"wrong landmark count: {lm.shape[1]}, expected {n_points}")
    bad = ~np.isfinite(lm).all(axis=(1, 2))
    if bad.any():
        raise DataError(path, f"NaN or inf landmarks in frame {_first(bad)}")


def check_boxes(path: PathLike, boxes: np.ndarray, frame_size: tuple[int, int] | None = None) -> None:
    """``DataError`` unless ``boxes`` is (T, >=4), finite, non-empty and (given a frame size) on the frame."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] < 4 or b.shape[0] == 0:
        raise DataError(path, f"boxes must be (T, >=4) with T > 0, got shape {b.shape}")
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    bad = ~np.isfinite(b[:, :4]).all(axis=1)
    if bad.any():
        raise DataError(path, f"NaN or inf box in frame {_first(bad)}: {b[_first(bad), :4].tolist()}")
    bad = (x2 <= x1) | (y2 <= y1)
    if bad.any():
        raise DataError(path, f"empty or inverted box in frame {_first(bad)}: {b[_first(bad), :4].tolist()}")
    if frame_size is not None:
        w, h = frame_size
        bad = (x2 < 0) | (y2 < 0) | (x1 >= w) | (y1 >= h)
        if bad.any():
            raise DataError(
                path,
                f"box in frame {_first(bad)} {b[_first(bad), :4].tolist()} lies entirely outside the {w}x{h} frame",
            )


def load_wflw_v_clip(
    root: PathLike,
    vid_id: str,
    *,
    n_points: int | None = N_POINTS,
    decode: bool = True,
    require_boxes: bool = True,
) -> VideoClip:
    """Load and validate clip ``vid_id``; any problem raises ``DataError`` naming the file.

    With ``decode`` every frame is decoded to count frames exactly; otherwise the container's declared
    count is trusted. Without ``require_boxes`` a missing bboxes file is allowed (see the module docstring).
    """
    video, lm_path, box_path = clip_paths(root, vid_id)
    landmarks = _load_npy(lm_path)
    check_landmarks(lm_path, landmarks, n_points)
    boxes_given = require_boxes or box_path.exists()
    boxes = _load_npy(box_path) if boxes_given else landmark_boxes(landmarks)
    info: VideoInfo = verify_video(video) if decode else probe_video(video)
    if info.n_frames <= 0:
        raise DataError(video, "video has no frames")
    check_boxes(box_path, boxes, (info.width, info.height))
    if len(boxes) != len(landmarks):
        raise DataError(box_path, f"{len(boxes)} boxes but {len(landmarks)} landmark frames")
    if info.n_frames != len(landmarks):
        raise DataError(video, f"video has {info.n_frames} frames but the annotations have {len(landmarks)}")
    size = (info.width, info.height)
    return VideoClip(vid_id, video, landmarks, boxes[:, :4].copy(), info.fps, info.n_frames, size, boxes_given)


def landmark_boxes(landmarks: np.ndarray, expand: float = LANDMARK_BOX_EXPAND) -> np.ndarray:
    """(T, 4) boxes: each frame's tight landmark box grown by ``expand`` about its centre."""
    return grow_box(landmarks_to_box(np.asarray(landmarks, dtype=np.float64)), expand)


def scan_wflw_v(
    root: PathLike,
    ids: Iterable[str] | None = None,
    *,
    n_points: int | None = N_POINTS,
    decode: bool = True,
    require_boxes: bool = True,
) -> tuple[list[VideoClip], list[BadItem]]:
    """Load every clip (``ids`` or ``list_wflw_v(root)``); return (good clips, bad ids with reasons)."""
    good: list[VideoClip] = []
    bad: list[BadItem] = []
    for vid in list_wflw_v(root) if ids is None else ids:
        try:
            good.append(load_wflw_v_clip(root, vid, n_points=n_points, decode=decode, require_boxes=require_boxes))
        except DataError as err:
            bad.append(BadItem.from_error(vid, err))
    return good, bad


def write_video_clip(
    root: PathLike, vid_id: str, frames_rgb: np.ndarray, landmarks: np.ndarray, boxes: np.ndarray, fps: float
) -> VideoClip:
    """Write one clip in the WFLW-V layout (mp4v video, float64 .npy annotations), each file atomically.

    The video is verified to decode to T frames before it is put in place.
    """
    video, lm_path, box_path = clip_paths(root, vid_id)
    frames = np.asarray(frames_rgb)
    lm = np.asarray(landmarks, dtype=np.float64)
    bx = np.asarray(boxes, dtype=np.float64)
    check_landmarks(lm_path, lm, None)
    if frames.ndim != 4:
        raise ValueError(f"{video}: frames must be (T, H, W, 3), got shape {frames.shape}")
    check_boxes(box_path, bx, (frames.shape[2], frames.shape[1]))
    if not len(frames) == len(lm) == len(bx):
        raise ValueError(f"{vid_id}: {len(frames)} frames, {len(lm)} landmark frames, {len(bx)} boxes differ")
    info = write_video(video, frames, fps)
    save_npy_atomic(lm_path, lm)
    save_npy_atomic(box_path, bx)
    return VideoClip(vid_id, video, lm, bx[:, :4].copy(), info.fps, info.n_frames, (info.width, info.height))


def read_id_list(path: PathLike) -> list[str]:
    """Video ids, one per line (e.g. ``easy_video_IDs.txt``); blank lines ignored, order kept."""
    return [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def read_download_ranges(path: PathLike) -> dict[str, tuple[int, int]]:
    """``<id> <start> <end>`` lines (0-based, inclusive) as {id: (start, end)}; malformed lines raise."""
    ranges: dict[str, tuple[int, int]] = {}
    for n, ln in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not ln.strip():
            continue
        parts = ln.split()
        try:
            vid, start, end = parts[0], int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise DataError(path, f"line {n}: expected '<id> <start> <end>', got {ln!r}") from None
        if len(parts) != 3 or start < 0 or end < start or vid in ranges:
            raise DataError(path, f"line {n}: bad or duplicate range {ln!r}")
        ranges[vid] = (start, end)
    return ranges
