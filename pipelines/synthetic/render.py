"""Fast numpy + OpenCV renderer of the synthetic face (``face_model``) into an RGB uint8 image.

Every visible facial structure is drawn from the projected landmarks themselves (eye contour = sclera
outline, pupils = iris centres, lip contours = lip outlines, contour = skin silhouette, brow contour = brow
outline, ...), so the image -> landmarks mapping is exact and learnable. Polygons are drawn with sub-pixel
precision (``shift=4``) and anti-aliasing; pixel centres are at integer coordinates, like the landmarks.

Order: background (``draw_background``) -> body -> back hair -> ears -> skin -> brows -> eyes -> nose ->
lips -> front hair -> shading/texture -> occluders -> photometric effects (``photometric``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import cv2
import numpy as np

from pipelines.synthetic import face_model as fm

SHIFT = 4
_ONE = 1 << SHIFT
_NOISE_SCALE = 32.0  # int8 noise bank holds N(0, 1) * 32

# RGB palettes (0..255); samples interpolate between neighbours
_SKIN = np.array(
    [[250, 214, 190], [236, 188, 160], [214, 160, 120], [190, 135, 95], [160, 105, 70], [125, 80, 55], [95, 60, 42]],
    dtype=np.float32,
)
_HAIR = np.array(
    [
        [18, 14, 12],
        [45, 30, 22],
        [85, 58, 38],
        [130, 90, 55],
        [200, 165, 110],
        [150, 70, 35],
        [160, 158, 155],
        [230, 225, 215],
    ],
    dtype=np.float32,
)
_HAIR_P = np.array([0.25, 0.22, 0.17, 0.1, 0.1, 0.05, 0.07, 0.04])
_IRIS = np.array(
    [[35, 22, 14], [80, 50, 28], [120, 90, 45], [70, 110, 150], [80, 115, 70], [110, 120, 125]], dtype=np.float32
)
_LIPSTICK = np.array([[170, 25, 40], [200, 80, 110], [110, 30, 60], [150, 60, 50], [60, 20, 30]], dtype=np.float32)


def _pick(rng: np.random.Generator, palette: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
    """A palette colour mixed a little with its neighbour and jittered."""
    i = int(rng.choice(len(palette), p=p))
    j = min(i + 1, len(palette) - 1)
    c = palette[i] + (palette[j] - palette[i]) * rng.uniform(0.0, 0.5)
    return np.clip(c * rng.uniform(0.92, 1.08, 3), 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Appearance:
    """Colours, hair style and skin texture of one person (constant over a video)."""

    skin: np.ndarray
    lip_upper: np.ndarray
    lip_lower: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    sclera: np.ndarray
    clothes: np.ndarray
    hair_style: int  # 0 bald, 1 short, 2 medium, 3 long
    hair_volume: float
    hairline_height: float
    hairline_part: float
    lash: float  # eyelid line darkness 0..1
    texture: np.ndarray = field(repr=False)  # (16, 16) float32 albedo modulation around 1

    @staticmethod
    def sample(rng: np.random.Generator) -> Appearance:
        """A random appearance."""
        skin = _pick(rng, _SKIN)
        if rng.random() < 0.18:
            lip = _pick(rng, _LIPSTICK)
        else:
            lip = np.clip(skin * np.array([0.82, 0.55, 0.56]) * rng.uniform(0.85, 1.05), 0, 255)
        hair = _pick(rng, _HAIR, _HAIR_P)
        brow = np.clip(0.75 * np.minimum(hair, 120) + 0.25 * skin * 0.5, 0, 255).astype(np.float32)
        tex = rng.normal(0.0, 1.0, (16, 16)).astype(np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), 1.2)
        tex = 1.0 + tex / (tex.std() + 1e-6) * rng.uniform(0.02, 0.06)
        return Appearance(
            skin=skin,
            lip_upper=(lip * 0.9).astype(np.float32),
            lip_lower=lip.astype(np.float32),
            hair=hair,
            brow=brow,
            iris=_pick(rng, _IRIS),
            sclera=(np.array([238, 234, 226], np.float32) * rng.uniform(0.82, 1.0)).astype(np.float32),
            clothes=rng.uniform(10, 245, 3).astype(np.float32),
            hair_style=int(rng.choice(4, p=[0.08, 0.4, 0.27, 0.25])),
            hair_volume=float(rng.uniform(0.0, 1.0)),
            hairline_height=float(rng.uniform(0.0, 1.0)),
            hairline_part=float(rng.uniform(-1.0, 1.0)),
            lash=float(rng.uniform(0.5, 1.0)),
            texture=tex.astype(np.float32),
        )


@dataclass(frozen=True)
class Lighting:
    """Directional light (camera frame: x right, y down, z towards the camera) plus ambient."""

    direction: np.ndarray
    ambient: float
    diffuse: float

    @staticmethod
    def sample(rng: np.random.Generator) -> Lighting:
        """A random light, mostly from the front."""
        d = np.array([rng.uniform(-0.9, 0.9), rng.uniform(-0.8, 0.5), rng.uniform(0.35, 1.0)])
        ambient = float(rng.uniform(0.35, 0.65))
        return Lighting(
            direction=d / np.linalg.norm(d), ambient=ambient, diffuse=float(1.05 - ambient + rng.uniform(-0.1, 0.15))
        )


@dataclass(frozen=True)
class HeadGeometry:
    """Projected 2D geometry of one head in image pixels."""

    landmarks: np.ndarray  # (98, 2)
    forehead: np.ndarray
    hair: np.ndarray  # front hair polygon, (0, 2) when bald
    back_hair: np.ndarray  # long hair behind the face, (0, 2) unless long hair
    ear_l: np.ndarray
    ear_r: np.ndarray
    neck: np.ndarray
    shoulders: np.ndarray
    iris_l: np.ndarray
    iris_r: np.ndarray
    pupil_radius: float  # px
    rot: np.ndarray  # (3, 3)
    scale: float
    origin: np.ndarray  # (2,) image position of the face-frame origin


def build_geometry(
    idn: fm.Identity, ex: fm.Expression, pose: fm.Pose, app: Appearance, lm3: np.ndarray | None = None
) -> HeadGeometry:
    """Project the 3D face, its head geometry and iris outlines with ``pose`` (``lm3``: precomputed
    ``landmarks_3d(idn, ex)``)."""
    if lm3 is None:
        lm3 = fm.landmarks_3d(idn, ex)
    head = fm.head_points_3d(idn)
    hair, back = fm.hair_3d(idn, app.hair_style, app.hair_volume, app.hairline_height, app.hairline_part)
    irises = []
    for side, p in ((-1, lm3[96]), (1, lm3[97])):
        _, _, hw = fm.eye_frame(idn, side)
        r = fm.IRIS_RADIUS * hw
        ang = np.linspace(0.0, 2 * np.pi, 24, endpoint=False)
        irises.append(p + np.stack([r * np.cos(ang), r * np.sin(ang), np.zeros(24)], axis=1))
    rot = fm.rotation_matrix(pose.yaw, pose.pitch, pose.roll)
    every = np.concatenate(
        [
            lm3,
            head["forehead"],
            hair,
            back,
            head["ear_l"],
            head["ear_r"],
            head["neck"],
            head["shoulders"],
            irises[0],
            irises[1],
        ]
    )
    p2 = fm.project(every, pose)
    sizes = [98, len(head["forehead"]), len(hair), len(back), 16, 16, 4, len(head["shoulders"]), 24, 24]
    parts = np.split(p2, np.cumsum(sizes)[:-1])
    _, _, hw = fm.eye_frame(idn, -1)
    geo = HeadGeometry(
        landmarks=parts[0],
        forehead=parts[1],
        hair=parts[2],
        back_hair=parts[3],
        ear_l=parts[4],
        ear_r=parts[5],
        neck=parts[6],
        shoulders=parts[7],
        iris_l=parts[8],
        iris_r=parts[9],
        pupil_radius=0.4 * fm.IRIS_RADIUS * hw * pose.scale,
        rot=rot,
        scale=pose.scale,
        origin=np.array([pose.tx, pose.ty]),
    )
    return geo


# --- drawing helpers -----------------------------------------------------------------------------------


def _fx(pts: np.ndarray, off: np.ndarray | None = None) -> np.ndarray:
    """Float pixel points -> int32 fixed-point (``shift=4``) for cv2 drawing."""
    p = pts if off is None else pts - off
    return np.round(p * _ONE).astype(np.int32).reshape(-1, 1, 2)


Color = np.ndarray | tuple[float, ...] | float


def _col(c: Color) -> tuple[float, float, float]:
    """Any colour (scalar, tuple or array) as the 3-tuple of floats OpenCV expects."""
    if isinstance(c, int | float):
        return (float(c), float(c), float(c))
    return (float(c[0]), float(c[1]), float(c[2]))


def _fill(img: np.ndarray, pts: np.ndarray, color: Color, off: np.ndarray | None = None) -> None:
    """Anti-aliased sub-pixel polygon fill; no-op for fewer than 3 points."""
    if len(pts) >= 3:
        cv2.fillPoly(img, [_fx(pts, off)], _col(color), cv2.LINE_AA, SHIFT)


def _line(
    img: np.ndarray, pts: np.ndarray, color: Color, thick: int, off: np.ndarray | None = None, closed: bool = False
) -> None:
    """Anti-aliased sub-pixel polyline of at least 1 px."""
    cv2.polylines(img, [_fx(pts, off)], closed, _col(color), max(1, int(thick)), cv2.LINE_AA, SHIFT)


def _ellipse(
    img: np.ndarray, c: np.ndarray, axes: tuple[float, float], angle: float, color: Color, off: np.ndarray | None = None
) -> None:
    """Anti-aliased sub-pixel filled ellipse (``axes`` are half-axes in px, ``angle`` in degrees)."""
    cc = c if off is None else c - off
    center = (round(float(cc[0]) * _ONE), round(float(cc[1]) * _ONE))
    ax = (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE)))
    cv2.ellipse(img, center, ax, angle, 0, 360, _col(color), -1, cv2.LINE_AA, SHIFT)


def _bbox(pts: np.ndarray, shape: tuple[int, ...], pad: int = 2) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) box of ``pts`` padded and clipped to the image, or None if empty."""
    h, w = shape[:2]
    x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


