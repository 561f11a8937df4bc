"""Parametric 3D face with the 98 WFLW landmarks (spec §5.1 layout), plus non-landmark head geometry.

Face frame: x to the image right, y down, z towards the camera; one unit is about half the face width
(outer eye corners are ~1.3 units apart). Every part is built "clockwise from its image-left end", which is
exactly the WFLW ordering:

- 0..32 contour, image-left temple -> chin (16) -> image-right temple;
- 33..37 upper edge of the image-left brow (outer -> inner), 38..41 its lower edge (inner -> outer);
  42..46 upper edge of the image-right brow (inner -> outer), 47..50 its lower edge (outer -> inner);
- 51..54 nose bridge (54 = tip), 55..59 nose bottom left -> right (57 centre);
- 60..67 image-left eye: 60 outer corner, 61..63 upper lid, 64 inner corner, 65..67 lower lid;
  68..75 image-right eye: 68 inner corner, 69..71 upper lid, 72 outer corner, 73..75 lower lid;
- 76..87 outer lips (76, 82 corners; 79 top centre, 85 bottom centre), 88..95 inner lips (88, 92 corners);
- 96, 97 pupils (image-left, image-right).

All identity and expression parameters are continuous, so video frames can interpolate them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

N_LANDMARKS = 98
CONTOUR = np.arange(0, 33)
BROW_L = np.arange(33, 42)
BROW_R = np.arange(42, 51)
NOSE_BRIDGE = np.arange(51, 55)
NOSE_BOTTOM = np.arange(55, 60)
EYE_L = np.arange(60, 68)
EYE_R = np.arange(68, 76)
LIPS_OUTER = np.arange(76, 88)
LIPS_INNER = np.arange(88, 96)
PUPILS = np.array([96, 97])
NOSE_TIP = 54
EYE_OUTER_CORNERS = (60, 72)

IRIS_RADIUS = 0.45  # iris radius in units of the eye half-width (renderer)
CONTOUR_TOP_Y = -0.15


@dataclass(frozen=True)
class Identity:
    """Shape parameters of one person; neutral values give the mean face."""

    face_width: float = 1.0  # contour half-width
    face_height: float = 1.0  # chin distance scale
    jaw_square: float = 0.5  # 0 = rounder, 1 = squarer jaw (0.5 = fitted mean jawline)
    eye_size: float = 1.0
    eye_spacing: float = 0.0  # added to the eye centres' |x|
    eye_tilt: float = 0.02  # outer corners raised by this much
    eye_open: float = 1.0  # lid opening scale
    nose_length: float = 1.0
    nose_width: float = 1.0
    mouth_width: float = 1.0
    mouth_y: float = 0.0  # added to the mouth's y
    lip_thickness: float = 1.0
    brow_height: float = 0.0  # added to the brows' y (negative = higher)
    brow_thickness: float = 1.0
    brow_arch: float = 1.0
    depth: float = 1.0  # z scale

    @staticmethod
    def sample(rng: np.random.Generator) -> Identity:
        """A random identity (parameters drawn independently, clipped normals around the mean face)."""

        def n(mean: float, std: float, lo: float, hi: float) -> float:
            return float(np.clip(rng.normal(mean, std), lo, hi))

        return Identity(
            face_width=n(1.0, 0.06, 0.86, 1.14),
            face_height=n(1.0, 0.06, 0.86, 1.14),
            jaw_square=float(rng.uniform(0.0, 1.0)),
            eye_size=n(1.0, 0.07, 0.85, 1.15),
            eye_spacing=n(0.0, 0.03, -0.06, 0.06),
            eye_tilt=n(0.02, 0.02, -0.03, 0.06),
            eye_open=n(1.0, 0.12, 0.7, 1.3),
            nose_length=n(1.0, 0.07, 0.85, 1.15),
            nose_width=n(1.0, 0.1, 0.8, 1.25),
            mouth_width=n(1.0, 0.07, 0.85, 1.15),
            mouth_y=n(0.0, 0.025, -0.05, 0.05),
            lip_thickness=n(1.0, 0.15, 0.65, 1.35),
            brow_height=n(0.0, 0.025, -0.05, 0.05),
            brow_thickness=n(1.0, 0.18, 0.6, 1.4),
            brow_arch=n(1.0, 0.3, 0.3, 1.7),
            depth=n(1.0, 0.08, 0.8, 1.2),
        )


@dataclass(frozen=True)
class Expression:
    """Expression parameters; all zero is the neutral face."""

    mouth_open: float = 0.0  # 0 closed .. 1 wide open (jaw drops)
    smile: float = 0.0  # -0.5 (frown) .. 1 (broad smile)
    brow_raise: float = 0.0  # -1 (frown) .. 1 (surprise)
    blink_l: float = 0.0  # 0 open .. 1 closed, image-left eye
    blink_r: float = 0.0  # image-right eye
    gaze_x: float = 0.0  # -1 .. 1, pupils towards image right for positive
    gaze_y: float = 0.0  # -1 .. 1, down for positive

    @staticmethod
    def sample(rng: np.random.Generator) -> Expression:
        """A random still-image expression (mostly mild, sometimes strong)."""
        strong = rng.random() < 0.3
        blink = float(rng.uniform(0.0, 1.0)) if rng.random() < 0.12 else float(rng.uniform(0.0, 0.25))
        wink = rng.random() < 0.05
        return Expression(
            mouth_open=float(rng.uniform(0.0, 1.0) if strong else rng.uniform(0.0, 0.25) * (rng.random() < 0.5)),
            smile=float(rng.uniform(-0.4, 1.0) if strong else rng.uniform(-0.2, 0.4)),
            brow_raise=float(rng.uniform(-1.0, 1.0) if strong else rng.uniform(-0.3, 0.3)),
            blink_l=blink if not wink else 1.0,
            blink_r=blink,
            gaze_x=float(rng.uniform(-0.8, 0.8)),
            gaze_y=float(rng.uniform(-0.5, 0.5)),
        )

    def lerp(self, other: Expression, t: float) -> Expression:
        """Linear interpolation between two expressions (t=0 -> self, t=1 -> other)."""
        return Expression(
            **{f.name: (1.0 - t) * getattr(self, f.name) + t * getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True)
class Pose:
    """Rigid head pose and weak-perspective camera: angles in radians, ``scale`` in px per face unit."""

    yaw: float = 0.0  # positive turns the face towards the image right
    pitch: float = 0.0  # positive tilts the face down
    roll: float = 0.0  # positive rotates clockwise in the image
    scale: float = 100.0
    tx: float = 128.0
    ty: float = 128.0


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) @ Rx(pitch) @ Ry(yaw) in the face frame (x right, y down, z towards the camera)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def project(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Weak-perspective projection of (N, 3) face-frame points to (N, 2) image pixels."""
    r = rotation_matrix(pose.yaw, pose.pitch, pose.roll)
    p = np.asarray(points, dtype=np.float64) @ r[:2].T
    return p * pose.scale + np.array([pose.tx, pose.ty])


