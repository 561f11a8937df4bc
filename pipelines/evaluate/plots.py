"""Evaluation figures (matplotlib, Agg) with their DVC plot data, and landmark-overlay videos.

- ``eval_front``: NME (inter-ocular %) vs NMF per method, the Pareto front drawn as a line (CSV: ``method``,
  ``nme_io``, ``nmf``, ``nfe``, ``pareto``);
- ``eval_flicker``: per-frame jitter J_t over time on one video, per-frame inference vs RwR (CSV: ``frame``,
  ``per_frame``, ``rwr``; ``NMF = sqrt(mean_t J_t^2)``);
- ``eval_ced``: cumulative error distribution of the still images, one line per split (CSV: ``nme`` threshold
  and ``fraction`` of the first split, the overall test set);
- overlays: ground truth (green) and prediction (red) drawn on the frames, per-frame inference left and RwR
  right, written as mp4v.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from ldeq_core.fileio import write_bytes_atomic, write_text_atomic
from ldeq_shared.video_io import write_video

PathLike = str | os.PathLike[str]
GT_COLOR = (0, 200, 0)  # RGB
PRED_COLOR = (230, 40, 40)


def _figure() -> tuple[object, object]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6.4, 4.4), dpi=110)


def _save(fig: object, path: PathLike) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buf, format="png")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    write_bytes_atomic(path, buf.getvalue())


def write_csv(path: PathLike, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A CSV file with ``header``, written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def plot_front(
    png: PathLike,
    csv_path: PathLike,
    points: Mapping[str, Mapping[str, float]],
    pareto: Sequence[str],
    highlight: str | None = None,
    title: str = "",
) -> None:
    """Scatter of NME (``nme_io``) vs NMF (``nmf``) per method with the Pareto front; writes PNG and CSV."""
    names = list(points)
    write_csv(
        csv_path,
        ["method", "nme_io", "nmf", "nfe", "pareto"],
        [
            [
                n,
                f"{points[n]['nme_io']:.6g}",
                f"{points[n]['nmf']:.6g}",
                f"{points[n].get('nfe', float('nan')):.4g}",
                int(n in pareto),
            ]
            for n in names
        ],
    )
    fig, ax = _figure()
    for n in names:
        x, y = points[n]["nme_io"], points[n]["nmf"]
        marker = "*" if n == highlight else ("o" if n in pareto else "x")
        ax.scatter(
            [x],
            [y],
            marker=marker,
            s=120 if n == highlight else 40,  # type: ignore[attr-defined]
            color="tab:red" if n.startswith("rwr") else ("tab:blue" if "+" in n else "black"),
        )
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)  # type: ignore[attr-defined]
    front = sorted((points[n]["nme_io"], points[n]["nmf"]) for n in pareto)
    if len(front) > 1:
        ax.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            "--",
            color="gray",
            lw=1,  # type: ignore[attr-defined]
            label="Pareto front",
        )
        ax.legend(loc="upper right", fontsize=8)  # type: ignore[attr-defined]
    ax.set_xlabel("NME (% inter-ocular), lower is better")  # type: ignore[attr-defined]
    ax.set_ylabel("NMF (upstream NMJ convention), lower is better")  # type: ignore[attr-defined]
    ax.set_title(
        title or "Accuracy vs flicker per method (test videos, per-video means)",  # type: ignore[attr-defined]
        fontsize=9,
    )
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    _save(fig, png)


def plot_flicker(
    png: PathLike, csv_path: PathLike, video: str, per_frame: np.ndarray, rwr: np.ndarray, rwr_label: str
) -> None:
    """Per-frame jitter J_t (t = 1..T-1) of per-frame inference and RwR on one video; writes PNG and CSV."""
    a, b = np.asarray(per_frame, np.float64), np.asarray(rwr, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"jitter curves must be equal-length 1-D arrays, got {a.shape} and {b.shape}")
    frames = np.arange(1, len(a) + 1)
    write_csv(
        csv_path,
        ["frame", "per_frame", "rwr"],
        [[int(t), f"{x:.6g}", f"{y:.6g}"] for t, x, y in zip(frames, a, b, strict=True)],
    )
    fig, ax = _figure()
    ax.plot(frames, a, label=f"per-frame (NMF {np.sqrt(np.mean(a**2)):.1f})", color="black")  # type: ignore[attr-defined]
    ax.plot(frames, b, label=f"{rwr_label} (NMF {np.sqrt(np.mean(b**2)):.1f})", color="tab:red")  # type: ignore[attr-defined]
    ax.set_xlabel("frame t")  # type: ignore[attr-defined]
    ax.set_ylabel("jitter J_t (RMS over landmarks)")  # type: ignore[attr-defined]
    ax.set_title(f"Flicker over time: {video}", fontsize=9)  # type: ignore[attr-defined]
    ax.legend(fontsize=8)  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    _save(fig, png)


def plot_ced(png: PathLike, csv_path: PathLike, curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """CED curves (xs = NME thresholds as fractions, ys = fraction of images) per split; CSV of the first."""
    if not curves:
        raise ValueError("plot_ced: no curve")
    first = next(iter(curves))
    xs0, ys0 = curves[first]
    step = max(1, len(xs0) // 200)  # ~200 rows are plenty for a plot
    idx = sorted({*range(0, len(xs0), step), len(xs0) - 1})
    write_csv(csv_path, ["nme", "fraction"], [[f"{xs0[i]:.6g}", f"{ys0[i]:.6g}"] for i in idx])
    fig, ax = _figure()
    for name, (xs, ys) in curves.items():
        ax.plot(100 * np.asarray(xs), ys, label=name)  # type: ignore[attr-defined]
    ax.set_xlabel("NME threshold (% inter-ocular)")  # type: ignore[attr-defined]
    ax.set_ylabel("fraction of images")  # type: ignore[attr-defined]
    ax.set_title("Cumulative error distribution (still images)", fontsize=9)  # type: ignore[attr-defined]
    ax.set_ylim(0, 1)  # type: ignore[attr-defined]
    ax.legend(fontsize=8)  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
    _save(fig, png)


def placeholder(png: PathLike, csv_path: PathLike, header: Sequence[str], message: str) -> None:
    """A PNG saying why there is no figure and a header-only CSV, so that every declared DVC output exists."""
    write_csv(csv_path, header, [])
    fig, ax = _figure()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)  # type: ignore[attr-defined]
    ax.set_axis_off()  # type: ignore[attr-defined]
    _save(fig, png)


def _draw(frame_rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray, label: str, radius: int) -> np.ndarray:
    img = np.ascontiguousarray(frame_rgb)
    for pts, color in ((gt, GT_COLOR), (pred, PRED_COLOR)):
        for x, y in np.asarray(pts):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(img, (round(x), round(y)), radius, color, -1, lineType=cv2.LINE_AA)
    cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_overlay(
    path: PathLike,
    frames_bgr: Sequence[np.ndarray] | np.ndarray,
    gt: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    labels: tuple[str, str],
    fps: float,
    max_height: int = 360,
) -> Path:
    """Side-by-side overlay video: ``left`` and ``right`` predictions (T, L, 2) with the GT on each frame."""
    frames = list(frames_bgr)
    if not (len(frames) == len(gt) == len(left) == len(right)) or not frames:
        raise ValueError(f"{path}: frames ({len(frames)}), gt, left and right tracks must have the same length > 0")
    h, w = frames[0].shape[:2]
    scale = min(1.0, max_height / h)
    size = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
    sxy = np.array([size[0] / w, size[1] / h])
    radius = max(1, round(size[1] / 240))
    out = []
    for t, fr in enumerate(frames):
        small = cv2.cvtColor(cv2.resize(fr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        panels = []
        for pred, label in ((left[t], labels[0]), (right[t], labels[1])):
            g = np.asarray(gt[t], np.float64) * sxy
            p = np.asarray(pred, np.float64) * sxy
            panels.append(_draw(small.copy(), g, p, label, radius))
        out.append(np.concatenate(panels, axis=1))
    write_video(path, np.stack(out), fps if fps > 0 else 30.0)
    return Path(path)
