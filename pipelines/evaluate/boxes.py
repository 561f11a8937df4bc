"""Which boxes the evaluated trackers crop with (``evaluate.box_source``).

- ``given``: the dataset's per-frame boxes (WFLW-V ``bboxes``; animated stills: the landmark box, optionally with
  detector-like jitter ``data.w300.anim.box_jitter``).
- ``smoothed``: the given boxes through a causal One Euro filter (a stabilised region of interest, as production
  trackers use): what smoothing the box track alone buys.
- ``detector``: a real face detector (:func:`ldeq_core.face_detect.make_detector`) on every frame, its boxes grown
  to the dataset's convention; the detection overlapping the previous frame's box is kept (the first frame is
  matched to the given box, so the scored face is the annotated one), and the previous box is held when the
  detector misses the face. Frames before the face's first detection take that detection. A clip without a
  bboxes file always takes this track, its first-frame face picked by the ground-truth landmark box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ldeq_core.defaults import BOX_EXPAND
from ldeq_core.face_tracking import affinity_matrix, grow_box
from ldeq_core.filters import OneEuroFilter, run_filter
from ldeq_shared.eval_settings import BOX_SOURCES

SMOOTH_MIN_CUTOFF = 1.0  # Hz; One Euro on the box corners (frame pixels)
SMOOTH_BETA = 0.05
DETECTOR_BOX_EXPAND = BOX_EXPAND  # landmark box -> the 300-W / animated-stills box convention (box_expand 0.05 a side)
MIN_AFFINITY = 0.3


def smoothed_boxes(boxes: np.ndarray, fps: float) -> np.ndarray:
    """Causal One Euro filter of a (T, 4) box track along time."""
    freq = fps if fps > 0 and np.isfinite(fps) else 30.0
    return run_filter(OneEuroFilter(freq, SMOOTH_MIN_CUTOFF, SMOOTH_BETA), np.asarray(boxes, dtype=np.float64))


def detector_boxes(frames_bgr: Sequence[np.ndarray], given: np.ndarray, detector: Any) -> np.ndarray:
    """(T, 4) detector boxes following the annotated face (see the module docstring).

    ``given[0]`` only picks which face to follow: frames before the face's first detection take that first
    detection (backfilled), so no box comes from the annotations. ``ValueError`` if the face is never detected.
    """
    out = np.full((len(frames_bgr), 4), np.nan)
    ref = np.asarray(given[0], dtype=np.float64)[:4]
    first: int | None = None
    for t, frame in enumerate(frames_bgr):
        dets = np.asarray(detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), dtype=np.float64).reshape(-1, 5)
        if len(dets):
            cand = np.stack([grow_box(d, DETECTOR_BOX_EXPAND) for d in dets])
            score = affinity_matrix(ref[None], cand)[0]
            if score.max() >= MIN_AFFINITY:
                ref = cand[int(score.argmax())]
                first = t if first is None else first
        if first is not None:
            out[t] = ref
    if first is None:
        raise ValueError(f"the face detector found no face overlapping the annotated face in {len(frames_bgr)} frames")
    out[:first] = out[first]
    return out


def select_boxes(
    source: str, frames_bgr: Sequence[np.ndarray], given: np.ndarray, fps: float, detector: Any = None
) -> np.ndarray:
    """The box track of ``source`` for one video."""
    if source == "given":
        return np.asarray(given, dtype=np.float64)[:, :4]
    if source == "smoothed":
        return smoothed_boxes(np.asarray(given, dtype=np.float64)[:, :4], fps)
    if source == "detector":
        if detector is None:
            from ldeq_core.face_detect import make_detector

            detector = make_detector("auto")
        return detector_boxes(frames_bgr, given, detector)
    raise ValueError(f"evaluate.box_source must be one of {BOX_SOURCES}, got {source!r}")
