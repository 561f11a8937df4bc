"""Haar detection + landmark tracking policy: box conversion, face choice, tracking, loss, shot cuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldeq_core.rwr import box_iou
from ldeq_shared.video_io import iter_frames
from serve.detector import FaceTrack, HaarFaceDetector, choose_face, find_first_face, scale_box
from serve.settings import DetectorSettings
from tests.serve.helpers import HAMILTON


def test_haar_box_to_model_box_by_hand() -> None:
    det = HaarFaceDetector(DetectorSettings())
    # Haar box side 100 at (100, 50): landmark box (109, 73, 192.5, 156), then grown by 1.1 about its centre.
    np.testing.assert_allclose(
        det.to_model_box(np.array([100.0, 50.0, 200.0, 150.0])), [104.825, 68.85, 196.675, 160.15], atol=1e-9
    )
    np.testing.assert_allclose(scale_box(np.array([0.0, 0.0, 10.0, 20.0]), 2.0), [-5, -10, 15, 30])


def test_choose_face_sticks_by_iou_else_largest() -> None:
    boxes = np.array([[0.0, 0.0, 100.0, 100.0], [200.0, 200.0, 260.0, 260.0]])  # largest first
    assert choose_face(boxes, None, 0.1) == 0
    assert choose_face(boxes, np.array([205.0, 205.0, 265.0, 265.0]), 0.1) == 1
    assert choose_face(boxes, np.array([500.0, 500.0, 560.0, 560.0]), 0.1) == 0
    assert choose_face(np.zeros((0, 4)), None, 0.1) is None


def test_track_follows_landmarks_and_handles_loss_and_cuts() -> None:
    det = HaarFaceDetector(DetectorSettings(verify_every=0))
    grey = np.full((200, 200, 3), 100, np.uint8)  # no face anywhere: every re-detection fails
    first = np.array([50.0, 50.0, 130.0, 130.0])
    track = FaceTrack(det, (200, 200), 0, first)
    box, reset, source = track.box_for(0, grey)
    assert (source, reset) == ("detected", True)
    np.testing.assert_array_equal(box, first)
    # Landmarks spanning (55, 55)-(125, 125): next box = that box grown by 1.1 about its centre.
    lm = np.array([[55.0, 55.0], [125.0, 125.0], [90.0, 90.0]])
    track.observe(0, lm)
    box, reset, source = track.box_for(1, grey)
    assert (source, reset) == ("tracked", False)
    np.testing.assert_allclose(box, [51.5, 51.5, 128.5, 128.5])
    # A jump (IoU < 0.3 with the previous box) is a track loss; no face found -> hold the last box.
    track.observe(1, lm + 60)
    held, reset, source = track.box_for(2, grey)
    assert (source, reset) == ("held", False)
    np.testing.assert_allclose(held, [51.5, 51.5, 128.5, 128.5])
    # A shot cut (thumbnail difference > threshold) forces a reset even when the box is held.
    track.observe(2, lm)
    _, reset, source = track.box_for(3, np.full((200, 200, 3), 230, np.uint8))
    assert (source, reset) == ("held", True)


def test_backfill_before_the_first_detection() -> None:
    det = HaarFaceDetector(DetectorSettings())
    grey = np.full((100, 100, 3), 90, np.uint8)
    first = np.array([10.0, 10.0, 60.0, 60.0])
    track = FaceTrack(det, (100, 100), 2, first)
    out = [track.box_for(t, grey) for t in range(3)]
    assert [(r, s) for _, r, s in out] == [(True, "backfilled"), (False, "backfilled"), (False, "detected")]


def test_largest_face_on_the_real_clip(shared_data: Path) -> None:
    path = shared_data / HAMILTON
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    det = HaarFaceDetector(DetectorSettings())
    frame0 = next(iter_frames(path, strict=False))
    raw = det.raw_detect(frame0)
    assert len(raw) >= 2  # the performer (right) and a small face at the left
    areas = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    assert areas[0] == areas.max() and raw[0, 0] > 400  # largest first: the performer
    found = find_first_face(iter_frames(path, strict=False), det, 5)
    assert found is not None and found[0] == 0
    assert box_iou(found[1], det.to_model_box(raw[0])) == pytest.approx(1.0)


def test_lost_track_holds_then_searches_the_whole_frame(shared_data: Path) -> None:
    path = shared_data / HAMILTON
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    frames = iter_frames(path, strict=False)
    f0, f1, f2 = next(frames), next(frames), next(frames)
    frames.close()
    det = HaarFaceDetector(DetectorSettings(max_hold_frames=1, verify_every=0))
    empty = np.array([250.0, 250.0, 300.0, 300.0])  # no face around this box
    track = FaceTrack(det, (640, 360), 0, empty)
    track.box_for(0, f0)
    track.observe(0, np.full((98, 2), np.nan))  # no usable landmarks: the track is lost
    box, reset, source = track.box_for(1, f1)
    assert (source, reset) == ("held", False)  # nothing overlapping the last box nearby: hold it
    np.testing.assert_array_equal(box, empty)
    track.observe(1, np.full((98, 2), np.nan))
    box, reset, source = track.box_for(2, f2)
    assert (source, reset) == ("detected", True)  # held for max_hold_frames: whole frame, largest face
    assert (box[0] + box[2]) / 2 > 400  # the performer
