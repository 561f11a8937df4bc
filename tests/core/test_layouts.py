"""Landmark layouts: flip permutations written out by hand from spec §5.1 / the iBUG mirror, and the
flip convention checked against cv2.flip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ldeq_core.layouts import IBUG68, WFLW98, flip_landmarks, get_layout


def _rev(a: int, b: int) -> list[int]:
    """b, b-1, ..., a."""
    return list(range(b, a - 1, -1))


EXPECTED_98 = (
    _rev(0, 32)  # 0..32 -> 32..0
    + _rev(42, 46)
    + _rev(47, 50)  # 33..37 -> 46..42, 38..41 -> 50..47
    + _rev(33, 37)
    + _rev(38, 41)  # 42..46 -> 37..33, 47..50 -> 41..38
    + [51, 52, 53, 54]
    + _rev(55, 59)
    + _rev(68, 72)
    + _rev(73, 75)  # 60..64 -> 72..68, 65..67 -> 75..73
    + _rev(60, 64)
    + _rev(65, 67)  # 68..72 -> 64..60, 73..75 -> 67..65
    + _rev(76, 82)
    + _rev(83, 87)
    + _rev(88, 92)
    + _rev(93, 95)
    + [97, 96]
)
EXPECTED_68 = (
    _rev(0, 16)
    + _rev(17, 26)
    + [27, 28, 29, 30]
    + _rev(31, 35)
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + _rev(48, 54)
    + _rev(55, 59)
    + _rev(60, 64)
    + _rev(65, 67)
)


def test_permutations_match_hand_written_tables() -> None:
    assert len(EXPECTED_98) == 98 and len(EXPECTED_68) == 68
    np.testing.assert_array_equal(WFLW98.flip_perm, EXPECTED_98)
    np.testing.assert_array_equal(IBUG68.flip_perm, EXPECTED_68)


@pytest.mark.parametrize("layout", [WFLW98, IBUG68])
def test_permutation_is_an_involution(layout) -> None:
    perm = layout.flip_perm
    assert sorted(perm.tolist()) == list(range(layout.n_points))
    np.testing.assert_array_equal(perm[perm], np.arange(layout.n_points))
    # outer eye corners swap with each other
    a, b = layout.eye_outer
    assert perm[a] == b and perm[b] == a


def test_get_layout() -> None:
    assert get_layout(98).eye_outer == (60, 72)
    assert get_layout(68).eye_outer == (36, 45)
    with pytest.raises(ValueError, match="no landmark layout with 5 points"):
        get_layout(5)


def test_flip_definition_and_double_flip_is_identity() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 200, size=(3, 68, 2))
    orig = pts.copy()
    flipped = flip_landmarks(pts, 200)
    np.testing.assert_array_equal(pts, orig)  # input untouched
    # new[36] is the mirror of old[45]: x -> 199 - x, y unchanged
    np.testing.assert_allclose(flipped[:, 36], np.stack([199 - pts[:, 45, 0], pts[:, 45, 1]], -1))
    np.testing.assert_allclose(flip_landmarks(flipped, 200), pts, atol=1e-12)
    some = pts[0, :30]  # any point count works without the permutation
    np.testing.assert_allclose(
        flip_landmarks(flip_landmarks(some, 50, permute=False), 50, permute=False), some, atol=1e-12
    )
    with pytest.raises(ValueError):
        flip_landmarks(np.zeros((10, 2)), 100)  # no layout with 10 points


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    w = img.astype(np.float64)
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


def test_flip_convention_matches_cv2_flip() -> None:
    width, height = 41, 23
    img = np.zeros((height, width), np.float32)
    ys, xs = np.mgrid[:height, :width]
    img += np.exp(-((xs - 9.3) ** 2 + (ys - 7.6) ** 2) / 4.0)  # off-centre blob
    img[3, 30] = 2.0  # plus a single pixel: a far, asymmetric mass
    c = _centroid(img)
    c_flipped = _centroid(cv2.flip(img, 1))
    np.testing.assert_allclose(flip_landmarks(c[None], width, permute=False)[0], c_flipped, atol=1e-9)
    # the single pixel at column 30 lands in column width - 1 - 30
    assert cv2.flip(img, 1)[3, width - 1 - 30] == 2.0
