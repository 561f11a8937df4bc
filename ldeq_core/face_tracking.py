"""Every face of a stream: detection, association across frames, and one RwR state per face track.

:class:`MultiFaceTracker` takes frames one at a time (a file, a webcam, a stream) and returns per-face landmarks.

Policy, per frame:

1. **Boxes from landmarks.** A live track's box for frame t is the tight box of its frame t-1 landmarks grown by
   ``box_expand`` (1.1: the 300-W crop convention the zoo models were trained with), which follows the face
   without running the detector.
2. **Detection** runs on the first frame, every ``detect_every`` frames, whenever a track is lost, and while there
   is no track. Its boxes (landmark-box convention, see :mod:`ldeq_core.face_detect`) are matched to the tracks'
   boxes with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on an overlap score (the mean of
   IoU and intersection over the smaller box, :func:`affinity_matrix`); a pair counts when it scores at least
   ``match_iou``. A matched track keeps its landmark box unless it was lost or the IoU is below
   ``recenter_iou``: then it moves to the detection and gets a full solve (drift repair). Unmatched detections
   that do not overlap a live track start new tracks (new ids, never reused) while fewer than ``max_faces`` are
   live. A track missed by ``max_missed`` consecutive detection rounds ends.
3. **Track loss**: a landmark box that is non-finite, smaller than ``min_face`` pixels or centred off the frame
   marks the track lost; it keeps its last box for this frame's detection and ends unless a detection matches it.
   Two tracks that converge on one face (IoU above ``duplicate_iou``) keep the older id.
4. **Landmarks**: all live tracks of the frame are solved in one batch by a
   :class:`~ldeq_core.streams.FrameSyncRunner` over the :class:`~ldeq_core.rwr.RwRTracker`, one stream per track
   id; a new track's first frame is a full solve. An optional streaming temporal filter (``ldeq_core.filters``)
   runs per stream on the frame-pixel landmarks.

With ``boxes`` given to :meth:`MultiFaceTracker.process`, detection is skipped and each given box is one face
(ids 0..N-1 in the given order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from ldeq_core.defaults import BOX_EXPAND
from ldeq_core.filters import TemporalFilter, make_filter
from ldeq_core.geometry import grow_box, landmarks_to_box
from ldeq_core.rwr import RwRTracker
from ldeq_core.streams import FrameInput, FrameSyncRunner


class Detector(Protocol):
    """Face detector: (N, 5) rows x1, y1, x2, y2, score in the landmark-box convention, best first."""

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FaceTrackingConfig:
    """Detection and association settings of :class:`MultiFaceTracker` (see the module docstring)."""

    detect_every: int = 10
    max_faces: int | None = None
    match_iou: float = 0.3
    recenter_iou: float = 0.5
    duplicate_iou: float = 0.6
    max_missed: int = 2
    min_face: float = 12.0
    box_expand: float = BOX_EXPAND

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 or None, got {self.max_faces}")
        for name in ("match_iou", "recenter_iou", "duplicate_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_missed < 1 or self.min_face <= 0 or self.box_expand <= 0:
            raise ValueError("max_missed must be >= 1, min_face and box_expand > 0")


@dataclass
class FaceResult:
    """One face in one frame: ``box`` (4,) x1, y1, x2, y2 and ``landmarks`` (L, 2), both in frame pixels."""

    face_id: int
    box: np.ndarray
    landmarks: np.ndarray
    nfe: int
    full_solve: bool
    box_source: str  # detected | tracked | given


@dataclass(eq=False)
class _Track:
    face_id: int
    box: np.ndarray
    source: str
    reset: bool = True
    lost: bool = False
    missed: int = 0
    age: int = 0
    landmarks: np.ndarray | None = field(default=None, repr=False)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1, y1, x2, y2 boxes, as an (N, M) array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def affinity_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise overlap score in [0, 1]: the mean of IoU and intersection over the smaller box.

    IoU alone misses a track whose landmark box shrank inside the face's detection box (IoU 0.15, yet the same
    face); the intersection-over-minimum term keeps that pair, while two side-by-side faces still score 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iou = iou_matrix(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :]
    inter = iou * union / (1.0 + iou)  # from iou = inter / (union - inter)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    iomin = np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0)
    return 0.5 * (iou + iomin)


def match_boxes(tracks: np.ndarray, detections: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Hungarian assignment maximising the total :func:`affinity_matrix` score; pairs scoring >= ``min_score``."""
    if len(tracks) == 0 or len(detections) == 0:
        return []
    score = affinity_matrix(tracks, detections)
    from scipy.optimize import linear_sum_assignment  # lazy: scipy.optimize costs ~0.3 s at import

    rows, cols = linear_sum_assignment(-score)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if score[r, c] >= min_score and score[r, c] > 0]