# --- helpers -------------------------------------------------------------------------------------------


def _resample_arclength(curve: np.ndarray, n: int) -> np.ndarray:
    """``n`` points equally spaced in arc length (of the x, y projection) along a dense (M, 3) polyline."""
    seg = np.linalg.norm(np.diff(curve[:, :2], axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    target = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(target, s, curve[:, k]) for k in range(3)], axis=1)


def _side_x(center_abs: float, u: np.ndarray | float, half_width: float, side: int) -> np.ndarray:
    """x of local coordinate ``u`` (-1 = lateral end, +1 = medial end) on the face side ``side`` (-1 = image
    left, +1 = image right)."""
    return side * (center_abs - np.asarray(u) * half_width)


def _contour(idn: Identity, ex: Expression) -> np.ndarray:
    # superellipse fitted to typical jawline proportions; e < 1 squares the jaw, ``taper`` narrows it
    phi = np.linspace(0.0, np.pi, 257)
    c, s = np.cos(phi), np.sin(phi)
    e = 0.82 - 0.28 * idn.jaw_square
    taper = 0.46 - 0.1 * idn.jaw_square
    y0 = CONTOUR_TOP_Y
    height = 1.615 * idn.face_height
    x = -1.037 * idn.face_width * np.sign(c) * np.abs(c) ** e * (1.0 - taper * s**2)
    y = y0 + height * np.abs(s) ** e
    z = -0.34 + 0.44 * np.abs(s) ** 1.5
    pts = _resample_arclength(np.stack([x, y, z], axis=1), 33)
    # jaw drop when the mouth opens: strongest at the chin, none above the mouth corners
    chin = y0 + height
    w = np.clip((pts[:, 1] - 0.6) / (chin - 0.6), 0.0, 1.0) ** 1.5
    pts[:, 1] += ex.mouth_open * 0.24 * w
    pts[:, 0] *= 1.0 - ex.mouth_open * 0.05 * w
    return pts


