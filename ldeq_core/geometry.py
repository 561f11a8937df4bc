"""Face-crop geometry (spec §5.4): box -> square 256x256 affine, its exact inverse, and pixel normalisation.

Conventions: points are (..., 2) arrays in (x, y) pixel order; an affine ``M`` is a (2, 3) float64 matrix
mapping frame pixels to crop pixels, ``p_crop = A @ p_frame + b``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ldeq_core.defaults import EXTRA_SCALE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def validate_box(box: np.ndarray, frame_size: tuple[int, int] | None = None, *, name: str = "box") -> None:
    """Raise ``ValueError`` naming ``name`` if ``box`` (x1, y1, x2, y2, ...) is NaN, empty, inverted or off-frame.

    ``frame_size`` is (width, height); when given, a box lying entirely outside the frame is rejected.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size < 4:
        raise ValueError(f"{name}: expected at least 4 values (x1, y1, x2, y2), got {b.size}")
    x1, y1, x2, y2 = b[:4]
    if not np.all(np.isfinite(b[:4])):
        raise ValueError(f"{name}: box contains NaN or inf: {b[:4].tolist()}")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{name}: empty or inverted box (x1={x1}, y1={y1}, x2={x2}, y2={y2})")
    if frame_size is not None:
        w, h = frame_size
        if x2 < 0 or y2 < 0 or x1 >= w or y1 >= h:
            raise ValueError(f"{name}: box {b[:4].tolist()} lies entirely outside the {w}x{h} frame")


def box_to_affine(box: np.ndarray, out_size: int = 256, extra_scale: float = EXTRA_SCALE) -> np.ndarray:
    """Affine (2, 3) taking frame pixels to an ``out_size`` square crop around ``box`` (spec §5.4).

    The box corners are rounded to integers (``int(v + 0.5)``), the centre is ``x1 + w // 2`` with
    ``w = x2 - x1 + 1``, and the crop side in frame pixels is ``extra_scale * max(x2 - x1, y2 - y1)``.
    """
    validate_box(box)
    x1, y1, x2, y2 = (int(v + 0.5) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    w, h = x2 - x1 + 1, y2 - y1 + 1
    cx, cy = x1 + w // 2, y1 + h // 2
    side = extra_scale * max(x2 - x1, y2 - y1)
    s = out_size / side
    half = out_size / 2.0
    return np.array([[s, 0.0, half - s * cx], [0.0, s, half - s * cy]], dtype=np.float64)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Exact inverse of a (2, 3) affine."""
    a = np.asarray(m, dtype=np.float64)[:, :2]
    b = np.asarray(m, dtype=np.float64)[:, 2]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, (-a_inv @ b)[:, None]], axis=1)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a (2, 3) affine, or a (..., 2, 3) stack broadcast against the points."""
    m = np.asarray(m, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if m.ndim == 2:
        return p @ m[:, :2].T + m[:, 2]
    return np.einsum("...ij,...lj->...li", m[..., :2], p) + m[..., None, :, 2]


def crop_face(
    frame_bgr: np.ndarray, box: np.ndarray, out_size: int = 256, extra_scale: float = EXTRA_SCALE
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``frame_bgr`` (H, W, 3) to an RGB ``out_size`` square around ``box``; return (crop_rgb, affine)."""
    m = box_to_affine(box, out_size, extra_scale)
    crop = cv2.warpAffine(
        frame_bgr,
        m,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), m


def grow_box(box: np.ndarray, factor: float) -> np.ndarray:
    """Scale (x1, y1, x2, y2) boxes by ``factor`` about their centres; (..., >=4) -> (..., 4) (extra columns such
    as a detector score are dropped)."""
    b = np.asarray(box, dtype=np.float64)[..., :4]
    c, half = (b[..., :2] + b[..., 2:]) / 2.0, (b[..., 2:] - b[..., :2]) * factor / 2.0
    return np.concatenate([c - half, c + half], axis=-1)


def landmarks_to_box(points: np.ndarray) -> np.ndarray:
    """Tight (x1, y1, x2, y2) box of (L, 2) landmarks, or (..., 4) for stacked (..., L, 2)."""
    p = np.asarray(points, dtype=np.float64)
    return np.concatenate([p.min(axis=-2), p.max(axis=-2)], axis=-1)


def to_model_input(
    crops_rgb: np.ndarray | torch.Tensor, device: torch.device | str | None = None, *, non_blocking: bool = False
) -> torch.Tensor:
    """(N, H, W, 3) or (H, W, 3) uint8 RGB -> (N, 3, H, W) float32, ImageNet-normalised (spec §5.3).

    A uint8 tensor in pinned host memory with ``non_blocking`` is copied to the device asynchronously.
    """
    if isinstance(crops_rgb, torch.Tensor):
        x = crops_rgb if crops_rgb.ndim != 3 else crops_rgb[None]
    else:
        arr = np.asarray(crops_rgb)
        x = torch.from_numpy(np.ascontiguousarray(arr if arr.ndim != 3 else arr[None]))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB crops, got shape {tuple(x.shape)}")
    x = x.to(device=device, non_blocking=non_blocking)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.as_tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
