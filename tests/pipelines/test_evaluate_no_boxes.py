"""Evaluation of a WFLW-V-layout clip that has no bboxes file: the detector finds the annotated face (real faces)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ldeq_core.face_tracking import iou_matrix
from ldeq_core.metrics import nme
from ldeq_core.pretrained import default_pretrained, load_pretrained
from ldeq_core.rwr import RwRConfig
from ldeq_shared.errors import DataError
from ldeq_shared.wflw_v import clip_paths, landmark_boxes, write_video_clip
from pipelines.evaluate.methods import Method
from pipelines.evaluate.runner import VideoRef, decode_video, run_group
from pipelines.formats.w300 import read_pts

FACES = ("afw/1051618982_1", "afw/1139324862_1")  # the annotated face (left) and an unannotated one (right)
N_FRAMES, W, H = 12, 640, 360


def _write_clip(root: Path, shared_data: Path) -> np.ndarray:
    """Two real faces drifting right; only the left one is annotated; no bboxes file. Returns its landmarks."""
    canvas = np.full((H, W, 3), 90, np.uint8)
    stills = []
    for name in FACES:
        img = cv2.cvtColor(cv2.imread(str(shared_data / "300w" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        pts = read_pts(shared_data / "300w" / f"{name}.pts")
        s = 120.0 / np.sqrt(np.prod(pts.max(0) - pts.min(0)))
        stills.append((cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), pts * s + (s - 1) / 2))
    frames, gt = [], []
    for t in range(N_FRAMES):
        frame = canvas.copy()
        for k, (img, pts) in enumerate(stills):
            h, w = min(img.shape[0], H - 20), min(img.shape[1], W // 2 - 20 - N_FRAMES)
            x0, y0 = 10 + k * W // 2 + t, 10
            frame[y0 : y0 + h, x0 : x0 + w] = img[:h, :w]
            if k == 0:
                gt.append(pts + np.array([x0, y0]))
        frames.append(frame)
    lm = np.asarray(gt)
    write_video_clip(root, "two_faces", np.stack(frames), lm, landmark_boxes(lm), fps=25.0)
    clip_paths(root, "two_faces")[2].unlink()  # no bboxes file
    return lm


def test_clip_without_boxes_is_evaluated_on_detector_boxes_of_the_annotated_face(
    tmp_path: Path, shared_data: Path
) -> None:
    if not (shared_data / "300w" / f"{FACES[0]}.pts").is_file():
        pytest.skip("300-W AFW photos absent")
    gt = _write_clip(tmp_path, shared_data)
    entry = default_pretrained(68)
    assert entry is not None
    model = load_pretrained(entry.name).model.eval()
    size = model.cfg.image_size
    ref = VideoRef("w/two_faces", "w", "two_faces", "video_val", str(tmp_path), N_FRAMES)
    decoded = decode_video(ref, size, box_source="given")  # "given" has nothing to give: the detector is used
    # every box covers the annotated (left) face, none the right one, and none is the ground-truth box itself
    gt_boxes = landmark_boxes(gt)
    iou = np.array([iou_matrix(b[None], g[None])[0, 0] for b, g in zip(decoded.boxes, gt_boxes, strict=True)])
    assert iou.min() > 0.5, iou
    assert np.abs(decoded.boxes - gt_boxes).max() > 1.0  # detector boxes, not the annotations
    assert (decoded.boxes[:, 2] < W // 2).all()
    # the model on those crops is accurate against the ground truth (zoo model: val NME 3.74 %)
    method = Method("per_frame", "tracker", "per-frame", rwr=RwRConfig(mode="per_frame", crop_size=size))
    tracks, _ = run_group(model, [decoded], [method])
    err = nme(tracks[0]["per_frame"].landmarks, gt)
    assert float(np.mean(err)) < 0.05, err
    # a clip whose annotated face the detector never finds fails with the clip named
    blank = np.full((N_FRAMES, H, W, 3), 90, np.uint8)
    write_video_clip(tmp_path, "no_face", blank, gt, landmark_boxes(gt), fps=25.0)
    clip_paths(tmp_path, "no_face")[2].unlink()
    with pytest.raises(DataError, match="no face overlapping") as err_info:
        decode_video(VideoRef("w/no_face", "w", "no_face", "video_val", str(tmp_path), N_FRAMES), size)
    assert "no_face.mp4" in err_info.value.path