# upper brow edge at u = -1 (lateral tip), -0.5, 0, 0.5, 1 (medial end), mean face
_BROW_UP_Y = np.array([-0.35, -0.48, -0.52, -0.495, -0.43])
_BROW_U = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])


def _brow(idn: Identity, ex: Expression, side: int) -> np.ndarray:
    """9 brow points of one side in WFLW order (start at the image-left end, upper edge first)."""
    center_abs, hw = 0.53, 0.355
    line = np.interp(_BROW_U, [-1.0, 1.0], [_BROW_UP_Y[0], _BROW_UP_Y[-1]])
    up_node = line + idn.brow_arch * (_BROW_UP_Y - line)
    up_node = up_node + idn.brow_height
    # raise lifts the whole brow (more in the middle), frown (negative) pulls the medial end down
    raise_ = ex.brow_raise
    lift = np.where(
        raise_ >= 0, 0.09 * raise_ * (0.7 + 0.3 * (1 - _BROW_U**2)), 0.07 * raise_ * (0.25 + 0.75 * (_BROW_U + 1) / 2)
    )
    up_node = up_node - lift

    def thick(u: np.ndarray) -> np.ndarray:
        return idn.brow_thickness * (0.03 + 0.05 * (u + 1.0) / 2.0)

    u_lo = np.array([0.85, 0.35, -0.15, -0.6])  # medial -> lateral
    lo_y = np.interp(u_lo, _BROW_U, up_node) + thick(u_lo)
    up = np.stack([_side_x(center_abs, _BROW_U, hw, side), up_node, 0.05 + 0.07 * (_BROW_U + 1) / 2], axis=1)
    lo = np.stack([_side_x(center_abs, u_lo, hw, side), lo_y, 0.05 + 0.07 * (u_lo + 1) / 2], axis=1)
    if side < 0:  # image-left brow: lateral end is image-left -> upper lateral->medial, lower medial->lateral
        return np.concatenate([up, lo])
    # image-right brow: medial end is image-left -> upper medial->lateral, lower lateral->medial
    return np.concatenate([up[::-1], lo[::-1]])


def eye_frame(idn: Identity, side: int) -> tuple[float, float, float]:
    """(centre_x, centre_y, half_width) of one eye in face units (centre on the corner line)."""
    return side * (0.47 + idn.eye_spacing), -0.165, 0.19 * idn.eye_size


def _eye(idn: Identity, ex: Expression, side: int) -> tuple[np.ndarray, np.ndarray]:
    """8 eye-contour points of one side in WFLW order, and its pupil."""
    cx, cy, hw = eye_frame(idn, side)
    blink = ex.blink_l if side < 0 else ex.blink_r
    h_up = 0.085 * idn.eye_size * idn.eye_open
    h_lo = 0.055 * idn.eye_size * idn.eye_open

    def corner_y(u: np.ndarray | float) -> np.ndarray:  # line between the corners, lateral end raised
        return cy + idn.eye_tilt * np.asarray(u) / 2.0

    u = np.array([-0.5, 0.0, 0.5])
    env_up = np.sin(np.pi * (u + 1) / 2) ** 0.7 * (1.0 + 0.12 * u)  # upper peak slightly medial
    env_lo = np.sin(np.pi * (u + 1) / 2) ** 0.8 * (1.0 - 0.12 * u)  # lower trough slightly lateral
    y_up_open = corner_y(u) - h_up * env_up
    y_lo_open = corner_y(u) + h_lo * env_lo
    y_close = corner_y(u) + 0.5 * h_lo * env_lo
    y_up = (1 - blink) * y_up_open + blink * y_close
    y_lo = (1 - blink) * y_lo_open + blink * y_close
    x = _side_x(abs(cx), u, hw, side)
    up = np.stack([x, y_up, np.full(3, 0.04)], axis=1)
    lo = np.stack([x, y_lo, np.full(3, 0.03)], axis=1)
    lat = np.array([_side_x(abs(cx), -1.0, hw, side), corner_y(-1.0), -0.06])
    med = np.array([_side_x(abs(cx), 1.0, hw, side), corner_y(1.0), -0.01])
    pupil = np.array(
        [
            cx + side * 0.03 * hw + ex.gaze_x * 0.35 * hw,
            corner_y(0.0) - 0.15 * h_up + ex.gaze_y * 0.3 * h_up,
            0.06,
        ]
    )
    if side < 0:  # lateral corner is image-left: outer, upper lat->med, inner, lower med->lat
        ring = np.concatenate([lat[None], up, med[None], lo[::-1]])
    else:  # medial corner is image-left: inner, upper med->lat, outer, lower lat->med
        ring = np.concatenate([med[None], up[::-1], lat[None], lo])
    return ring, pupil


