"""Animated stills: turn an annotated still into a short video with exact per-frame ground truth.

Frame t is the still warped by a homography ``H_t`` = (smooth random similarity: rotation, scale,
translation) x (mild perspective about the face centre), composited over a blurred copy of the still,
then optionally crossed by an occluder, motion-blurred along the face's motion, photometrically drifted
(brightness, contrast, gamma, white balance) and noised. Landmarks are mapped by the same ``H_t``
(pixel centres on integers, the ``cv2.warpPerspective`` convention), so they are exact up to the warp's
interpolation. Boxes are the expanded landmark box, optionally with per-frame detector-like jitter.
All motion/photometric signals are sums of low-frequency sinusoids; everything follows from ``seed``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ldeq_core.fileio import write_text_atomic
from ldeq_shared.params import AnimParams
from ldeq_shared.wflw_v import clip_paths, write_video_clip


def _smooth(rng: np.random.Generator, t_s: np.ndarray, amp: float, p: AnimParams) -> np.ndarray:
    """Sum of ``n_sines`` random sinusoids in ``freq_hz`` whose absolute value never exceeds ``amp``."""
    freqs = rng.uniform(*p.freq_hz, size=p.n_sines)
    phases = rng.uniform(0.0, 2 * np.pi, size=p.n_sines)
    weights = rng.uniform(0.2, 1.0, size=p.n_sines)
    weights *= amp / weights.sum()
    return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t_s[None] + phases[:, None])).sum(0)


def _homographies(
    rng: np.random.Generator, landmarks: np.ndarray, n: int, fps: float, size: tuple[int, int], p: AnimParams
) -> np.ndarray:
    """(T, 3, 3) homographies from still pixels to frame pixels keeping every landmark inside the frame."""
    w, h = size
    t_s = np.arange(n) / fps
    lo, hi = landmarks.min(0), landmarks.max(0)
    centre = (lo + hi) / 2
    side = max(float((hi - lo).max()), 1.0)
    radius = float(np.linalg.norm(landmarks - centre, axis=1).max()) + 1.0
    persp_gain = 1.0 / max(1.0 - np.sqrt(2) * p.perspective * radius / side, 0.5)
    reach = radius * np.exp(p.log_scale) * persp_gain  # frame radius per unit of base scale
    s0 = min(p.face_frac * min(w, h) / side, (min(w, h) / 2 - 2.0) / reach)
    r_frame = s0 * reach
    amp_x = max(0.0, min(p.trans_frac * w, w / 2 - 2.0 - r_frame))
    amp_y = max(0.0, min(p.trans_frac * h, h / 2 - 2.0 - r_frame))
    theta = np.deg2rad(_smooth(rng, t_s, p.rot_deg, p))
    scale = s0 * np.exp(_smooth(rng, t_s, p.log_scale, p))
    tx, ty = _smooth(rng, t_s, amp_x, p), _smooth(rng, t_s, amp_y, p)
    px, py = _smooth(rng, t_s, p.perspective, p), _smooth(rng, t_s, p.perspective, p)
    hs = np.zeros((n, 3, 3))
    for i in range(n):
        to_origin = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
        persp = np.array([[1, 0, 0], [0, 1, 0], [px[i] / side, py[i] / side, 1]])
        c, s = scale[i] * np.cos(theta[i]), scale[i] * np.sin(theta[i])
        place = np.array([[c, -s, w / 2 + tx[i]], [s, c, h / 2 + ty[i]], [0, 0, 1]])
        hs[i] = place @ persp @ to_origin
    return hs


def apply_homography(hmat: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (L, 2) points through a (3, 3) homography."""
    q = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ hmat.T
    return q[:, :2] / q[:, 2:]


