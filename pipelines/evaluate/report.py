"""Aggregation of the evaluation: per-video scores, per-split averages, the NME-NMF front and RwR's gains.

Conventions (spec §4, labelled everywhere they are reported):

- ``nme_io``: video NME in percent of the ground-truth outer-eye-corner distance, per frame (upstream code);
- ``nme_face``: video NME in percent of sqrt(w h) of the ground-truth landmark box (apparently the paper's);
- ``nmf``: the upstream NMJ, called NMF in the paper: RMS over frame pairs and landmarks of the change of the
  landmark error, x100, with the face box rescaled to 256 px (spec §4.3);
- ``nmf_sqrt2``: ``nmf`` / sqrt(2), the per-coordinate RMS (spec §4.4);
- ``nfe``: cell evaluations per frame (a filtered method costs what its base tracker costs).

Per-split averages come in two forms: the per-video mean (upstream's convention) and the frame-weighted mean
(suffix ``_fw``; NME weighted by frames, NMF by frame pairs, spec §10.12). Still images: NME (percent,
inter-ocular, GT clipped to the crop as upstream does), FR@0.1 (percent) and AUC@0.1 (fraction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ldeq_core.metrics import NMF_FACE_UNIT, aggregate_videos, fr_auc, nme, video_nme, video_nmf

VIDEO_METRICS: dict[str, str] = {
    "nme_io": "video NME, % of the inter-ocular (outer eye corners) distance (upstream code)",
    "nme_face": "video NME, % of sqrt(w*h) of the GT landmark box (paper convention, spec 4.4)",
    "nmf": "NMF = upstream NMJ: RMS change of the landmark error, face box rescaled to 256 px, x100 (spec 4.3)",
    "nmf_sqrt2": "NMF / sqrt(2): per-coordinate RMS variant (spec 4.4)",
}
NMF_KEYS = ("nmf", "nmf_sqrt2")
OVERALL = "overall"
FRONT_X, FRONT_Y = "nme_io", "nmf"


def video_scores(
    pred: np.ndarray, gt: np.ndarray, nfe: np.ndarray | None = None, eye_indices: tuple[int, int] | None = None
) -> dict[str, float]:
    """Every video metric of one (T, L, 2) track against its ground truth (frame pixels)."""
    return {
        "nme_io": video_nme(pred, gt, "inter_ocular", eye_indices),
        "nme_face": video_nme(pred, gt, "face"),
        "nmf": video_nmf(pred, gt),
        "nmf_sqrt2": video_nmf(pred, gt, per_coordinate=True),
        "nfe": float(np.mean(nfe)) if nfe is not None and len(nfe) else math.nan,
    }


def frame_jitter(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame jitter J_t, t = 1..T-1: RMS over landmarks of 100 ||d_t - d_{t-1}|| / s_t with d = g - p.

    s_t = sqrt(w_t h_t) / 256 of the current frame's GT landmark box, so that NMF = sqrt(mean_t J_t^2).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"pred/gt: need equal (T>=2, L, 2) shapes, got {p.shape} and {g.shape}")
    d = g - p
    ext = g[1:].max(axis=1) - g[1:].min(axis=1)
    s = np.sqrt(ext[:, 0] * ext[:, 1]) / NMF_FACE_UNIT
    j = 100.0 * np.linalg.norm(d[1:] - d[:-1], axis=-1) / s[:, None]
    return np.sqrt(np.mean(j**2, axis=1))


def aggregate(per_video: pd.DataFrame, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-split and overall averages of a per-video table.

    ``per_video`` has one row per (video, method) with columns ``key``, ``split``, ``method``, ``n_frames``,
    the :data:`VIDEO_METRICS` and ``nfe``. Returns ``{split: {"videos", "frames", "methods": {method:
    {metric: per-video mean, metric_fw: frame-weighted mean, "nfe": NFE per frame}}}}`` with ``overall`` last.
    """
    if per_video.empty:
        raise ValueError("per_video: no rows to aggregate")
    out: dict[str, dict[str, Any]] = {}
    splits = [*sorted(per_video["split"].unique()), OVERALL]
    for split in splits:
        rows = per_video if split == OVERALL else per_video[per_video["split"] == split]
        entry: dict[str, Any] = {"methods": {}}
        for method in methods:
            r = rows[rows["method"] == method]
            if r.empty:
                continue
            frames = r["n_frames"].to_numpy()
            res: dict[str, float] = {}
            for metric in VIDEO_METRICS:
                weights = frames - 1 if metric in NMF_KEYS else frames
                agg = aggregate_videos(r[metric].to_numpy(), frames, weights=weights)
                res[metric] = agg["mean"]
                res[f"{metric}_fw"] = agg["weighted_mean"]
            nfe = r["nfe"].to_numpy(dtype=np.float64)
            res["nfe"] = float(np.sum(nfe * frames) / np.sum(frames)) if np.all(np.isfinite(nfe)) else math.nan
            entry["methods"][method] = res
            entry["videos"], entry["frames"] = len(r), int(frames.sum())
        out[split] = entry
    return out


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the non-dominated points when both coordinates are minimised, in input order.

    A point is dominated when another is no worse in both coordinates and strictly better in one; equal points
    are all kept.
    """
    items = list(points.items())
    front = []
    for name, (x, y) in items:
        dominated = any((ox <= x and oy <= y) and (ox < x or oy < y) for other, (ox, oy) in items if other != name)
        if not dominated:
            front.append(name)
    return front


def pct_change(new: float, base: float) -> float:
    """100 (new - base) / base: negative when ``new`` is lower; NaN when ``base`` is 0 or not finite."""
    if not (math.isfinite(base) and math.isfinite(new)) or base == 0:
        return math.nan
    return 100.0 * (new - base) / base


def compare(
    methods: Mapping[str, Mapping[str, float]],
    method: str,
    baseline: str,
    metrics: Sequence[str] = ("nme_io", "nme_face", "nmf"),
) -> dict[str, float]:
    """``{metric}_pct`` changes of ``method`` against ``baseline`` (per-video means and ``_fw`` means)."""
    out: dict[str, float] = {}
    for metric in metrics:
        for suffix in ("", "_fw"):
            out[f"{metric}{suffix}_pct"] = pct_change(
                methods[method][metric + suffix], methods[baseline][metric + suffix]
            )
    return out


def still_nmes(
    pred_px: np.ndarray, gt_px: np.ndarray, crop_size: float = 256.0, eye_indices: tuple[int, int] | None = None
) -> np.ndarray:
    """Per-image inter-ocular NME (fraction) in crop units; the GT is clipped to the crop (spec §5.2)."""
    gt = np.clip(np.asarray(gt_px, dtype=np.float64) / crop_size, 0.0, 1.0)
    return nme(np.asarray(pred_px, dtype=np.float64) / crop_size, gt, "inter_ocular", eye_indices)


def still_summary(nmes: np.ndarray, threshold: float = 0.1) -> dict[str, float]:
    """NME (percent), FR@threshold (percent), AUC@threshold (fraction) and the image count."""
    e = np.asarray(nmes, dtype=np.float64)
    fr, auc = fr_auc(e, threshold)
    return {"nme_pct": float(100.0 * e.mean()), "fr_pct": 100.0 * fr, "auc": auc, "images": int(e.size)}


def flat_metrics(
    video: Mapping[str, Mapping[str, Any]] | None,
    stills: Mapping[str, Mapping[str, float]] | None,
    comparisons: Mapping[str, Mapping[str, float]],
    pareto: Sequence[str],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The flat ``metrics/eval.json`` mapping (see :mod:`pipelines.evaluate.stage` for the layout)."""
    out: dict[str, Any] = {}
    if video:
        for split, entry in video.items():
            out[f"video.{split}.videos"] = entry["videos"]
            out[f"video.{split}.frames"] = entry["frames"]
            for method, res in entry["methods"].items():
                for metric, value in res.items():
                    out[f"video.{split}.{method}.{metric}"] = value
        for method in video[OVERALL]["methods"]:
            out[f"video.pareto.{method}"] = int(method in pareto)
    for split, res in (stills or {}).items():
        for metric, value in res.items():
            out[f"still.{split}.{metric}"] = value
    for name, res in comparisons.items():
        for metric, value in res.items():
            out[f"compare.{name}.{metric}"] = value
    out.update(extra)
    return {k: _clean(v) for k, v in out.items()}


def _clean(v: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, NaN/inf to None, floats rounded to 6 significant digits."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else None
    return v


def markdown_table(video: Mapping[str, Mapping[str, Any]], methods: Sequence[str], pareto: Sequence[str]) -> str:
    """A readable table per split: methods x (NME io, NME face, NMF, NMF/sqrt2, NFE), per-video means."""
    lines = []
    for split, entry in video.items():
        lines += [
            f"### {split} ({entry['videos']} videos, {entry['frames']} frames; per-video means)",
            "",
            "| method | NME io % | NME face % | NMF (NMJ) | NMF/√2 | NFE/frame | Pareto |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in methods:
            r = entry["methods"].get(m)
            if r is None:
                continue
            star = "yes" if split == OVERALL and m in pareto else ""
            lines.append(
                f"| {m} | {r['nme_io']:.3f} | {r['nme_face']:.3f} | {r['nmf']:.2f} | {r['nmf_sqrt2']:.2f} "
                f"| {r['nfe']:.2f} | {star} |"
            )
        lines.append("")
    return "\n".join(lines)
