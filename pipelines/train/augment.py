"""Training augmentation ("ours"; loosely modelled on the HIH reference recipe of spec §7, not LDEQ's).

Every transform moves the landmarks exactly as it moves the pixels. Pixel convention (the one of
``cv2.warpAffine`` / ``cv2.flip`` and of :mod:`ldeq_core.layouts`): pixel centres lie on integer coordinates,
so an S-pixel image spans [-0.5, S - 0.5] and its centre is ((S - 1) / 2, (S - 1) / 2).

Recipe, in order (each step with its own probability; sizes in fractions of the crop or in pixels of a 256 crop):

1. geometry, composed into one affine and applied with one ``cv2.warpAffine`` (bilinear, black border):
   horizontal flip (x -> S - 1 - x, then the layout's landmark permutation), rotation about the centre,
   isotropic scale about the centre, translation;
2. resize to the model's input size with ``cv2.INTER_AREA`` (x -> k x + (k - 1) / 2, k = out / S);
3. photometric, which never moves landmarks: Gaussian blur, one random single-colour rectangle occluder,
   colour jitter (brightness, contrast, saturation).

Randomness comes only from the ``numpy.random.Generator`` passed in; :func:`sample_rng` derives one per sample
from (seed, epoch, rank, step, sample index), so a run is reproducible, resumes draw the same augmentations and
the result does not depend on how many threads prepare a batch (:mod:`pipelines.train.data`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ldeq_shared.train_settings import AugmentConfig

REFERENCE_SIZE = 256  # pixel-valued settings (blur sigma) are given for a 256-px crop and scaled to the image


@dataclass
class AugmentParams:
    """One sample's drawn augmentation. Angles in degrees, counter-clockwise on screen; shifts in source pixels."""

    flip: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    blur_sigma: float = 0.0  # output pixels
    occluder: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (exclusive) in output pixels
    occluder_rgb: tuple[int, int, int] = (0, 0, 0)
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    @property
    def is_geometric(self) -> bool:
        return self.flip or self.angle_deg != 0.0 or self.scale != 1.0 or self.shift != (0.0, 0.0)


def batch_rng(seed: int, epoch: int, rank: int, step: int) -> np.random.Generator:
    """The generator for one batch of one worker: a pure function of its arguments."""
    return np.random.default_rng([int(seed), int(epoch), int(rank), int(step)])


def sample_rng(batch_key: tuple[int, ...], index: int) -> np.random.Generator:
    """The generator of sample ``index`` of the batch ``batch_key`` = (seed, epoch, rank, step): child ``index`` of
    that batch's ``SeedSequence`` (what ``SeedSequence(batch_key).spawn(n)[index]`` gives), a pure function."""
    entropy = [int(k) for k in batch_key]
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(int(index),)))


def sample_params(rng: np.random.Generator, cfg: AugmentConfig, src_size: int, out_size: int) -> AugmentParams:
    """Draw one sample's augmentation (always the same number of draws, whatever fires)."""
    u = rng.random(7)
    p = AugmentParams()
    if not cfg.enabled:
        return p
    angle = rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg)
    scale = rng.uniform(cfg.min_scale, cfg.max_scale)
    shift = rng.uniform(-cfg.max_translate, cfg.max_translate, size=2) * src_size
    sigma = rng.uniform(0.0, cfg.max_blur_sigma) * out_size / REFERENCE_SIZE
    occ = rng.random(4)
    rgb = rng.integers(0, 256, size=3)
    jitter = rng.uniform(-1.0, 1.0, size=3)
    p.flip = bool(u[0] < cfg.flip_prob)
    if u[1] < cfg.rotate_prob:
        p.angle_deg = float(angle)
    if u[2] < cfg.scale_prob:
        p.scale = float(scale)
    if u[3] < cfg.translate_prob:
        p.shift = (float(shift[0]), float(shift[1]))
    if u[4] < cfg.blur_prob:
        p.blur_sigma = float(sigma)
    if u[5] < cfg.occlude_prob:
        w = max(1, round(occ[0] * cfg.max_occlude_frac * out_size))
        h = max(1, round(occ[1] * cfg.max_occlude_frac * out_size))
        x0 = int(occ[2] * (out_size - w + 1))
        y0 = int(occ[3] * (out_size - h + 1))
        p.occluder = (x0, y0, x0 + w, y0 + h)
        p.occluder_rgb = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    if u[6] < cfg.color_prob:
        p.brightness = float(1.0 + cfg.brightness * jitter[0])
        p.contrast = float(1.0 + cfg.contrast * jitter[1])
        p.saturation = float(1.0 + cfg.saturation * jitter[2])
    return p