def _background(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The still resized to cover the frame and heavily blurred (float32)."""
    w, h = size
    k = max(w / image.shape[1], h / image.shape[0])
    big = cv2.resize(image, (max(w, round(image.shape[1] * k)), max(h, round(image.shape[0] * k))))
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return cv2.GaussianBlur(big[y0 : y0 + h, x0 : x0 + w].astype(np.float32), (0, 0), max(w, h) / 40)


@dataclass(frozen=True)
class _Occluder:
    first: int
    last: int
    centres: np.ndarray  # (T, 2) patch centre per frame
    texture: np.ndarray  # (S, S, 3) float32 RGB
    alpha: np.ndarray  # (S, S) float32 in [0, 1]


def _occluder(
    rng: np.random.Generator, n: int, size: tuple[int, int], face_px: float, p: AnimParams
) -> _Occluder | None:
    """A rectangle or ellipse crossing the frame through the face region on a straight line, or None."""
    if rng.random() >= p.occluder_prob:
        return None
    w, h = size
    radius = rng.uniform(*p.occluder_size) * face_px
    half = int(np.ceil(radius * 1.5)) + 2
    alpha = np.zeros((2 * half + 1, 2 * half + 1), np.uint8)
    axes = (round(radius), round(radius * rng.uniform(0.5, 1.0)))
    if rng.random() < 0.5:
        cv2.ellipse(alpha, (half, half), axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    else:
        box = cv2.boxPoints(((half, half), (2 * axes[0], 2 * axes[1]), rng.uniform(0, 180)))
        cv2.fillConvexPoly(alpha, np.round(box).astype(np.int32), 255, cv2.LINE_AA)
    colour = rng.uniform(20, 235, size=3)
    shade = cv2.resize(rng.normal(0, 25, (6, 6, 3)), alpha.shape[::-1], interpolation=cv2.INTER_CUBIC)
    texture = np.clip(colour + shade, 0, 255).astype(np.float32)
    span = max(2, round(n * rng.uniform(0.4, 0.9)))
    t0 = int(rng.integers(0, max(1, n - span + 1)))
    angle = rng.uniform(0, 2 * np.pi)
    u = np.array([np.cos(angle), np.sin(angle)])
    through = np.array([w / 2, h / 2]) + rng.uniform(-0.3, 0.3, 2) * face_px
    reach = np.hypot(w, h) / 2 + half
    frac = np.clip((np.arange(n) - t0) / (span - 1), 0, 1)[:, None]
    centres = through - reach * u + 2 * reach * u * frac
    return _Occluder(t0, t0 + span - 1, centres, texture, alpha.astype(np.float32) / 255)


def _paste(frame: np.ndarray, centre: np.ndarray, texture: np.ndarray, alpha: np.ndarray) -> None:
    """Alpha-composite the occluder patch onto ``frame`` (float32, in place) at a sub-pixel ``centre``."""
    h, w = frame.shape[:2]
    half = (alpha.shape[0] - 1) / 2
    m = np.array([[1.0, 0, centre[0] - half], [0, 1.0, centre[1] - half]])
    a = cv2.warpAffine(alpha, m, (w, h))[..., None]
    if a.max() > 0:
        frame *= 1 - a
        frame += a * cv2.warpAffine(texture, m, (w, h))


def _blur_kernel(velocity: np.ndarray, length: float) -> np.ndarray:
    """Normalised line kernel of ``length`` px along ``velocity``, centred (no shift of the image)."""
    k = 2 * int(np.ceil(length / 2)) + 1
    d = velocity / max(float(np.linalg.norm(velocity)), 1e-9) * (length - 1) / 2
    c = k // 2
    ker = np.zeros((k, k), np.float32)
    shift = 4  # end points with 4 fractional bits
    p0 = (round((c - d[0]) * (1 << shift)), round((c - d[1]) * (1 << shift)))
    p1 = (round((c + d[0]) * (1 << shift)), round((c + d[1]) * (1 << shift)))
    cv2.line(ker, p0, p1, 1.0, 1, cv2.LINE_AA, shift)
    return ker / ker.sum()


def _photometric(frame: np.ndarray, b: float, c: float, g: float, wb: np.ndarray) -> np.ndarray:
    """Contrast ``c`` about mid-grey, brightness ``b``, per-channel gains ``wb``, then gamma ``g``."""
    out = np.clip((c * (frame - 128.0) + 128.0 + b) * wb.astype(np.float32), 0.0, 255.0)
    return 255.0 * (out / 255.0) ** g


def make_animated_video(
    image_rgb: np.ndarray,
    landmarks: np.ndarray,
    *,
    n_frames: int = 60,
    size: tuple[int, int] = (640, 480),
    seed: int | Sequence[int] = 0,
    params: AnimParams | Mapping[str, Any] | None = None,
    fps: float = 30.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Animate one annotated still into ``n_frames`` frames of ``size`` = (width, height).

    Returns (frames (T, H, W, 3) uint8 RGB, landmarks (T, L, 2) float64, boxes (T, 4) float64 x1y1x2y2).
    ``fps`` sets how fast the motion signals (in Hz) evolve per frame.
    """
    p = params if isinstance(params, AnimParams) else AnimParams(**(params or {}))
    img = np.asarray(image_rgb)
    pts = np.asarray(landmarks, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"landmarks must be finite (L >= 2, 2), got shape {pts.shape}")
    if n_frames < 1 or min(size) < 16:
        raise ValueError(f"need n_frames >= 1 and a frame of at least 16x16, got {n_frames}, {size}")
    w, h = size
    rng = np.random.default_rng(seed)
    hs = _homographies(rng, pts, n_frames, fps, size, p)
    lms = np.stack([apply_homography(hm, pts) for hm in hs])
    t_s = np.arange(n_frames) / fps
    bright, contrast = _smooth(rng, t_s, p.brightness, p), np.exp(_smooth(rng, t_s, p.contrast, p))
    gamma = np.exp(_smooth(rng, t_s, p.gamma, p))
    wb = 1.0 + np.stack([_smooth(rng, t_s, p.white_balance, p) for _ in range(3)], axis=1)
    centre_t = lms.mean(axis=1)
    velocity = np.gradient(centre_t, axis=0) if n_frames > 1 else np.zeros((1, 2))
    face_px = float(np.median(np.ptp(lms, axis=1).max(axis=1)))
    occ = _occluder(rng, n_frames, size, face_px, p)
    bg = _background(img, size)
    rgba = np.concatenate([img.astype(np.float32), np.ones((*img.shape[:2], 1), np.float32)], axis=2)
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    for t in range(n_frames):
        warped = cv2.warpPerspective(
            rgba, hs[t], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        frame = warped[..., :3] + (1.0 - warped[..., 3:]) * bg
        if occ is not None and occ.first <= t <= occ.last:
            _paste(frame, occ.centres[t], occ.texture, occ.alpha)
        if rng.random() < p.blur_prob and np.linalg.norm(velocity[t]) > 1e-6:
            length = float(np.clip(np.linalg.norm(velocity[t]), *p.blur_len))
            frame = cv2.filter2D(frame, -1, _blur_kernel(velocity[t], length), borderType=cv2.BORDER_REFLECT)
        frame = _photometric(frame, float(bright[t]), float(contrast[t]), float(gamma[t]), wb[t])
        if p.noise_std > 0:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(p.noise_std)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames, lms, _boxes(rng, lms, p)


def _boxes(rng: np.random.Generator, lms: np.ndarray, p: AnimParams) -> np.ndarray:
    lo, hi = lms.min(axis=1), lms.max(axis=1)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1 + 2 * p.box_expand)
    if p.box_jitter > 0:
        centre = centre + rng.normal(0, p.box_jitter, centre.shape) * 2 * half
        half = half * np.exp(rng.normal(0, p.box_jitter, (len(half), 1)))
    return np.concatenate([centre - half, centre + half], axis=1)


def _load_still(item: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """(image RGB, landmarks, name) from an item with ``load_rgb()``/``landmarks`` or an (image|path, pts)."""
    if hasattr(item, "load_rgb"):
        return item.load_rgb(), np.asarray(item.landmarks, np.float64), str(getattr(item, "name", "?"))
    image, pts = item
    if isinstance(image, str | os.PathLike):
        bgr = cv2.imread(os.fspath(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{image}: image missing or unreadable")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.asarray(pts, np.float64), os.fspath(image)
    return np.asarray(image), np.asarray(pts, np.float64), "<array>"


def build_animated_stills_dataset(
    items: Sequence[Any],
    out_root: str | os.PathLike[str],
    n_videos: int,
    *,
    n_frames: int = 60,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    seed: int = 0,
    params: AnimParams | Mapping[str, Any] | None = None,
    id_prefix: str = "anim",
    skip_existing: bool = False,
) -> list[str]:
    """Write ``n_videos`` animated stills in the WFLW-V layout under ``out_root``; return their ids.

    Stills are drawn without replacement (cycling when ``n_videos > len(items)``) in a ``seed``-fixed
    order; video ``i`` uses seed ``[seed, i]``. Items are objects with ``load_rgb()`` and ``landmarks``
    (e.g. ``W300Item``, ``WflwItem``) or ``(image_rgb or path, landmarks)`` pairs; all must share one
    landmark count. ``<out_root>/animated_stills.json`` records each id's source still and seed.
    """
    if not items or n_videos < 1:
        raise ValueError(f"need at least one still and one video, got {len(items)} stills, {n_videos} videos")
    p = params if isinstance(params, AnimParams) else AnimParams(**(params or {}))
    order = np.random.default_rng(seed).permutation(len(items))
    ids: list[str] = []
    manifest: list[dict[str, Any]] = []
    n_points: int | None = None
    for i in range(n_videos):
        vid = f"{id_prefix}_{i:05d}"
        ids.append(vid)
        image, pts, name = _load_still(items[int(order[i % len(items)])])
        manifest.append({"id": vid, "source": name, "seed": [seed, i]})
        if n_points is not None and len(pts) != n_points:
            raise ValueError(f"{name}: {len(pts)} landmarks, earlier stills have {n_points}")
        n_points = len(pts)
        if skip_existing and all(f.is_file() for f in clip_paths(out_root, vid)):
            continue
        frames, lms, boxes = make_animated_video(
            image, pts, n_frames=n_frames, size=size, seed=[seed, i], params=p, fps=fps
        )
        write_video_clip(out_root, vid, frames, lms, boxes, fps)
    meta = {"n_frames": n_frames, "size": list(size), "fps": fps, "params": asdict(p), "videos": manifest}
    write_text_atomic(Path(out_root) / "animated_stills.json", json.dumps(meta, indent=1) + "\n")
    return ids