# --- background ----------------------------------------------------------------------------------------


def draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Cluttered RGB uint8 background: colour gradient, low-frequency colour noise and random shapes."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    small = np.linspace(0.0, 1.0, 8, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    g = np.cos(ang) * small[None, :] + np.sin(ang) * small[:, None]
    g = (g - g.min()) / (np.ptp(g) + 1e-6)
    base = c1 + (c2 - c1) * g[..., None] + rng.normal(0, 25, (8, 8, 3))
    img = cv2.resize(np.clip(base, 0, 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    side = max(height, width)
    for _ in range(int(rng.integers(4, 16))):
        color = _col(rng.uniform(0, 255, 3))
        kind = rng.integers(0, 5)
        cx, cy = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        size = rng.uniform(0.05, 0.45) * side
        if kind == 0:
            box = cv2.boxPoints(((cx, cy), (size, size * rng.uniform(0.2, 1.5)), rng.uniform(0, 180)))
            _fill(img, box, color)
        elif kind == 1:
            _ellipse(img, np.array([cx, cy]), (size / 2, size / 2 * rng.uniform(0.3, 1.0)), rng.uniform(0, 180), color)
        elif kind == 2:
            n = int(rng.integers(3, 7))
            pts = np.array([cx, cy]) + rng.uniform(-size / 2, size / 2, (n, 2))
            _fill(img, pts, color)
        elif kind == 3:
            pts = np.array([cx, cy]) + rng.uniform(-size, size, (2, 2))
            _line(img, pts, color, int(rng.integers(1, 8)))
        else:  # stripes
            d = rng.uniform(4, 14)
            a = rng.uniform(0, np.pi)
            n = np.array([np.cos(a), np.sin(a)])
            t = np.array([-n[1], n[0]])
            for k in range(int(rng.integers(3, 9))):
                c = np.array([cx, cy]) + n * k * d
                _line(img, np.stack([c - t * size, c + t * size]), color, int(max(1, d / 3)))
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.5)))
    return img


