"""Landmark metrics (spec §4): still-image NME / FR / AUC and video NME / NMF.

Conventions: landmark arrays are (..., L, 2) in (x, y) order. Still-image metrics (``nme``, ``fr_auc``) return
fractions; video metrics (``video_nme``, ``video_nmf``) return percent, as upstream reports them.

Normalisers:
- ``"inter_ocular"``: distance between the outer eye corners of the ground truth (60/72 for WFLW-98,
  36/45 for 300W-68; pass ``eye_indices`` for any other layout). This is the upstream code's convention.
- ``"face"``: sqrt(w * h) of the ground-truth landmark bounding box; apparently the paper's WFLW-V NME (§4.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EYE_CORNERS: dict[int, tuple[int, int]] = {98: (60, 72), 68: (36, 45)}
NORMS = ("inter_ocular", "face")
NMF_FACE_UNIT = 256.0  # s_t is the face box's geometric mean in units of 256 px (spec §4.3)


def _validate_pair(pred: np.ndarray, gt: np.ndarray, ndim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert to float64 and check shape (ndim with last dim 2), equal shapes, non-empty, finite."""
    out = []
    for name, arr in (("pred", pred), ("gt", gt)):
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != ndim or a.shape[-1] != 2:
            raise ValueError(f"{name}: expected shape {what}, got {a.shape}")
        if a.size == 0:
            raise ValueError(f"{name}: empty input, shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: contains NaN or inf")
        out.append(a)
    if out[0].shape != out[1].shape:
        raise ValueError(f"pred/gt: shape mismatch, pred {out[0].shape} vs gt {out[1].shape}")
    return out[0], out[1]


