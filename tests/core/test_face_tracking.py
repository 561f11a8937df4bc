"""Multi-face tracking: IoU/Hungarian association, ids, track loss, per-track RwR state, given boxes, filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldeq_core.config import get_preset
from ldeq_core.face_tracking import FaceTrackingConfig, MultiFaceTracker, affinity_matrix, iou_matrix, match_boxes
from ldeq_core.filters import make_filter, run_filter
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker, box_iou


class ScriptedDetector:
    """Returns the boxes scripted for each call (a stand-in for a camera scene with known faces)."""

    def __init__(self, script: list[np.ndarray]) -> None:
        self.script = script
        self.calls = 0

    def detect(self, frame_rgb: np.ndarray) -> np.ndarray:
        boxes = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 5)


@pytest.fixture(scope="module")
def tracker_factory():
    torch.manual_seed(0)
    model = LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16, n_landmarks=68)).eval()

    def make(**kw):
        return RwRTracker(model, RwRConfig(crop_size=64, **kw))

    return make


def test_iou_matrix_matches_the_scalar_formula() -> None:
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 100, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.uniform(0, 100, (4, 2, 2)), axis=1).transpose(0, 2, 1).reshape(4, 4)[:, [0, 2, 1, 3]]
    m = iou_matrix(a, b)
    for i in range(5):
        for j in range(4):
            assert m[i, j] == pytest.approx(box_iou(a[i], b[j]), abs=1e-12)
    # hand case: two 10x10 squares offset by 5 px share 50 of 150 px
    assert iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(50 / 150)


def test_affinity_is_the_mean_of_iou_and_intersection_over_the_smaller_box() -> None:
    big, small, side = np.array([[0, 0, 20, 20]]), np.array([[5, 5, 10, 10]]), np.array([[30, 0, 50, 20]])
    # small lies inside big: IoU 25/400, intersection over the smaller box 1
    assert affinity_matrix(big, small)[0, 0] == pytest.approx(0.5 * (25 / 400 + 1.0))
    assert affinity_matrix(big, side)[0, 0] == 0.0
    half = np.array([[10, 0, 30, 20]])  # IoU 200/600, intersection / smaller 200/400
    assert affinity_matrix(big, half)[0, 0] == pytest.approx(0.5 * (1 / 3 + 0.5))


def test_hungarian_matching_maximises_the_total_score() -> None:
    tracks = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], dtype=float)
    dets = np.array([[7, 0, 17, 10], [2, 0, 12, 10]], dtype=float)
    score = affinity_matrix(tracks, dets)
    pairs = match_boxes(tracks, dets, 0.1)
    best = max(score[0, 0] + score[1, 1], score[0, 1] + score[1, 0])
    assert sum(score[i, j] for i, j in pairs) == pytest.approx(best) and sorted(pairs) == [(0, 1), (1, 0)]
    assert match_boxes(tracks, dets + 100, 0.1) == []  # no overlap: no pair


def _scene(t: int) -> np.ndarray:
    """Two faces drifting right by 1 px per frame; landmark-convention boxes with a score column."""
    return np.array([[40 + t, 30, 100 + t, 90, 0.9], [200 + t, 40, 260 + t, 100, 0.8]], dtype=float)


def test_two_faces_keep_their_ids_and_a_new_face_gets_a_new_id(tracker_factory) -> None:
    frame = np.zeros((160, 320, 3), np.uint8)
    script = [_scene(t) for t in range(12)]
    script += [np.concatenate([_scene(12 + t), [[150, 100, 190, 140, 0.7]]]) for t in range(20)]
    det = ScriptedDetector(script)
    mft = MultiFaceTracker(tracker_factory(), det, FaceTrackingConfig(detect_every=1))
    ids_per_frame = []
    for _ in range(20):
        faces = mft.process(frame)
        ids_per_frame.append(sorted(f.face_id for f in faces))
    # random weights shrink every landmark box to the crop centre, inside the face's detection box: the overlap score
    # still matches it (and re-centres it on the detection), so ids are kept; the third face gets a new id
    assert ids_per_frame[0] == [0, 1]
    assert all(ids == [0, 1] for ids in ids_per_frame[:12])
    assert all(ids == [0, 1, 2] for ids in ids_per_frame[13:])
    assert det.calls == 20


def test_given_boxes_skip_detection_and_warm_start_after_the_first_frame(tracker_factory) -> None:
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    mft = MultiFaceTracker(tracker_factory(budget_nfe=2), None)
    box = np.array([[30.0, 20.0, 90.0, 80.0]])
    first = mft.process(frame, box)
    second = mft.process(frame, box + 1)
    assert [f.face_id for f in first] == [0] and first[0].full_solve and not second[0].full_solve
    assert second[0].nfe == 2 and second[0].box_source == "given"
    np.testing.assert_allclose(second[0].box, box[0] + 1)


def test_a_face_missed_by_max_missed_detections_ends_and_returns_with_a_new_id(tracker_factory) -> None:
    frame = np.zeros((160, 320, 3), np.uint8)
    script = [_scene(0)] * 2 + [_scene(0)[:1]] * 2 + [_scene(0)] * 2  # face 1 absent from detections 2 and 3
    cfg = FaceTrackingConfig(detect_every=1, max_missed=2)
    mft = MultiFaceTracker(tracker_factory(), ScriptedDetector(script), cfg)
    ids = [sorted(f.face_id for f in mft.process(frame)) for _ in range(6)]
    assert ids == [[0, 1], [0, 1], [0, 1], [0], [0, 2], [0, 2]]  # one miss kept, the second ends the track


def test_a_lost_track_ends_at_once_unless_a_detection_refinds_it(tracker_factory) -> None:
    # min_face above the random model's landmark boxes (about 27 px here): every track is lost after its first frame
    frame = np.zeros((160, 320, 3), np.uint8)
    script = [_scene(0)] * 2 + [_scene(0)[:1]] * 2
    cfg = FaceTrackingConfig(detect_every=100, min_face=40.0)
    mft = MultiFaceTracker(tracker_factory(), ScriptedDetector(script), cfg)
    ids = [sorted(f.face_id for f in mft.process(frame)) for _ in range(4)]
    assert ids == [[0, 1], [0, 1], [0], [0]]  # loss forces a detection on the same frame; face 1 is not re-found
    faces = mft.process(frame)
    assert faces[0].box_source == "detected" and faces[0].full_solve  # re-found tracks restart from a full solve


def test_max_faces_keeps_the_best_scored_detections(tracker_factory) -> None:
    frame = np.zeros((160, 320, 3), np.uint8)
    mft = MultiFaceTracker(tracker_factory(), ScriptedDetector([_scene(0)]), FaceTrackingConfig(max_faces=1))
    faces = mft.process(frame)
    assert len(faces) == 1 and faces[0].box[0] < 100  # the 0.9-score face on the left


def test_streaming_filter_per_track_equals_the_offline_filter(tracker_factory) -> None:
    frame = np.random.default_rng(2).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = [np.array([[30.0 + t, 20.0, 90.0 + t, 80.0]]) for t in range(6)]
    raw = MultiFaceTracker(tracker_factory(), None)
    filt = MultiFaceTracker(tracker_factory(), None, filter_name="kalman", filter_params={"q": 0.5, "r": 4.0})
    raw_track = np.stack([raw.process(frame, b)[0].landmarks for b in boxes])
    filtered = np.stack([filt.process(frame, b)[0].landmarks for b in boxes])
    np.testing.assert_allclose(filtered, run_filter(make_filter("kalman", q=0.5, r=4.0), raw_track), atol=1e-9)


def test_config_and_frame_errors(tracker_factory) -> None:
    with pytest.raises(ValueError, match="detect_every"):
        FaceTrackingConfig(detect_every=0)
    with pytest.raises(ValueError, match="match_iou"):
        FaceTrackingConfig(match_iou=1.5)
    mft = MultiFaceTracker(tracker_factory(), None)
    with pytest.raises(ValueError, match="uint8 BGR"):
        mft.process(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="unknown filter"):
        MultiFaceTracker(tracker_factory(), None, filter_name="median")
