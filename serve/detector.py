"""Face boxes for videos sent without boxes: an OpenCV Haar cascade to acquire a face, then landmark tracking.

Policy (one face per video):

1. **Acquisition.** The first frames are searched (up to ``max_search_frames``) with the frontal-face Haar cascade
   shipped in ``cv2.data.haarcascades``. If several faces are found, the **largest** (by box area; ties: left-most)
   is chosen. Frames before the first detection reuse that first box (``box_source="backfilled"``). A video
   with no face in the searched frames is rejected (422 ``no_face_detected``).
2. **Tracking.** Every next frame's box is the previous frame's predicted landmarks' tight box grown by
   ``track_expand`` (1.1, the detector-box / landmark-box ratio of our synthetic training data),
   ``box_source="tracked"``.
3. **Track loss** is declared when the tracked box is non-finite or smaller than half of ``min_size``, its centre
   leaves the frame, its IoU with the previous box falls below ``track_loss_iou`` (a jump), a **shot cut** is seen
   (mean absolute difference of 64x36 grey thumbnails above ``cut_threshold``), or, every ``verify_every``
   frames, the cascade finds faces around the box but none overlaps it.
4. **Re-acquisition** (``box_source="detected"``, and the RwR tracker is told to reset: a full solve instead of
   a warm start). Within a shot, only the same face may be re-acquired: the cascade runs around the last box
   (3x its size) and keeps the detection with the highest IoU with the last box if that IoU is at least
   ``reacquire_iou``. Otherwise the last box is held (``box_source="held"``) and detection is retried on the
   next frame; after ``max_hold_frames`` held frames, or right after a shot cut, the whole frame is searched
   and the face overlapping the last box is kept if any, else the largest face.

Haar boxes (eyebrows to mouth) are converted to landmark-style boxes with ``haar_to_landmark_box``, the median
relation measured on 258 faces of the 300-W HELEN training set, then grown by ``track_expand``.

Limits of the Haar detector, which is a fallback: send boxes from a real detector when you have one.

- Frontal faces only: profile and strongly rotated (in-plane > ~15 degrees) faces are missed, so tracking
  carries the box through them and a shot cut onto a profile face holds the old box until a frontal view.
- Small faces: the default ``min_size`` is 24 px; faces smaller than that are never found. Lowering ``min_size``
  (and ``scale_factor`` towards 1.05) finds smaller faces at a higher CPU cost and with more false positives.
- False positives: textured background (patterns, foliage, text) can produce face-like boxes, in particular with
  a low ``min_neighbors``. The largest-face rule makes a big false positive win over a small real face.
- Lighting: dark or back-lit faces are detected less often (frames are histogram-equalised first).
- Speed: about 30 ms per full 640x360 frame on one CPU core; around-the-box re-detection is much cheaper.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import cv2
import cv2.data  # the Haar cascade files' folder (opencv's stubs do not declare the submodule)
import numpy as np

from ldeq_core.geometry import landmarks_to_box
from ldeq_core.rwr import box_iou
from serve.settings import DetectorSettings

_local = threading.local()


def _cascade(name: str) -> cv2.CascadeClassifier:
    """The cascade ``name`` from ``cv2.data.haarcascades``, one instance per thread (the class is not re-entrant)."""
    cache = getattr(_local, "cascades", None)
    if cache is None:
        cache = _local.cascades = {}
    if name not in cache:
        path = Path(cv2.data.haarcascades) / name
        clf = cv2.CascadeClassifier(str(path))
        if clf.empty():
            raise RuntimeError(f"{path}: cannot load the Haar cascade (is opencv-python-headless 4.x installed?)")
        cache[name] = clf
    return cache[name]


def scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    """Grow (or shrink) an (x1, y1, x2, y2) box by ``factor`` about its centre."""
    b = np.asarray(box, dtype=np.float64)
    c = (b[:2] + b[2:4]) / 2.0
    half = (b[2:4] - b[:2]) * factor / 2.0
    return np.concatenate([c - half, c + half])


class HaarFaceDetector:
    """Frontal-face Haar cascade returning landmark-style boxes (x1, y1, x2, y2), largest first."""

    def __init__(self, cfg: DetectorSettings) -> None:
        self.cfg = cfg
        _cascade(cfg.cascade)  # fail early if the cascade is missing

    def raw_detect(self, frame_bgr: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
        """Haar boxes (K, 4) x1, y1, x2, y2 in frame pixels, inside ``roi`` (a box) when given, largest first."""
        h, w = frame_bgr.shape[:2]
        x0 = y0 = 0
        img = frame_bgr
        if roi is not None:
            x0, y0 = max(0, int(np.floor(roi[0]))), max(0, int(np.floor(roi[1])))
            x1, y1 = min(w, int(np.ceil(roi[2]))), min(h, int(np.ceil(roi[3])))
            if x1 - x0 < self.cfg.min_size or y1 - y0 < self.cfg.min_size:
                return np.zeros((0, 4))
            img = frame_bgr[y0:y1, x0:x1]
        grey = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        found = _cascade(self.cfg.cascade).detectMultiScale(
            grey,
            scaleFactor=self.cfg.scale_factor,
            minNeighbors=self.cfg.min_neighbors,
            minSize=(self.cfg.min_size, self.cfg.min_size),
        )
        if len(found) == 0:
            return np.zeros((0, 4))
        f = np.asarray(found, dtype=np.float64)
        boxes = np.stack([f[:, 0] + x0, f[:, 1] + y0, f[:, 0] + x0 + f[:, 2], f[:, 1] + y0 + f[:, 3]], axis=1)
        order = np.lexsort((boxes[:, 0], -(f[:, 2] * f[:, 3])))  # area descending, then left-most
        return boxes[order]

    def to_model_box(self, haar_box: np.ndarray) -> np.ndarray:
        """Haar box -> landmark-style box (300-W relation) grown by ``track_expand``."""
        x1, y1, x2, y2 = np.asarray(haar_box, dtype=np.float64)[:4]
        w, h = x2 - x1, y2 - y1
        a, b, c, d = self.cfg.haar_to_landmark_box
        return scale_box(np.array([x1 + a * w, y1 + b * h, x1 + c * w, y1 + d * h]), self.cfg.track_expand)

    def detect(self, frame_bgr: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
        """Landmark-style model boxes (K, 4), largest first."""
        raw = self.raw_detect(frame_bgr, roi)
        return np.stack([self.to_model_box(b) for b in raw]) if len(raw) else np.zeros((0, 4))


def choose_face(boxes: np.ndarray, last_box: np.ndarray | None, reacquire_iou: float) -> int | None:
    """Index of the face to follow: best IoU with ``last_box`` if >= ``reacquire_iou``, else the largest (index 0)."""
    if len(boxes) == 0:
        return None
    if last_box is not None:
        ious = [box_iou(b, last_box) for b in boxes]
        best = int(np.argmax(ious))
        if ious[best] >= reacquire_iou:
            return best
    return 0


def _thumb(frame_bgr: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )


def find_first_face(
    frames: Iterable[np.ndarray], detector: HaarFaceDetector, max_frames: int
) -> tuple[int, np.ndarray] | None:
    """(frame index, model box of the largest face) of the first frame with a detection among ``max_frames``."""
    for t, frame in enumerate(frames):
        if t >= max_frames:
            break
        boxes = detector.detect(frame)
        if len(boxes):
            return t, boxes[0]
    return None


class FaceTrack:
    """Per-video box provider implementing the policy of this module's docstring (used by the batcher)."""

    def __init__(
        self, detector: HaarFaceDetector, frame_size: tuple[int, int], first_index: int, first_box: np.ndarray
    ) -> None:
        self.detector = detector
        self.cfg = detector.cfg
        self.width, self.height = frame_size
        self.first_index = first_index
        self.first_box = np.asarray(first_box, dtype=np.float64)
        self.box: np.ndarray | None = None  # box used for the previous frame
        self.candidate: np.ndarray | None = None  # tracked box from the previous frame's landmarks
        self.thumb: np.ndarray | None = None
        self.held = 0  # consecutive frames with a lost track and no re-detection

    def box_for(self, t: int, frame_bgr: np.ndarray) -> tuple[np.ndarray, bool, str]:
        """(box, reset, source) for frame ``t``; ``reset`` asks the RwR tracker for a full solve."""
        thumb = _thumb(frame_bgr)
        cut = self.thumb is not None and float(np.abs(thumb - self.thumb).mean()) > self.cfg.cut_threshold
        self.thumb = thumb
        if t < self.first_index:
            return self._use(self.first_box), t == 0, "backfilled"
        if t == self.first_index:
            return self._use(self.first_box), t == 0, "detected"
        lost = cut or not self._plausible(self.candidate)
        if not lost and self.cfg.verify_every and t % self.cfg.verify_every == 0:
            assert self.candidate is not None
            around = self.detector.detect(frame_bgr, roi=scale_box(self.candidate, 2.0))
            lost = len(around) > 0 and max(box_iou(b, self.candidate) for b in around) < self.cfg.reacquire_iou
        if not lost:
            assert self.candidate is not None
            self.held = 0
            return self._use(self.candidate), False, "tracked"
        assert self.box is not None
        if cut or self.held >= self.cfg.max_hold_frames:
            # A new shot, or the face has been lost for too long: search the whole frame.
            found = self.detector.detect(frame_bgr)
            pick = choose_face(found, self.box, self.cfg.reacquire_iou)
        else:
            # Same shot: only the same face (around the last box, overlapping it) may be re-acquired.
            found = self.detector.detect(frame_bgr, roi=scale_box(self.box, 3.0))
            ious = [box_iou(b, self.box) for b in found]
            pick = int(np.argmax(ious)) if ious and max(ious) >= self.cfg.reacquire_iou else None
        if pick is None:
            self.held += 1
            return self._use(self.box), cut, "held"
        self.held = 0
        return self._use(found[pick]), True, "detected"

    def observe(self, t: int, landmarks: np.ndarray) -> None:
        """Record frame ``t``'s predicted landmarks (L, 2) in frame pixels; they give the next frame's box."""
        lm = np.asarray(landmarks, dtype=np.float64)
        self.candidate = scale_box(landmarks_to_box(lm), self.cfg.track_expand) if np.isfinite(lm).all() else None

    def _use(self, box: np.ndarray) -> np.ndarray:
        self.box = np.asarray(box, dtype=np.float64).copy()
        return self.box

    def _plausible(self, cand: np.ndarray | None) -> bool:
        if cand is None or self.box is None or not np.isfinite(cand).all():
            return False
        w, h = cand[2] - cand[0], cand[3] - cand[1]
        if min(w, h) < self.cfg.min_size / 2:
            return False
        cx, cy = (cand[0] + cand[2]) / 2, (cand[1] + cand[3]) / 2
        if not (0 <= cx < self.width and 0 <= cy < self.height):
            return False
        return box_iou(cand, self.box) >= self.cfg.track_loss_iou


class GivenBoxes:
    """Box provider for client-supplied boxes (T, 4): the tracker's own IoU rule handles jumps."""

    def __init__(self, boxes: np.ndarray) -> None:
        self.boxes = np.asarray(boxes, dtype=np.float64)

    def box_for(self, t: int, frame_bgr: np.ndarray) -> tuple[np.ndarray, bool, str]:
        return self.boxes[t], False, "given"

    def observe(self, t: int, landmarks: np.ndarray) -> None:
        return None