def geometric_affine(p: AugmentParams, size: int) -> np.ndarray:
    """(2, 3) affine of the geometric part on a ``size``-px image: flip, then rotate+scale about the centre,
    then shift. Maps source pixel coordinates to augmented ones."""
    c = (size - 1) / 2.0
    flip = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if p.flip else np.eye(3)
    t = math.radians(p.angle_deg)
    # Counter-clockwise on screen (y axis pointing down): the same convention as cv2.getRotationMatrix2D.
    rot = p.scale * np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    about = np.eye(3)
    about[:2, :2] = rot
    about[:2, 2] = np.array([c, c]) - rot @ np.array([c, c]) + np.asarray(p.shift, dtype=np.float64)
    return (about @ flip)[:2]


def resize_points(points: np.ndarray, src_size: int, out_size: int) -> np.ndarray:
    """Landmark coordinates after resizing a ``src_size`` image to ``out_size`` (pixel-centre convention)."""
    k = out_size / src_size
    return np.asarray(points, dtype=np.float64) * k + 0.5 * (k - 1.0)


def resize_image(image: np.ndarray, out_size: int) -> np.ndarray:
    """Area resampling when shrinking, bilinear when enlarging; a no-op at the same size."""
    if image.shape[0] == out_size and image.shape[1] == out_size:
        return image
    interp = cv2.INTER_AREA if out_size < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (out_size, out_size), interpolation=interp)


def apply_params(
    image: np.ndarray,
    landmarks: np.ndarray,
    p: AugmentParams,
    out_size: int,
    flip_perm: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``p`` to an (S, S, 3) uint8 RGB image and its (L, 2) pixel landmarks; return both at ``out_size``.

    ``flip_perm`` is the layout's flip permutation (``new[i] = mirrored_old[perm[i]]``); required when flipping.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[0] != img.shape[1] or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"augment: expected a square (S, S, 3) uint8 image, got {img.shape} {img.dtype}")
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"augment: expected (L, 2) landmarks, got {pts.shape}")
    size = img.shape[0]
    if p.is_geometric:
        m = geometric_affine(p, size)
        img = cv2.warpAffine(
            img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
        )
        pts = pts @ m[:, :2].T + m[:, 2]
        if p.flip:
            if flip_perm is None or len(flip_perm) != len(pts):
                raise ValueError(f"augment: flipping {len(pts)} landmarks needs their layout's flip permutation")
            pts = pts[np.asarray(flip_perm)]
    img = resize_image(img, out_size)
    pts = resize_points(pts, size, out_size)
    img = photometric(img, p)
    return img, pts


def photometric(image: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Blur, occluder and colour jitter of ``p`` (the landmarks do not move)."""
    img = image
    if p.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=p.blur_sigma, sigmaY=p.blur_sigma, borderType=cv2.BORDER_REFLECT)
    if p.occluder is not None:
        img = img.copy()
        x0, y0, x1, y1 = p.occluder
        img[y0:y1, x0:x1] = np.asarray(p.occluder_rgb, dtype=np.uint8)
    if (p.brightness, p.contrast, p.saturation) != (1.0, 1.0, 1.0):
        img = color_jitter(img, p.brightness, p.contrast, p.saturation)
    return img


def color_jitter(image: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """out = clip(sat(con(bri(x)))): x * b; then (x - mean grey) * c + mean grey; then grey + (x - grey) * s.

    Grey is the Rec. 601 luma 0.299 R + 0.587 G + 0.114 B (per pixel for saturation, image mean for contrast).
    """
    x = image.astype(np.float32) * np.float32(brightness)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if contrast != 1.0:
        mean_grey = float((x @ weights).mean())
        x = (x - mean_grey) * np.float32(contrast) + np.float32(mean_grey)
    if saturation != 1.0:
        grey = (x @ weights)[..., None]
        x = grey + (x - grey) * np.float32(saturation)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment(
    image: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    out_size: int,
    flip_perm: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw and apply one sample's augmentation. Flips are skipped when no permutation is known."""
    p = sample_params(rng, cfg, image.shape[0], out_size)
    if flip_perm is None:
        p.flip = False
    return apply_params(image, landmarks, p, out_size, flip_perm)
