"""iBUG 300-W stills: ``<name>.jpg`` (or .png) next to ``<name>.pts``.

A .pts file reads ``version: 1``, ``n_points: 68``, ``{``, one ``x y`` line per point, ``}``; the points
are 0-based pixel coordinates of the image (pixel centres on integers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldeq_core.fileio import write_text_atomic
from ldeq_shared.errors import BadItem, DataError

N_POINTS = 68
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
PathLike = str | os.PathLike[str]


def read_pts(path: PathLike, n_points: int | None = N_POINTS) -> np.ndarray:
    """Points of a .pts file as an (N, 2) float64 array; ``n_points=None`` accepts any declared count."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(p, f"cannot read .pts file ({err.__class__.__name__})") from None
    if len(lines) < 3 or not lines[0].startswith("version:") or not lines[1].startswith("n_points:"):
        raise DataError(p, "not a .pts file (expected 'version:' and 'n_points:' header lines)")
    try:
        declared = int(lines[1].split(":", 1)[1])
    except ValueError:
        raise DataError(p, f"bad n_points line {lines[1]!r}") from None
    if lines[2] != "{" or lines[-1] != "}":
        raise DataError(p, "point block must be enclosed in '{' and '}' lines")
    body = lines[3:-1]
    if len(body) != declared:
        raise DataError(p, f"header declares {declared} points but the block has {len(body)}")
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in body], dtype=np.float64)
    except ValueError:
        raise DataError(p, "non-numeric coordinate") from None
    if pts.shape != (declared, 2):
        raise DataError(p, "every point line must hold exactly two numbers 'x y'")
    if not np.all(np.isfinite(pts)):
        raise DataError(p, "NaN or inf landmark coordinate")
    if n_points is not None and declared != n_points:
        raise DataError(p, f"wrong landmark count: {declared}, expected {n_points}")
    return pts


def write_pts(path: PathLike, points: np.ndarray) -> None:
    """Write (N, 2) finite points as a version-1 .pts file (3 decimals), atomically."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"{path}: points must be a finite (N, 2) array, got shape {pts.shape}")
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    write_text_atomic(path, f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


@dataclass(frozen=True)
class W300Item:
    """One annotated still: ``name`` is ``<subset>/<stem>``; landmarks are (68, 2) image pixels."""

    name: str
    image_path: Path
    pts_path: Path
    landmarks: np.ndarray

    def load_rgb(self) -> np.ndarray:
        """The image as RGB uint8; ``DataError`` if unreadable."""
        img = cv2.imread(os.fspath(self.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(self.image_path, "image missing or unreadable")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _subset_dirs(root: Path, subsets: Sequence[str] | None) -> list[Path]:
    if not root.is_dir():
        raise DataError(root, "300-W root is not a directory")
    if subsets is not None:
        dirs = [root / s for s in subsets]
        for d in dirs:
            if not d.is_dir():
                raise DataError(d, "300-W subset folder does not exist")
        return dirs
    if any(root.glob("*.pts")):
        return [root]
    return sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.pts")))


def _make_item(d: Path, root: Path, pts_path: Path, check_image: bool) -> W300Item:
    pts = read_pts(pts_path)
    image = next((pts_path.with_suffix(e) for e in IMAGE_EXTS if pts_path.with_suffix(e).is_file()), None)
    if image is None:
        raise DataError(pts_path, f"no image ({'/'.join(IMAGE_EXTS)}) next to the .pts file")
    name = pts_path.stem if d == root else f"{d.name}/{pts_path.stem}"
    item = W300Item(name, image, pts_path, pts)
    if check_image:
        h, w = item.load_rgb().shape[:2]
        outside = np.any((pts < -0.5) | (pts > np.array([w, h]) - 0.5), axis=1)
        if np.all(outside):
            raise DataError(pts_path, f"all landmarks lie outside the {w}x{h} image")
    return item


def _scan(
    root: PathLike, subsets: Sequence[str] | None, check_images: bool, stop: bool
) -> tuple[list[W300Item], list[BadItem]]:
    root = Path(root)
    good: list[W300Item] = []
    bad: list[BadItem] = []
    for d in _subset_dirs(root, subsets):
        for pts_path in sorted(d.glob("*.pts")):
            try:
                good.append(_make_item(d, root, pts_path, check_images))
            except DataError as err:
                if stop:
                    raise
                bad.append(BadItem.from_error(f"{d.name}/{pts_path.stem}", err))
    return good, bad


def list_300w(root: PathLike, subsets: Sequence[str] | None = None, *, check_images: bool = False) -> list[W300Item]:
    """Annotated stills under ``root``; the first bad item raises ``DataError``.

    ``subsets`` names sub-folders (e.g. ``["helen_train", "afw"]``); by default ``root`` itself if it
    holds .pts files, else every sub-folder that does. ``check_images`` decodes each image.
    """
    return _scan(root, subsets, check_images, stop=True)[0]


def scan_300w(
    root: PathLike, subsets: Sequence[str] | None = None, *, check_images: bool = True
) -> tuple[list[W300Item], list[BadItem]]:
    """Like ``list_300w`` but returns (good items, bad items with reasons) instead of stopping."""
    return _scan(root, subsets, check_images, stop=False)