def _nose(idn: Identity) -> tuple[np.ndarray, np.ndarray]:
    top = -0.21
    ys = top + np.array([0.0, 0.18, 0.36, 0.54]) * idn.nose_length
    bridge = np.stack([np.zeros(4), ys, np.array([0.12, 0.22, 0.33, 0.45])], axis=1)
    yb = top + 0.72 * idn.nose_length
    xb = np.array([-0.22, -0.11, 0.0, 0.11, 0.22]) * idn.nose_width
    bottom = np.stack(
        [xb, yb + np.array([-0.065, -0.03, 0.0, -0.03, -0.065]), np.array([0.15, 0.25, 0.3, 0.25, 0.15])], axis=1
    )
    return bridge, bottom


def _mouth(idn: Identity, ex: Expression) -> tuple[np.ndarray, np.ndarray]:
    """12 outer and 8 inner lip points in WFLW order."""
    my = 0.775 + idn.mouth_y + 0.1 * (idn.nose_length - 1.0)
    mw = 0.41 * idn.mouth_width
    lt = idn.lip_thickness
    o = ex.mouth_open
    sm = ex.smile
    corner_dx = mw * (1.0 + 0.12 * sm - 0.1 * o)
    corner_dy = -0.06 * sm + 0.06 * o
    f_up = np.array([-0.62, -0.25, 0.0, 0.25, 0.62])  # fractions of the half-width, left -> right
    f_lo = np.array([0.65, 0.29, 0.0, -0.29, -0.65])  # right -> left
    drop = 0.26 * o  # lower-lip travel at the centre

    def bulge(f: np.ndarray) -> np.ndarray:
        return 1.0 - f**2

    up_x = f_up * mw * (1.0 + 0.08 * sm)
    up_y = my - lt * (0.095 * bulge(f_up) + 0.025 * np.abs(f_up) * bulge(f_up))
    up_y[2] += 0.025 * lt  # cupid's bow dip at 79
    up_y += corner_dy * (1 - bulge(f_up)) - 0.03 * o * bulge(f_up)
    lo_x = f_lo * mw * (1.0 + 0.05 * sm)
    lo_y = my + drop * bulge(f_lo) + lt * (0.04 + 0.18 * bulge(f_lo)) + corner_dy * (1 - bulge(f_lo))
    z_up = 0.05 + 0.17 * bulge(f_up)
    z_lo = 0.05 + 0.15 * bulge(f_lo)
    left = np.array([-corner_dx, my + corner_dy, 0.04])
    right = np.array([corner_dx, my + corner_dy, 0.04])
    outer = np.concatenate(
        [left[None], np.stack([up_x, up_y, z_up], axis=1), right[None], np.stack([lo_x, lo_y, z_lo], axis=1)]
    )
    # inner lips: corners a little inside the outer ones; the lips meet when the mouth is closed
    ic = 0.85 * corner_dx
    fi_up = np.array([-0.45, 0.0, 0.45])
    fi_lo = np.array([0.45, 0.0, -0.45])
    icy = my + corner_dy * 0.85
    iu_y = my - 0.006 - 0.03 * o * bulge(fi_up) + corner_dy * 0.7 * (1 - bulge(fi_up))
    il_y = my + 0.006 + drop * bulge(fi_lo) + corner_dy * 0.7 * (1 - bulge(fi_lo))
    il_y = np.maximum(il_y, iu_y[::-1] + 0.004)
    inner = np.concatenate(
        [
            np.array([[-ic, icy, 0.08]]),
            np.stack([fi_up * ic, iu_y, 0.12 + 0.06 * bulge(fi_up)], axis=1),
            np.array([[ic, icy, 0.08]]),
            np.stack([fi_lo * ic, il_y, 0.12 + 0.06 * bulge(fi_lo)], axis=1),
        ]
    )
    return outer, inner


