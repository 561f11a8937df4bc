"""evaluate.box_source: given, smoothed (causal One Euro) and detector box tracks."""

from __future__ import annotations

import numpy as np
import pytest

from ldeq_core.face_tracking import grow_box
from pipelines.evaluate.boxes import DETECTOR_BOX_EXPAND, detector_boxes, select_boxes, smoothed_boxes


class Scripted:
    def __init__(self, per_frame: list[np.ndarray]) -> None:
        self.per_frame, self.t = per_frame, 0

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        out = self.per_frame[self.t]
        self.t += 1
        return np.asarray(out, dtype=np.float64).reshape(-1, 5)


def test_smoothing_keeps_a_still_box_and_removes_most_jitter() -> None:
    still = np.tile([100.0, 80.0, 200.0, 180.0], (60, 1))
    np.testing.assert_allclose(smoothed_boxes(still, 30.0), still, atol=1e-9)
    jitter = still + np.random.default_rng(0).normal(0, 4.0, still.shape)
    out = smoothed_boxes(jitter, 30.0)
    assert np.abs(np.diff(out, axis=0)).mean() < 0.5 * np.abs(np.diff(jitter, axis=0)).mean()
    assert np.abs(out[0] - jitter[0]).max() == 0.0  # causal: the first frame is the first box


def test_detector_track_follows_the_annotated_face_and_holds_on_misses() -> None:
    face = np.array([100.0, 80.0, 200.0, 180.0, 0.9])
    shift = [np.array([t, 0, t, 0, 0]) for t in range(3)]
    other = np.array([300.0, 80.0, 400.0, 180.0, 0.99])  # a better-scored face elsewhere: never chosen
    script = [np.stack([other, face + d]) for d in shift] + [other[None]] * 2
    given = np.tile(grow_box(face, DETECTOR_BOX_EXPAND), (5, 1))
    frames = [np.zeros((240, 480, 3), np.uint8)] * 5
    out = detector_boxes(frames, given, Scripted(script))
    expected = [grow_box(face + d, DETECTOR_BOX_EXPAND) for d in shift]
    np.testing.assert_allclose(out[:3], expected)
    np.testing.assert_allclose(out[3:], [expected[2]] * 2)  # the face is missed: its last box is held


def test_detector_track_backfills_before_the_first_detection_and_needs_the_face() -> None:
    face = np.array([100.0, 80.0, 200.0, 180.0, 0.9])
    given = np.tile(grow_box(face, DETECTOR_BOX_EXPAND) + 3.0, (4, 1))  # only picks the face, never output
    frames = [np.zeros((240, 480, 3), np.uint8)] * 4
    moved = face + np.array([5.0, 0.0, 5.0, 0.0, 0.0])
    script = [np.zeros((0, 5)), np.zeros((0, 5)), face[None], moved[None]]
    out = detector_boxes(frames, given, Scripted(script))
    first = grow_box(face, DETECTOR_BOX_EXPAND)
    np.testing.assert_allclose(out[:3], [first] * 3)
    np.testing.assert_allclose(out[3], grow_box(moved, DETECTOR_BOX_EXPAND))
    elsewhere = np.array([[300.0, 80.0, 400.0, 180.0, 0.99]])
    with pytest.raises(ValueError, match="no face overlapping the annotated face in 4 frames"):
        detector_boxes(frames, given, Scripted([elsewhere] * 4))


def test_unknown_box_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="box_source"):
        select_boxes("oracle", [], np.zeros((1, 4)), 30.0)
    from pipelines.evaluate.stage import eval_settings

    with pytest.raises(ValueError, match="box_source"):
        eval_settings({"evaluate": {"box_source": "oracle"}})