class MultiFaceTracker:
    """Streaming landmarks for every face: ``process(frame_bgr)`` -> one :class:`FaceResult` per live face.

    ``tracker`` is an :class:`~ldeq_core.rwr.RwRTracker` (its config sets RwR vs per-frame, the budget and gamma);
    ``detector`` is any object with ``detect(frame_rgb) -> (N, 5)`` (landmark-box convention); ``filter_name`` and
    ``filter_params`` add a per-track streaming filter (a One Euro filter needs ``freq``, the frame rate).
    """

    def __init__(
        self,
        tracker: RwRTracker,
        detector: Detector | None,
        cfg: FaceTrackingConfig | None = None,
        filter_name: str = "none",
        filter_params: dict[str, Any] | None = None,
    ) -> None:
        self.tracker = tracker
        self.runner = FrameSyncRunner(tracker)  # one stream per track id (its RwR state and filter)
        self.detector = detector
        self.cfg = cfg or FaceTrackingConfig()
        self._make_filter: Callable[[], TemporalFilter] | None = None
        if filter_name != "none":
            params = dict(filter_params or {})
            make_filter(filter_name, **params)  # validate now, not at the first face
            self._make_filter = lambda: make_filter(filter_name, **params)
        self.tracks: list[_Track] = []
        self.frame_index = 0
        self._next_id = 0
        self._detect_next = True

    def reset(self) -> None:
        """Forget every track (a shot cut or a new video); ids keep increasing."""
        for tr in self.tracks:
            self.runner.drop_stream(tr.face_id)
        self.tracks = []
        self._detect_next = True

    def process(self, frame_bgr: np.ndarray, boxes: np.ndarray | None = None) -> list[FaceResult]:
        """Landmarks of every face in ``frame_bgr`` (H, W, 3) uint8 BGR; ``boxes`` (N, 4) skips detection."""
        frame = np.asarray(frame_bgr)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 BGR, got {frame.shape} {frame.dtype}")
        if boxes is not None:
            self._use_given(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        else:
            self._update_tracks(frame)
        self.frame_index += 1
        if not self.tracks:
            return []
        live = self.tracks
        for tr in live:
            if not self.runner.has_stream(tr.face_id):
                self.runner.add_stream(tr.face_id, filter=self._make_filter() if self._make_filter else None)
        outs = self.runner.step(
            [FrameInput(tr.face_id, tr.box, frame=frame, reset=tr.reset, box_source=tr.source) for tr in live]
        )
        results = []
        for tr, o in zip(live, outs, strict=True):
            tr.landmarks = o.raw_landmarks
            results.append(FaceResult(tr.face_id, tr.box.copy(), o.landmarks, o.nfe, o.full_solve, tr.source))
            tr.reset, tr.age = False, tr.age + 1
        return results

    # ------------------------------------------------------------------------------------------ internals
    def _use_given(self, boxes: np.ndarray) -> None:
        while len(self.tracks) < len(boxes):
            self.tracks.append(self._new_track(boxes[len(self.tracks)], "given", face_id=len(self.tracks)))
        for tr in self.tracks[len(boxes) :]:
            self.runner.drop_stream(tr.face_id)
        self.tracks = self.tracks[: len(boxes)]
        for tr, box in zip(self.tracks, boxes, strict=True):
            tr.box = box.copy()

    def _new_track(self, box: np.ndarray, source: str, face_id: int | None = None) -> _Track:
        if face_id is None:
            face_id, self._next_id = self._next_id, self._next_id + 1
        return _Track(face_id=face_id, box=np.asarray(box, dtype=np.float64)[:4].copy(), source=source)

    def _end(self, tr: _Track) -> None:
        self.runner.drop_stream(tr.face_id)
        self._detect_next = True

    def _update_tracks(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        for tr in self.tracks:  # 1. boxes from the previous landmarks; 3. a lost track keeps its last box
            box = grow_box(landmarks_to_box(tr.landmarks), self.cfg.box_expand) if tr.landmarks is not None else None
            tr.lost = box is None or not self._plausible(box, w, h)
            if not tr.lost:
                assert box is not None
                tr.box, tr.source = box, "tracked"
        self.tracks = self._drop_duplicates(self.tracks)
        lost = any(tr.lost for tr in self.tracks)
        due = self.frame_index % self.cfg.detect_every == 0
        if self.detector is not None and (due or lost or self._detect_next or not self.tracks):
            self._detect_next = False
            self._associate(frame)
        for tr in [t for t in self.tracks if t.lost]:  # lost and not re-found by a detection this frame
            self._end(tr)
        self.tracks = [t for t in self.tracks if not t.lost]

    def _plausible(self, box: np.ndarray, w: int, h: int) -> bool:
        if not np.isfinite(box).all():
            return False
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return min(box[2] - box[0], box[3] - box[1]) >= self.cfg.min_face and 0 <= cx < w and 0 <= cy < h

    def _drop_duplicates(self, tracks: list[_Track]) -> list[_Track]:
        if len(tracks) < 2:
            return tracks
        iou = iou_matrix(np.stack([t.box for t in tracks]), np.stack([t.box for t in tracks]))
        keep: list[int] = []
        for i in sorted(range(len(tracks)), key=lambda k: tracks[k].face_id):  # older ids first
            if all(iou[i, k] <= self.cfg.duplicate_iou for k in keep):
                keep.append(i)
            else:
                self._end(tracks[i])
        return [tracks[i] for i in sorted(keep, key=lambda k: tracks[k].face_id)]

    def _associate(self, frame: np.ndarray) -> None:
        assert self.detector is not None
        dets = np.asarray(self.detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), dtype=np.float64)
        dets = dets.reshape(-1, dets.shape[-1] if dets.size else 5)
        det_boxes = np.stack([grow_box(d, self.cfg.box_expand) for d in dets]) if len(dets) else np.zeros((0, 4))
        track_boxes = np.stack([t.box for t in self.tracks]) if self.tracks else np.zeros((0, 4))
        pairs = match_boxes(track_boxes, det_boxes, self.cfg.match_iou)
        matched_t = {i for i, _ in pairs}
        iou = iou_matrix(track_boxes, det_boxes)
        for i, j in pairs:
            tr = self.tracks[i]
            tr.missed = 0
            if tr.lost or iou[i, j] < self.cfg.recenter_iou:  # lost or drifted off the face: re-centre, full solve
                tr.box, tr.source, tr.reset, tr.lost = det_boxes[j].copy(), "detected", True, False
        survivors = []
        for i, tr in enumerate(self.tracks):
            if i not in matched_t and not tr.lost:
                tr.missed += 1
                if tr.missed >= self.cfg.max_missed:
                    self._end(tr)
                    continue
            survivors.append(tr)
        self.tracks = survivors
        # 2. new faces: unmatched detections not overlapping a live track, best score first
        taken = {j for _, j in pairs}
        for j in range(len(det_boxes)):
            if self.cfg.max_faces is not None and len(self.tracks) >= self.cfg.max_faces:
                break
            if j in taken:
                continue
            live = np.array([t.box for t in self.tracks if not t.lost]).reshape(-1, 4)
            if len(live) and affinity_matrix(det_boxes[j : j + 1], live).max() >= self.cfg.match_iou:
                continue
            self.tracks.append(self._new_track(det_boxes[j], "detected"))


def given_boxes_check(boxes: np.ndarray, n_frames: int | None, source: str) -> np.ndarray:
    """Validate a (T, 4+) per-frame box array for one face; errors name ``source`` and the problem."""
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] < 4:
        raise ValueError(f"{source}: boxes must be a (T, 4) array x1, y1, x2, y2, got shape {b.shape}")
    b = b[:, :4].astype(np.float64)
    if n_frames is not None and len(b) != n_frames:
        raise ValueError(f"{source}: {len(b)} boxes for a video of {n_frames} frames")
    bad = np.flatnonzero(~np.isfinite(b).all(axis=1))
    if bad.size:
        raise ValueError(f"{source}: NaN or inf box at frame(s) {bad[:5].tolist()}")
    inverted = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
    if inverted.size:
        raise ValueError(f"{source}: empty or inverted box at frame(s) {inverted[:5].tolist()}")
    return b


def faces_summary(results: Sequence[Sequence[FaceResult]]) -> dict[str, int]:
    """Counts over a video's per-frame results: frames, frames with a face, face rows, distinct ids."""
    ids = {f.face_id for frame in results for f in frame}
    return {
        "frames": len(results),
        "frames_with_face": sum(1 for frame in results if frame),
        "rows": sum(len(frame) for frame in results),
        "face_ids": len(ids),
    }