# --- head ----------------------------------------------------------------------------------------------


def _shade_map(geo: HeadGeometry, app: Appearance, light: Lighting, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) float32 multiplicative shading x texture over the ROI ``box``, computed at 1/4 resolution."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    sw, sh = max(2, (w + 3) // 4), max(2, (h + 3) // 4)
    xs = x0 + (np.arange(sw, dtype=np.float32) + 0.5) * (w / sw) - 0.5
    ys = y0 + (np.arange(sh, dtype=np.float32) + 0.5) * (h / sh) - 0.5
    a = geo.scale * geo.rot[:2, :2]
    ainv = np.linalg.inv(a).astype(np.float32)
    dx = xs[None, :] - np.float32(geo.origin[0])
    dy = ys[:, None] - np.float32(geo.origin[1])
    u = ainv[0, 0] * dx + ainv[0, 1] * dy
    v = ainv[1, 0] * dx + ainv[1, 1] * dy
    nu, nv = u / 1.3, (v - 0.35) / 1.9
    nz = np.sqrt(np.maximum(1.0 - nu * nu - nv * nv, 0.06))
    norm = np.sqrt(nu * nu + nv * nv + nz * nz)
    r = geo.rot.astype(np.float32)
    ld = light.direction.astype(np.float32) @ r  # light in the face frame
    lam = np.maximum((ld[0] * nu + ld[1] * nv + ld[2] * nz) / norm, 0.0)
    shade = light.ambient + light.diffuse * lam
    tex = cv2.remap(
        app.texture,
        ((u + 1.6) / 3.2 * 15).astype(np.float32),
        ((v + 1.9) / 3.8 * 15).astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    return cv2.resize((shade * tex).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _draw_eye(
    img: np.ndarray,
    ring: np.ndarray,
    iris: np.ndarray,
    pupil: np.ndarray,
    geo: HeadGeometry,
    app: Appearance,
    skin: np.ndarray,
) -> None:
    s = geo.scale
    box = _bbox(np.concatenate([ring, iris]), img.shape, pad=2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    off = np.array([x0, y0], dtype=np.float64)
    patch = img[y0:y1, x0:x1]
    open_area = cv2.contourArea(ring.astype(np.float32))
    if open_area > 1.0:
        layer = np.empty_like(patch)
        layer[:] = np.clip(app.sclera, 0, 255).astype(np.uint8)
        _fill(layer, iris, app.iris, off)
        _ellipse(layer, pupil, (geo.pupil_radius, geo.pupil_radius), 0.0, (12, 10, 10), off)
        hl = pupil + geo.pupil_radius * np.array([0.8, -0.8])
        _ellipse(layer, hl, (max(0.6, geo.pupil_radius * 0.35),) * 2, 0.0, (235, 235, 235), off)
        mask = np.zeros(patch.shape[:2], np.uint8)
        _fill(mask, ring, 255, off)
        m = (mask.astype(np.float32) * (1.0 / 255.0))[..., None]
        patch[:] = (patch * (1.0 - m) + layer * m).astype(np.uint8)
    lash = skin * (1.0 - app.lash) * 0.35
    _line(img, ring[[0, 1, 2, 3, 4]], lash, round(0.022 * s))
    _line(img, ring[[4, 5, 6, 7, 0]], skin * 0.62, round(0.012 * s))
    # lid crease above the upper lid
    up = geo.rot[:2, 1] * -1.0
    crease = ring[[1, 2, 3]] + up * (0.05 * s)
    _line(
        img, np.concatenate([ring[:1] + up * 0.02 * s, crease, ring[4:5] + up * 0.02 * s]), skin * 0.78, round(0.01 * s)
    )


def render_head(img: np.ndarray, geo: HeadGeometry, app: Appearance, light: Lighting) -> None:
    """Draw the head described by ``geo`` onto ``img`` (H, W, 3) RGB uint8, in place."""
    lm = geo.landmarks
    s = geo.scale
    skin = app.skin
    # body: shoulders and neck (not part of the shaded head ROI)
    body_shade = light.ambient + 0.6 * light.diffuse
    _fill(img, geo.shoulders, np.clip(app.clothes * body_shade, 0, 255))
    head_pts = np.concatenate([lm[fm.CONTOUR], geo.forehead, geo.ear_l, geo.ear_r, geo.hair, geo.back_hair])
    box = _bbox(head_pts, img.shape, pad=3)
    if box is None:
        return
    x0, y0, x1, y1 = box
    off = np.array([x0, y0], dtype=np.float64)
    roi = img[y0:y1, x0:x1]
    mask = np.zeros(roi.shape[:2], np.uint8)
    hair_col = np.clip(app.hair, 0, 255)
    _fill(roi, geo.back_hair, hair_col * 0.75, off)  # no-op without long hair
    _fill(mask, geo.back_hair, 255, off)
    _fill(img, geo.neck, np.clip(skin * 0.72 * body_shade, 0, 255))
    _fill(mask, geo.neck, 0, off)
    for ear in (geo.ear_l, geo.ear_r):
        _fill(roi, ear, skin * 0.9, off)
        _fill(mask, ear, 255, off)
    face = np.concatenate([lm[fm.CONTOUR], geo.forehead[1:-1]])
    _fill(roi, face, skin, off)
    _fill(mask, face, 255, off)
    # brows
    _fill(roi, lm[fm.BROW_L], app.brow, off)
    _fill(roi, lm[fm.BROW_R], app.brow, off)
    # eyes
    _draw_eye(roi, lm[fm.EYE_L] - off, geo.iris_l - off, lm[96] - off, geo, app, skin)
    _draw_eye(roi, lm[fm.EYE_R] - off, geo.iris_r - off, lm[97] - off, geo, app, skin)
    # nose: bridge shadow on the side away from the light, alar crease, nostrils, tip highlight
    side = -1.0 if float(light.direction @ geo.rot[:, 0]) > 0 else 1.0
    lateral = geo.rot[:2, 0] * side
    bridge = lm[fm.NOSE_BRIDGE]
    shadow = np.concatenate([bridge[1:] + lateral * 0.06 * s, lm[[56 if side < 0 else 58]]])
    _line(roi, shadow, skin * 0.88, round(0.03 * s), off)
    _line(roi, lm[fm.NOSE_BOTTOM], skin * 0.7, round(0.014 * s), off)
    ang = float(np.degrees(np.arctan2(geo.rot[1, 0], geo.rot[0, 0])))
    up = -geo.rot[:2, 1]
    for a, b in ((55, 56), (58, 59)):
        c = (lm[a] * 0.4 + lm[b] * 0.6 if a == 55 else lm[a] * 0.6 + lm[b] * 0.4) + up * 0.018 * s
        _ellipse(roi, c, (0.045 * s, 0.02 * s), ang, skin * 0.3, off)
    _ellipse(roi, lm[fm.NOSE_TIP], (0.045 * s, 0.03 * s), ang, np.minimum(skin * 1.05, 255), off)
    # lips and mouth
    inner = lm[fm.LIPS_INNER]
    _fill(roi, inner, (60, 22, 26), off)
    gap = np.linalg.norm(lm[94] - lm[90])
    if gap > 0.05 * s:
        teeth_lo = lm[[91, 90, 89]] + 0.4 * (lm[[93, 94, 95]] - lm[[91, 90, 89]])
        _fill(roi, np.concatenate([lm[88:93], teeth_lo]), (228, 224, 210), off)
    upper = np.concatenate([lm[76:83], lm[[92, 91, 90, 89, 88]]])
    lower = np.concatenate([lm[82:88], lm[[76, 88, 95, 94, 93, 92]]])
    _fill(roi, upper, app.lip_upper, off)
    _fill(roi, lower, app.lip_lower, off)
    _line(roi, lm[[88, 89, 90, 91, 92]], app.lip_upper * 0.45, round(0.012 * s), off)
    # front hair
    _fill(roi, geo.hair, hair_col, off)  # no-op when bald
    _fill(mask, geo.hair, 255, off)
    # shading x texture over the masked head
    f = _shade_map(geo, app, light, box)
    fac = 1.0 + mask.astype(np.float32) * np.float32(1.0 / 255.0) * (f - 1.0)
    roi[:] = np.minimum(roi * fac[..., None], 255.0).astype(np.uint8)


# --- occluders and photometric effects -----------------------------------------------------------------


def draw_occluder(
    img: np.ndarray,
    rng: np.random.Generator,
    landmarks: np.ndarray,
    *,
    center: np.ndarray | None = None,
    size: float | None = None,
) -> np.ndarray:
    """Draw one random occluder over part of the face; return its (N, 2) outline polygon (pixels)."""
    box_min, box_max = landmarks.min(0), landmarks.max(0)
    face = float(np.max(box_max - box_min))
    if center is None:
        center = landmarks[int(rng.integers(0, len(landmarks)))] + rng.normal(0, 0.08 * face, 2)
    if size is None:
        size = face * rng.uniform(0.2, 0.55)
    kind = int(rng.integers(0, 3))
    color = rng.uniform(0, 255, 3)
    if kind == 0:
        poly = cv2.boxPoints(
            ((float(center[0]), float(center[1])), (size, size * rng.uniform(0.4, 1.6)), rng.uniform(0, 180))
        )
    elif kind == 1:
        ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        rot = rng.uniform(0, np.pi)
        ax = np.array([size / 2, size / 2 * rng.uniform(0.4, 1.0)])
        e = np.stack([ax[0] * np.cos(ang), ax[1] * np.sin(ang)], 1)
        c, s_ = np.cos(rot), np.sin(rot)
        poly = e @ np.array([[c, s_], [-s_, c]]) + center
    else:
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = size / 2 * rng.uniform(0.5, 1.0, n)
        poly = center + np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    draw_polygon_occluder(img, poly, color, rng)
    return np.asarray(poly, dtype=np.float64)


def draw_polygon_occluder(img: np.ndarray, poly: np.ndarray, color: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``poly`` with ``color``, optionally striped, in place."""
    _fill(img, poly, color)
    if rng.random() < 0.35:
        box = _bbox(poly, img.shape)
        if box is None:
            return
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _fill(mask, poly, 255, np.array([x0, y0], float))
        stripes = img[y0:y1, x0:x1].copy()
        c2 = _col(rng.uniform(0, 255, 3))
        step = int(rng.integers(3, 9))
        for k in range(-(y1 - y0), x1 - x0, 2 * step):
            cv2.line(stripes, (k, 0), (k + (y1 - y0), y1 - y0), c2, step)
        sel = mask > 127
        img[y0:y1, x0:x1][sel] = stripes[sel]


@cache
def _noise_bank() -> np.ndarray:
    """(4, 512, 512, 3) int8 standard-normal noise x 32, from a fixed seed (fast per-image noise)."""
    g = np.random.default_rng(12345)
    return np.clip(np.round(g.standard_normal((4, 512, 512, 3), dtype=np.float32) * _NOISE_SCALE), -127, 127).astype(
        np.int8
    )


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian sensor noise of std ``sigma`` (grey levels); returns a new uint8 image."""
    if sigma <= 0:
        return img
    h, w = img.shape[:2]
    bank = _noise_bank()
    if h <= bank.shape[1] and w <= bank.shape[2]:
        k = int(rng.integers(0, bank.shape[0]))
        oy = int(rng.integers(0, bank.shape[1] - h + 1))
        ox = int(rng.integers(0, bank.shape[2] - w + 1))
        n = bank[k, oy : oy + h, ox : ox + w].astype(np.float32) * np.float32(sigma / _NOISE_SCALE)
    else:
        n = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)


def tone(img: np.ndarray, gain: np.ndarray | float, gamma: float) -> np.ndarray:
    """Per-channel gain then gamma, via a lookup table (uint8 -> uint8)."""
    x = np.arange(256, dtype=np.float32) / 255.0
    g = np.broadcast_to(np.asarray(gain, dtype=np.float32), (3,))
    lut = np.clip(255.0 * np.clip(x[:, None] * g[None, :], 0, 1) ** gamma, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut.reshape(256, 1, 3))


def motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Linear motion blur of ``length`` px along ``angle`` (radians)."""
    n = max(3, int(np.ceil(length)) | 1)
    k = np.zeros((n, n), np.float32)
    c = (n - 1) / 2
    d = np.array([np.cos(angle), np.sin(angle)]) * (length / 2)
    cv2.line(
        k,
        (round((c - d[0]) * 16), round((c - d[1]) * 16)),
        (round((c + d[0]) * 16), round((c + d[1]) * 16)),
        1.0,
        1,
        cv2.LINE_AA,
        4,
    )
    k /= max(float(k.sum()), 1e-6)
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)


def photometric(
    img: np.ndarray, rng: np.random.Generator, *, low_light: bool = False, blur_p: float = 0.2, jpeg_p: float = 0.15
) -> np.ndarray:
    """Random global lighting change, optional blur, sensor noise and optional JPEG artefacts."""
    if low_light:
        gain = rng.uniform(0.15, 0.32) * rng.uniform(0.85, 1.15, 3)
        gamma = float(rng.uniform(1.0, 1.4))
        sigma = float(rng.uniform(6.0, 14.0))
    else:
        gain = rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)
        gamma = float(rng.uniform(0.75, 1.35))
        sigma = float(rng.uniform(0.5, 5.0))
    img = tone(img, gain, gamma)
    if rng.random() < blur_p:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 2.2)))
    img = add_noise(img, sigma, rng)
    if rng.random() < jpeg_p:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 85))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img
