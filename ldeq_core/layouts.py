"""Landmark layouts as plain numpy data: WFLW (98 points) and iBUG 300-W (68 points).

A layout gives the outer-eye-corner indices used as the inter-ocular normaliser and the horizontal-flip
permutation ``perm``: after mirroring an image, landmark ``i`` of the mirrored face is the mirrored
position of landmark ``perm[i]`` of the original (``new[i] = mirrored_old[perm[i]]``). Every ``perm`` is
an involution (``perm[perm] == arange``).

Pixel convention for flipping: pixel centres lie on integer coordinates (0-based), the convention of
``cv2.warpAffine``/``cv2.remap`` and of the 300-W .pts files. ``cv2.flip(img, 1)`` moves column ``c`` to
column ``W - 1 - c``, so a point's x maps to ``W - 1 - x``; this is exact for sub-pixel positions too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _perm_from_pairs(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Permutation of ``range(n)`` swapping each (a, b) pair; indices not named stay fixed."""
    perm = np.arange(n, dtype=np.int64)
    seen: set[int] = set()
    for a, b in pairs:
        if a in seen or b in seen or a == b:
            raise ValueError(f"flip pair ({a}, {b}) repeats an index")
        seen.update((a, b))
        perm[a], perm[b] = b, a
    perm.setflags(write=False)
    return perm


def _wflw98_pairs() -> list[tuple[int, int]]:
    pairs = [(i, 32 - i) for i in range(16)]  # contour 0..32 reversed, 16 fixed
    pairs += list(zip(range(33, 38), range(46, 41, -1), strict=True))  # upper brows 33..37 <-> 46..42
    pairs += list(zip(range(38, 42), range(50, 46, -1), strict=True))  # lower brows 38..41 <-> 50..47
    pairs += [(55, 59), (56, 58)]  # nose 51..54 and 57 fixed
    pairs += list(zip(range(60, 65), range(72, 67, -1), strict=True))  # eyes 60..64 <-> 72..68
    pairs += list(zip(range(65, 68), range(75, 72, -1), strict=True))  # eyes 65..67 <-> 75..73
    pairs += [(76, 82), (77, 81), (78, 80)]  # outer lips, 79 fixed
    pairs += [(83, 87), (84, 86)]  # lower lip, 85 fixed
    pairs += [(88, 92), (89, 91)]  # inner upper lip, 90 fixed
    pairs += [(93, 95)]  # inner lower lip, 94 fixed
    pairs += [(96, 97)]  # pupils
    return pairs


def _ibug68_pairs() -> list[tuple[int, int]]:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw 0..16 reversed, 8 fixed
    pairs += list(zip(range(17, 22), range(26, 21, -1), strict=True))  # brows 17..21 <-> 26..22
    pairs += [(31, 35), (32, 34)]  # nose 27..30 and 33 fixed
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer mouth, 51 and 57 fixed
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner mouth, 62 and 66 fixed
    return pairs


@dataclass(frozen=True)
class LandmarkLayout:
    """A landmark scheme: name, point count, outer eye corners and horizontal-flip permutation."""

    name: str
    n_points: int
    eye_outer: tuple[int, int]  # (image-left outer corner, image-right outer corner) for a frontal face
    flip_perm: np.ndarray


WFLW98 = LandmarkLayout("wflw98", 98, (60, 72), _perm_from_pairs(98, _wflw98_pairs()))
IBUG68 = LandmarkLayout("ibug68", 68, (36, 45), _perm_from_pairs(68, _ibug68_pairs()))
_LAYOUTS = {98: WFLW98, 68: IBUG68}


def get_layout(n_points: int) -> LandmarkLayout:
    """Layout for ``n_points`` landmarks (98: WFLW, 68: iBUG 300-W); ``ValueError`` for any other count."""
    try:
        return _LAYOUTS[int(n_points)]
    except KeyError:
        raise ValueError(f"no landmark layout with {n_points} points (known: {sorted(_LAYOUTS)})") from None


def flip_landmarks(points: np.ndarray, width: int, *, permute: bool = True) -> np.ndarray:
    """Landmarks of the image mirrored with ``cv2.flip(img, 1)``: x -> ``width - 1 - x``.

    ``points`` is (..., L, 2). With ``permute`` the points are also re-indexed with the layout's flip
    permutation so that, e.g., the left eye corner stays the left eye corner; L must then be 98 or 68.
    """
    p = np.array(points, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(f"expected (..., L, 2) landmarks, got shape {p.shape}")
    p[..., 0] = (width - 1) - p[..., 0]
    if permute:
        p = p[..., get_layout(p.shape[-2]).flip_perm, :]
    return p
