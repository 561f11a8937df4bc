"""WFLW, precropped HIH layout (spec §5.1).

``<root>/<split>.txt`` holds one line per image: ``relpath x0 y0 ... x97 y97`` (whitespace-separated,
so relpaths contain no whitespace) with coordinates
normalised to [0, 1] of the 256x256 crop; images live at ``<root>/<split>/<relpath>``. In memory,
landmarks are 256-px pixels: ``px = normalised * 256``. Normalised values slightly outside [0, 1] are
kept (the test-time pad_crop of spec §5.2 deals with them).

The writer picks the image codec from ``relpath``'s extension: ``.png`` is lossless, ``.jpg``/``.jpeg``
is JPEG at quality 95. Coordinates are written with ``repr`` so they read back bit-exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ldeq_core.defaults import JPEG_QUALITY
from ldeq_core.fileio import write_bytes_atomic, write_text_atomic
from ldeq_shared.errors import BadItem, DataError

N_POINTS = 98
CROP_SIZE = 256
WFLW_SPLITS = (
    "test",
    "test_largepose",
    "test_expression",
    "test_illumination",
    "test_makeup",
    "test_occlusion",
    "test_blur",
    "train",
)
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class WflwItem:
    """One WFLW crop: relative path, absolute image path and (98, 2) landmarks in 256-px pixels."""

    relpath: str
    image_path: Path
    landmarks: np.ndarray

    @property
    def name(self) -> str:
        return self.relpath

    def load_rgb(self) -> np.ndarray:
        """The 256x256 RGB uint8 image; ``DataError`` if unreadable or of the wrong size."""
        return load_wflw_image(self.image_path)


def load_wflw_image(path: PathLike) -> np.ndarray:
    """Read a WFLW crop as RGB uint8, checking it is 256x256 with 3 channels."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(path, "image missing or unreadable")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != (CROP_SIZE, CROP_SIZE):
        raise DataError(path, f"image must be {CROP_SIZE}x{CROP_SIZE} RGB, got shape {img.shape}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _parse_line(txt: Path, lineno: int, line: str) -> tuple[str, np.ndarray]:
    parts = line.split()
    relpath = parts[0] if parts else ""
    where = f"line {lineno} ({relpath!r})"
    if len(parts) != 2 * N_POINTS + 1:
        raise DataError(
            txt, f"{where}: expected {2 * N_POINTS} coordinates ({N_POINTS} landmarks), got {len(parts) - 1}"
        )
    try:
        values = np.array([float(v) for v in parts[1:]], dtype=np.float64)
    except ValueError:
        raise DataError(txt, f"{where}: non-numeric coordinate") from None
    if not np.all(np.isfinite(values)):
        raise DataError(txt, f"{where}: NaN or inf landmark coordinate")
    return relpath, values.reshape(N_POINTS, 2) * CROP_SIZE


def _read_lines(root: Path, split: str) -> tuple[Path, list[tuple[int, str]]]:
    txt = root / f"{split}.txt"
    if not txt.is_file():
        raise DataError(txt, f"WFLW split file for {split!r} does not exist")
    lines = txt.read_text(encoding="utf-8").splitlines()
    return txt, [(i + 1, ln.strip()) for i, ln in enumerate(lines) if ln.strip()]


def _make_item(root: Path, split: str, txt: Path, lineno: int, line: str, check_images: bool) -> WflwItem:
    relpath, pts = _parse_line(txt, lineno, line)
    item = WflwItem(relpath, root / split / relpath, pts)
    if check_images:
        item.load_rgb()
    elif not item.image_path.is_file():
        raise DataError(item.image_path, "image file does not exist")
    return item


def read_wflw(root: PathLike, split: str, *, check_images: bool = True) -> list[WflwItem]:
    """All items of ``<root>/<split>.txt``; the first bad line or image raises ``DataError``.

    With ``check_images`` every image is decoded to check its size; otherwise only its existence.
    """
    root = Path(root)
    txt, lines = _read_lines(root, split)
    return [_make_item(root, split, txt, n, ln, check_images) for n, ln in lines]


def scan_wflw(root: PathLike, split: str, *, check_images: bool = True) -> tuple[list[WflwItem], list[BadItem]]:
    """Like ``read_wflw`` but returns (good items, bad items with reasons) instead of stopping."""
    root = Path(root)
    txt, lines = _read_lines(root, split)
    good: list[WflwItem] = []
    bad: list[BadItem] = []
    for n, ln in lines:
        try:
            good.append(_make_item(root, split, txt, n, ln, check_images))
        except DataError as err:
            bad.append(BadItem.from_error(f"{split}:{n}", err))
    return good, bad


def _looks_like_split(txt: Path) -> bool:
    with open(txt, encoding="utf-8", errors="replace") as f:
        first = next((ln for ln in f if ln.strip()), "")
    try:
        _parse_line(txt, 1, first.strip())
    except DataError:
        return False
    return True


def list_wflw_splits(root: PathLike) -> list[str]:
    """Split names with a ``<split>.txt`` in ``root``: known WFLW splits in canonical order, then others.

    Unknown ``*.txt`` files count only if their first line is a WFLW annotation line.
    """
    root = Path(root)
    known = [s for s in WFLW_SPLITS if (root / f"{s}.txt").is_file()]
    others = sorted(p.stem for p in root.glob("*.txt") if p.stem not in WFLW_SPLITS and _looks_like_split(p))
    return known + others


def _encode(relpath: str, img_rgb: np.ndarray) -> bytes:
    ext = Path(relpath).suffix.lower()
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    elif ext != ".png":
        raise ValueError(f"{relpath}: image extension must be .png, .jpg or .jpeg")
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"{relpath}: cv2.imencode failed")
    return buf.tobytes()


def write_wflw(root: PathLike, split: str, items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> int:
    """Write ``(relpath, img_rgb (256, 256, 3) uint8, landmarks_px (98, 2))`` items as split ``split``.

    Images go to ``<root>/<split>/<relpath>`` and the annotation file ``<root>/<split>.txt`` is replaced
    atomically at the end (each image is written atomically too). Returns the number of items.
    """
    root = Path(root)
    lines: list[str] = []
    for relpath, img, pts in items:
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts or not relpath or any(c.isspace() for c in relpath):
            raise ValueError(f"{relpath!r}: relpath must be relative, inside the split, without whitespace")
        img = np.asarray(img)
        if img.shape != (CROP_SIZE, CROP_SIZE, 3) or img.dtype != np.uint8:
            raise ValueError(f"{relpath}: image must be (256, 256, 3) uint8, got {img.shape} {img.dtype}")
        p = np.asarray(pts, dtype=np.float64)
        if p.shape != (N_POINTS, 2) or not np.all(np.isfinite(p)):
            raise ValueError(f"{relpath}: landmarks must be finite ({N_POINTS}, 2), got shape {p.shape}")
        write_bytes_atomic(root / split / rel, _encode(relpath, img))
        coords = " ".join(repr(float(v)) for v in (p / CROP_SIZE).reshape(-1))
        lines.append(f"{rel.as_posix()} {coords}")
    write_text_atomic(root / f"{split}.txt", "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)
