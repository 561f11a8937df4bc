"""Round trips of ldeq_core/geometry.py against hand-computed crops (spec §5.4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ldeq_core.geometry import (
    apply_affine,
    box_to_affine,
    crop_face,
    invert_affine,
    landmarks_to_box,
    to_model_input,
    validate_box,
)


def test_inverse_round_trip() -> None:
    rng = np.random.default_rng(0)
    m = box_to_affine(np.array([37.2, 81.9, 240.6, 300.1]))
    pts = rng.uniform(-500, 1500, size=(50, 2))
    np.testing.assert_allclose(apply_affine(invert_affine(m), apply_affine(m, pts)), pts, atol=1e-9)
    np.testing.assert_allclose(apply_affine(m, apply_affine(invert_affine(m), pts)), pts, atol=1e-9)


def test_integer_box_maps_centre_and_side_by_hand() -> None:
    # x1..x2 = 100..199 (w = 100), y1..y2 = 50..169 (h = 120): centre (100 + 50, 50 + 60) = (150, 110)
    # side S = 1.2 * max(99, 119) = 142.8 frame pixels -> 256 crop pixels
    m = box_to_affine(np.array([100, 50, 199, 169]))
    half = 142.8 / 2
    src = np.array([[150, 110], [150, 110 - half], [150 + half, 110], [150 - half, 110 + half]])
    np.testing.assert_allclose(apply_affine(m, src), [[128, 128], [128, 0], [256, 128], [0, 256]], atol=1e-9)
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 256 / 142.8, atol=1e-12)  # no rotation


def test_fractional_box_is_rounded_first() -> None:
    # int(v + 0.5): (10.4, 20.6, 50.5, 80.2) -> (10, 21, 51, 80); w = 42, h = 60 -> centre (31, 51)
    m = box_to_affine(np.array([10.4, 20.6, 50.5, 80.2]))
    side = 1.2 * max(51 - 10, 80 - 21)
    np.testing.assert_allclose(apply_affine(m, [[31, 51], [31 + side / 2, 51]]), [[128, 128], [256, 128]], atol=1e-9)


def _blob_centroid(channel: np.ndarray) -> np.ndarray:
    n, labels = cv2.connectedComponents((channel > 20).astype(np.uint8))
    assert n == 2, f"expected exactly one dot, found {n - 1}"
    ys, xs = np.nonzero(labels == 1)
    w = channel[ys, xs].astype(np.float64)
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


def test_crop_face_puts_dots_where_apply_affine_says() -> None:
    h, w = 300, 400
    dots = np.array([[170.0, 120.0], [230.5, 150.25], [190.0, 205.75]])  # one per BGR channel
    ys, xs = np.mgrid[:h, :w]
    frame = np.zeros((h, w, 3), np.float64)
    for c, (x, y) in enumerate(dots):
        frame[..., c] = 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2))
    frame_bgr = np.rint(frame).astype(np.uint8)
    box = landmarks_to_box(dots)
    crop_rgb, m = crop_face(frame_bgr, box)
    assert crop_rgb.shape == (256, 256, 3)
    expected = apply_affine(m, dots)
    for c in range(3):
        found = _blob_centroid(crop_rgb[..., 2 - c])  # BGR channel c is RGB channel 2 - c
        np.testing.assert_allclose(found, expected[c], atol=0.15)


def test_validate_box_rejects_bad_boxes() -> None:
    validate_box([0, 0, 10, 10], (20, 20))
    for bad, msg in [([0, 0, np.nan, 5], "NaN"), ([5, 5, 4, 9], "inverted"), ([30, 30, 40, 40], "outside")]:
        with pytest.raises(ValueError, match=msg):
            validate_box(bad, (20, 20), name="b")


def test_to_model_input_normalises_by_hand() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 51)
    x = to_model_input(img)
    assert tuple(x.shape) == (1, 3, 2, 2)
    np.testing.assert_allclose(
        x[0, :, 0, 0].numpy(), [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225], rtol=1e-5
    )