def _face_size(gt: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of the landmark bounding box of each (L, 2) set in ``gt`` (..., L, 2) -> (...)."""
    extent = gt.max(axis=-2) - gt.min(axis=-2)
    return np.sqrt(extent[..., 0] * extent[..., 1])


def _normaliser(gt: np.ndarray, norm: str, eye_indices: tuple[int, int] | None) -> np.ndarray:
    """Per-face normaliser of ``gt`` (..., L, 2) -> (...); raises on an unknown norm or a zero normaliser."""
    if norm == "inter_ocular":
        n_lmk = gt.shape[-2]
        if eye_indices is None:
            if n_lmk not in EYE_CORNERS:
                raise ValueError(
                    f"gt: no default eye corners for {n_lmk} landmarks (known: {sorted(EYE_CORNERS)}); "
                    "pass eye_indices=(i, j)"
                )
            eye_indices = EYE_CORNERS[n_lmk]
        i, j = eye_indices
        if not (-n_lmk <= i < n_lmk and -n_lmk <= j < n_lmk):
            raise ValueError(f"eye_indices: {eye_indices} out of range for {n_lmk} landmarks")
        d = np.linalg.norm(gt[..., i, :] - gt[..., j, :], axis=-1)
    elif norm == "face":
        d = _face_size(gt)
    else:
        raise ValueError(f"norm: unknown normaliser {norm!r}, expected one of {NORMS}")
    if np.any(d <= 0):
        bad = np.flatnonzero(np.ravel(d) <= 0)[:5].tolist()
        raise ValueError(f"gt: degenerate {norm} normaliser (zero size) at flat index {bad}")
    return d


def nme(
    pred: np.ndarray, gt: np.ndarray, norm: str = "inter_ocular", eye_indices: tuple[int, int] | None = None
) -> np.ndarray:
    """Per-image NME (fraction) of (N, L, 2) arrays: mean_l ||p_l - g_l|| / normaliser(g)  -> (N,)."""
    p, g = _validate_pair(pred, gt, 3, "(N, L, 2)")
    return np.linalg.norm(p - g, axis=-1).mean(axis=-1) / _normaliser(g, norm, eye_indices)


def _validate_nmes(nmes: np.ndarray, threshold: float, step: float) -> np.ndarray:
    e = np.asarray(nmes, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"nmes: expected a non-empty 1-D array, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("nmes: values must be finite and non-negative")
    if not (threshold > 0 and 0 < step < threshold):
        raise ValueError(f"threshold/step: need 0 < step < threshold, got threshold={threshold}, step={step}")
    return e


def ced_curve(nmes: np.ndarray, threshold: float = 0.1, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: xs = arange(0, threshold + step, step), ys = fraction of NME <= x."""
    e = np.sort(_validate_nmes(nmes, threshold, step))
    xs = np.arange(0.0, threshold + step, step)
    ys = np.searchsorted(e, xs, side="right") / e.size
    return xs, ys


def fr_auc(nmes: np.ndarray, threshold: float = 0.1, step: float = 1e-4) -> tuple[float, float]:
    """(failure rate, AUC) at ``threshold`` (spec §4.1), both fractions.

    FR = fraction of NME > threshold; AUC = simpson(CED ys, xs) / threshold on the upstream grid.
    """
    xs, ys = ced_curve(nmes, threshold, step)
    e = np.asarray(nmes, dtype=np.float64)
    from scipy.integrate import simpson  # lazy: scipy.integrate costs ~0.3 s at import

    return float(np.mean(e > threshold)), float(simpson(ys, x=xs) / threshold)


def video_nme(
    pred: np.ndarray, gt: np.ndarray, norm: str = "inter_ocular", eye_indices: tuple[int, int] | None = None
) -> float:
    """Video NME in percent (spec §4.2): mean over frames and landmarks of 100 ||g - p|| / normaliser(g_t).

    ``pred`` and ``gt`` are (T, L, 2) in frame pixels; the normaliser is per frame (inter-ocular or face).
    """
    p, g = _validate_pair(pred, gt, 3, "(T, L, 2)")
    per_frame = np.linalg.norm(g - p, axis=-1).mean(axis=-1) / _normaliser(g, norm, eye_indices)
    return float(100.0 * per_frame.mean())


def video_nmf(pred: np.ndarray, gt: np.ndarray, per_coordinate: bool = False) -> float:
    """Video NMF (paper) = NMJ (upstream code), spec §4.3, for (T, L, 2) arrays in frame pixels, T >= 2.

    delta_t = g_t - p_t; s_t = sqrt(w_t * h_t / 256^2) of the current frame's GT landmark box;
    J_{t,l} = 100 ||delta_{t,l} - delta_{t-1,l}|| / s_t for t = 1..T-1; NMF = sqrt(mean_t mean_l J^2).
    ``per_coordinate=True`` returns NMF / sqrt(2), the RMS per coordinate (the "NMF/√2" variant, §4.4).
    """
    p, g = _validate_pair(pred, gt, 3, "(T, L, 2)")
    if g.shape[0] < 2:
        raise ValueError(f"gt: NMF needs at least 2 frames, got T={g.shape[0]}")
    delta = g - p
    scale = _normaliser(g[1:], "face", None) / NMF_FACE_UNIT  # (T-1,), current frame
    jitter = 100.0 * np.linalg.norm(delta[1:] - delta[:-1], axis=-1) / scale[:, None]  # (T-1, L)
    value = float(np.sqrt(np.mean(jitter**2)))
    return value / np.sqrt(2.0) if per_coordinate else value


def aggregate_videos(
    values: Sequence[float] | np.ndarray,
    frame_counts: Sequence[int] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
) -> dict[str, float | int]:
    """Average per-video metric values over videos.

    Returns ``mean`` (unweighted over videos, the upstream convention), ``weighted_mean`` (weighted by
    ``weights``, default ``frame_counts``), ``num_videos`` and ``num_frames``. For NMF, which is defined on
    frame pairs, pass ``weights=frame_counts - 1`` to weight by the number of pairs; the weighted mean is an
    arithmetic mean of per-video values in both cases (not a pooled RMS).
    """
    v = np.asarray(values, dtype=np.float64)
    n = np.asarray(frame_counts, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D array, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values: contains NaN or inf")
    if n.shape != v.shape or np.any(n < 1) or np.any(n != np.round(n)):
        raise ValueError(f"frame_counts: expected {v.size} positive integers, got {n.tolist()[:5]}...")
    w = n if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != v.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights: expected non-negative finite values of the same length as values, sum > 0")
    return {
        "mean": float(v.mean()),
        "weighted_mean": float(np.sum(w * v) / np.sum(w)),
        "num_videos": int(v.size),
        "num_frames": int(n.sum()),
    }
