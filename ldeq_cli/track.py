"""``ldeq track``: landmarks for every face of video and image files, written as OpenFace-style CSVs + overlays.

Per input ``<stem>``: ``<out>/<stem>.csv`` with one row per (frame, face) — ``frame, face_id, timestamp, x1, y1,
x2, y2, nfe, full_solve, box_source, x_0 .. x_{L-1}, y_0 .. y_{L-1}`` in frame pixels — and
``<out>/<stem>.overlay.mp4`` (images: ``.overlay.png``) with the landmarks and face ids drawn, same frame count and
frame rate as the input. Both are written to temporary files and renamed only when the input was read to its end,
so a failed input leaves nothing behind; one bad input never stops the others.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldeq_core.face_tracking import FaceResult, given_boxes_check
from ldeq_core.fileio import atomic_path
from ldeq_core.landmarker import FaceLandmarker
from ldeq_shared.errors import DataError
from ldeq_shared.video_io import iter_frames, probe_video, verify_video

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BOX_COLUMNS = ("frame", "face_id", "timestamp", "x1", "y1", "x2", "y2", "nfe", "full_solve", "box_source")


class NoFaceError(DataError):
    """No face was found in a whole input (an error only with ``--require-face``)."""


@dataclass
class TrackSummary:
    """What one input gave: frame count, face rows, distinct face ids, frames per second of the whole run."""

    path: Path
    frames: int = 0
    rows: int = 0
    face_ids: int = 0
    seconds: float = 0.0
    csv: Path | None = None
    overlay: Path | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def csv_header(n_landmarks: int) -> list[str]:
    """The CSV columns for ``n_landmarks`` points."""
    return [*BOX_COLUMNS, *(f"x_{i}" for i in range(n_landmarks)), *(f"y_{i}" for i in range(n_landmarks))]


def csv_row(frame: int, timestamp: float, face: FaceResult) -> list[str]:
    """One CSV row: box and landmarks with 3 decimals (sub-pixel precision of a 4x-downsampled heatmap)."""
    lm = np.asarray(face.landmarks, dtype=np.float64)
    nums = [f"{v:.3f}" for v in (*face.box[:4], *lm[:, 0], *lm[:, 1])]
    head = [str(frame), str(face.face_id), f"{timestamp:.4f}"]
    return [*head, *nums[:4], str(face.nfe), str(int(face.full_solve)), face.box_source, *nums[4:]]


def collect_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[TrackSummary]]:
    """Expand folders into their video and image files (sorted); missing paths come back as failures."""
    found: list[Path] = []
    missing: list[TrackSummary] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS)
        elif p.is_file():
            found.append(p)
        else:
            missing.append(TrackSummary(p, error=f"{p}: no such file or folder"))
    return found, missing


def output_stems(inputs: Sequence[Path]) -> list[str]:
    """Output names: the file stem, made unique with ``-2``, ``-3`` ... when two inputs share it."""
    seen: dict[str, int] = {}
    stems = []
    for p in inputs:
        n = seen.get(p.stem, 0) + 1
        seen[p.stem] = n
        stems.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return stems


def load_boxes(boxes: Path | None, input_path: Path, n_inputs: int) -> np.ndarray | None:
    """Per-frame (T, 4) boxes for ``input_path``: a ``.npy`` file (one input) or ``<folder>/<stem>.npy``."""
    if boxes is None:
        return None
    if boxes.is_dir():
        path = boxes / f"{input_path.stem}.npy"
        if not path.is_file():
            raise DataError(path, f"no boxes file for input {input_path.name}")
    else:
        if n_inputs != 1:
            raise DataError(boxes, f"a single boxes file was given for {n_inputs} inputs; pass a folder of <stem>.npy")
        path = boxes
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read boxes as .npy ({err})") from None
    return arr


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(path, "not a readable image (unknown format or corrupt file)")
    return img


def open_input(path: Path) -> tuple[Iterator[np.ndarray], int, float, bool]:
    """(BGR frames, declared frame count, fps, is_image) of a video or image file; ``DataError`` if neither."""
    if path.suffix.lower() in IMAGE_EXTS:
        return iter([_read_image(path)]), 1, 0.0, True
    info = probe_video(path)  # DataError: not a video, or unopenable
    if info.declared_frames <= 0 and info.fps <= 0:
        raise DataError(path, "not a video (no frames declared and no frame rate)")
    fps = info.fps if info.fps > 0 and math.isfinite(info.fps) else 30.0
    return iter_frames(path, strict=True), info.declared_frames, fps, False


def draw_faces(frame_bgr: np.ndarray, faces: Iterable[FaceResult]) -> np.ndarray:
    """The frame with each face's box, id and landmarks drawn (a colour per face id)."""
    out = frame_bgr.copy()
    for f in faces:
        hue = (f.face_id * 47) % 180
        color = tuple(int(c) for c in cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])
        x1, y1, x2, y2 = (round(float(v)) for v in f.box[:4])
        side = max(x2 - x1, y2 - y1)
        radius = max(1, round(side / 90))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, max(1, radius // 2))
        for x, y in np.asarray(f.landmarks):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(out, (round(float(x)), round(float(y))), radius, color, -1, cv2.LINE_AA)
        scale = max(0.4, side / 160)
        cv2.putText(
            out, f"id {f.face_id}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA
        )
    return out


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad to even width and height (MPEG-4 writers drop an odd last row or column)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def track_file(
    path: Path,
    stem: str,
    out_dir: Path,
    make_landmarker: Callable[[float], FaceLandmarker],
    *,
    boxes: np.ndarray | None = None,
    overlay: bool = True,
    require_face: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrackSummary:
    """Track every face of one input into ``<out_dir>/<stem>.csv`` (+ overlay); raises ``DataError`` on bad input.

    ``make_landmarker(fps)`` builds a fresh :class:`FaceLandmarker` (streaming filters need the frame rate).
    """
    t0 = time.perf_counter()
    frames, declared, fps, is_image = open_input(path)
    if boxes is not None:
        boxes = given_boxes_check(boxes, None, f"boxes for {path.name}")
        if not is_image and declared > 0 and len(boxes) != declared:
            raise DataError(path, f"{len(boxes)} boxes for a video of {declared} frames")
    landmarker = make_landmarker(fps)
    header = csv_header(landmarker.n_landmarks)
    summary = TrackSummary(path)
    csv_path = out_dir / f"{stem}.csv"
    ov_path = out_dir / (f"{stem}.overlay.png" if is_image else f"{stem}.overlay.mp4")
    ids: set[int] = set()
    with ExitStack() as stack:
        tmp_csv = stack.enter_context(atomic_path(csv_path))
        fh = stack.enter_context(open(tmp_csv, "w", newline="", encoding="utf-8"))
        writer = csv.writer(fh)
        writer.writerow(header)
        tmp_ov = stack.enter_context(atomic_path(ov_path)) if overlay else None
        video: cv2.VideoWriter | None = None
        try:
            for t, frame in enumerate(frames):
                if boxes is not None and t >= len(boxes):
                    raise DataError(path, f"the video has more frames than the {len(boxes)} boxes given")
                faces = landmarker.process(frame, None if boxes is None else boxes[t : t + 1])
                for face in faces:
                    writer.writerow(csv_row(t, t / fps if fps > 0 else 0.0, face))
                    ids.add(face.face_id)
                summary.rows += len(faces)
                summary.frames = t + 1
                if tmp_ov is not None:
                    drawn = draw_faces(frame, faces)
                    if is_image:
                        if not cv2.imwrite(os.fspath(tmp_ov), drawn):
                            raise DataError(ov_path, "cannot write the overlay image")
                    else:
                        if video is None:
                            h, w = _even(drawn).shape[:2]
                            video = cv2.VideoWriter(os.fspath(tmp_ov), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                            if not video.isOpened():
                                raise DataError(ov_path, "cv2.VideoWriter cannot open an mp4v writer")
                        video.write(_even(drawn))
                if progress is not None:
                    progress(1)
        finally:
            if video is not None:
                video.release()
        if boxes is not None and summary.frames != len(boxes):
            raise DataError(path, f"{len(boxes)} boxes for a video of {summary.frames} frames")
        if summary.rows == 0 and require_face:
            raise NoFaceError(path, f"no face found in {summary.frames} frame(s) (--require-face)")
        if tmp_ov is not None and not is_image:
            verify_video(tmp_ov, expected_frames=summary.frames)
        fh.flush()
    summary.face_ids = len(ids)
    summary.seconds = time.perf_counter() - t0
    summary.csv = csv_path
    summary.overlay = ov_path if overlay else None
    return summary


def read_track_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(header, rows as float array) of a CSV written by :func:`track_file`; ``box_source`` becomes NaN."""
    text = Path(path).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    src = header.index("box_source")
    rows = [[math.nan if i == src else float(v) for i, v in enumerate(r)] for r in reader]
    return header, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(header))