def landmarks_3d(idn: Identity | None = None, ex: Expression | None = None) -> np.ndarray:
    """The (98, 3) WFLW landmarks of ``idn`` with expression ``ex`` in the face frame."""
    idn = idn or Identity()
    ex = ex or Expression()
    bridge, bottom = _nose(idn)
    eye_l, pupil_l = _eye(idn, ex, -1)
    eye_r, pupil_r = _eye(idn, ex, +1)
    outer, inner = _mouth(idn, ex)
    pts = np.concatenate(
        [
            _contour(idn, ex),
            _brow(idn, ex, -1),
            _brow(idn, ex, +1),
            bridge,
            bottom,
            eye_l,
            eye_r,
            outer,
            inner,
            pupil_l[None],
            pupil_r[None],
        ]
    )
    pts[:, 2] *= idn.depth
    assert pts.shape == (N_LANDMARKS, 3)
    return pts


def head_points_3d(idn: Identity | None = None) -> dict[str, np.ndarray]:
    """Non-landmark geometry in the face frame: ``forehead`` runs from the image-right temple over the top of
    the head to the image-left temple (contour + forehead is the closed skin outline); ``ear_l``/``ear_r``
    outlines; ``neck`` and ``shoulders`` polygons."""
    idn = idn or Identity()
    w = 1.037 * idn.face_width
    y0 = CONTOUR_TOP_Y
    phi = np.linspace(0.0, np.pi, 25)
    forehead = np.stack([w * np.cos(phi), y0 - 1.4 * np.sin(phi) ** 0.8, -0.34 + 0.3 * np.sin(phi)], axis=1)
    ears = []
    for side in (-1, 1):
        a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ears.append(np.stack([side * (w + 0.02 + 0.07 * np.cos(a)), 0.22 * np.sin(a), np.full(16, -0.45)], axis=1))
    neck = np.array([[-0.55 * w, 0.7, -0.35], [-0.6 * w, 2.6, -0.45], [0.6 * w, 2.6, -0.45], [0.55 * w, 0.7, -0.35]])
    a = np.linspace(np.pi, 2 * np.pi, 21)
    shoulders = np.stack([2.2 * np.cos(a), 2.9 + 0.8 * np.sin(a), np.full(21, -0.5)], axis=1)
    shoulders = np.concatenate([shoulders, [[2.2, 5.0, -0.5], [-2.2, 5.0, -0.5]]])
    return {"forehead": forehead, "ear_l": ears[0], "ear_r": ears[1], "neck": neck, "shoulders": shoulders}


def hairline_3d(idn: Identity, height: float, part: float) -> np.ndarray:
    """Hairline from the image-left temple over the forehead to the image-right temple.

    ``height`` in [0, 1]: 0 = low (bangs, still well above the brows), 1 = high forehead; ``part`` in
    [-1, 1] tilts it sideways.
    """
    w = 1.037 * idn.face_width
    x = np.linspace(-1.0, 1.0, 21)
    top = -0.84 - 0.5 * height + idn.brow_height
    y = top + (-0.3 - top) * np.abs(x) ** 4 + 0.06 * part * x
    return np.stack([x * 1.01 * w, y, -0.1 - 0.25 * x**2], axis=1)


def hair_3d(
    idn: Identity, style: int, volume: float, hairline_height: float, part: float
) -> tuple[np.ndarray, np.ndarray]:
    """(front, back) hair polygons in the face frame for ``style`` 0 bald, 1 short, 2 medium, 3 long.

    ``front`` goes up one side of the head, over the top, down the other side and back along the
    hairline; its inner edge passes the temples outside the contour, so no landmark is covered. ``back``
    (long hair only, else empty) falls behind the face to the shoulders.
    """
    if style <= 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    w = 1.037 * idn.face_width
    a = (1.08 + 0.12 * volume) * w
    top = 1.42 + 0.3 * volume
    t = np.linspace(np.pi, 0.0, 25)
    y0 = CONTOUR_TOP_Y
    y_end = -0.05 if style < 3 else 0.3
    arc = np.stack([a * np.cos(t), y0 - top * np.sin(t) ** 0.85, -0.34 + 0.26 * np.sin(t)], axis=1)
    front = np.concatenate(
        [
            [[-a, y_end, -0.34]],
            arc,
            [[a, y_end, -0.34]],
            [[1.065 * w, -0.3, -0.34]],
            hairline_3d(idn, hairline_height, part)[::-1],
            [[-1.065 * w, -0.3, -0.34]],
        ]
    )
    if style < 3:
        return front, np.zeros((0, 3))
    back = np.concatenate([[[-a * 1.05, 1.9, -0.6]], arc * [1.05, 1.0, 1.0], [[a * 1.05, 1.9, -0.6]]])
    return front, back


def mean_shape_2d() -> np.ndarray:
    """Frontal (98, 2) x, y of the neutral mean face in face units."""
    return landmarks_3d()[:, :2]
