"""WFLW-V acquisition stage (spec §4.5, §5.4, §6, §10.14).

Two ways to build ``<out>/{videos,landmarks,bboxes}/<id>.{mp4,npy,npy}`` plus ``<out>/manifest.csv``:

* :func:`acquire_from_youtube` installs the benchmark's annotation archive, downloads every listed video with
  the yt-dlp Python API, cuts the exact inclusive frame window ``[start, end]`` at source fps and size with
  OpenCV (``mp4v``), and checks the clip length against the window and the landmarks. Resumable, retried
  with exponential backoff, and a video that stays unavailable is recorded, never fatal.
* :func:`acquire_from_archive` unpacks a pre-packaged WFLW-V archive (``videos/``, ``landmarks/``,
  ``bboxes/``) and validates each clip against its annotations.

The manifest has one row per id (``id, split, start, end, n_frames, status, reason, width, height, fps,
sha256``); ``status`` is ``ok``, ``skipped_existing`` (a valid clip was already there), ``unavailable``
(could not be obtained) or ``invalid`` (obtained but unusable; ``reason`` says why). Rows for ``ok`` may carry
a warning in ``reason``. Consumers should use :func:`usable_ids`. One run per output folder at a time.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from ldeq_core.fileio import atomic_path, file_sha256, write_text_atomic
from ldeq_core.npyio import load_npy
from ldeq_shared.errors import DataError
from ldeq_shared.video_io import verify_video
from ldeq_shared.wflw_v import N_POINTS, check_boxes, check_landmarks, clip_paths, load_wflw_v_clip
from pipelines.wflw_v_lists import FrameRange, WflwVLists, load_shipped_lists

log = logging.getLogger(__name__)

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={id}"
# Best single-file ("progressive") mp4; `!=?none` also accepts formats whose codecs are unknown.
DEFAULT_FORMAT = "best[ext=mp4][vcodec!=?none][acodec!=?none]/best[ext=mp4][vcodec!=?none]"
MANIFEST_NAME = "manifest.csv"
TMP_DIRNAME = ".tmp"
PARTIAL_SUFFIX = ".partial.mp4"
MANIFEST_COLUMNS = (
    "id",
    "split",
    "start",
    "end",
    "n_frames",
    "status",
    "reason",
    "width",
    "height",
    "fps",
    "sha256",
)
Status = Literal["ok", "skipped_existing", "unavailable", "invalid"]
STATUSES: tuple[Status, ...] = ("ok", "skipped_existing", "unavailable", "invalid")
USABLE_STATUSES = frozenset({"ok", "skipped_existing"})

# yt-dlp error texts that will not change on a retry (lower case substrings).
_PERMANENT_ERRORS = (
    "http error 404",
    "http error 410",
    "video unavailable",
    "private video",
    "has been removed",
    "account associated with this video has been terminated",
    "this video is not available",
    "unsupported url",
    "members-only",
    "confirm your age",
    "is not a valid url",
)
_ID_SAFE = re.compile(r"[A-Za-z0-9_-]+")


class AcquisitionInterrupted(Exception):
    """A worker noticed that the run is being stopped (Ctrl-C or another fatal error)."""


# --------------------------------------------------------------------------------------------- manifest
@dataclass
class ManifestRow:
    """One video's outcome; ``None`` fields are written as empty CSV cells."""

    id: str
    split: str
    start: int | None
    end: int | None
    status: Status
    reason: str = ""
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    sha256: str = ""

    def to_record(self) -> dict[str, str]:
        """CSV cells keyed by column name."""

        def cell(v: object) -> str:
            if v is None:
                return ""
            if isinstance(v, float):
                return f"{v:.6g}"
            return str(v)

        return {col: cell(getattr(self, col)) for col in MANIFEST_COLUMNS}

    @classmethod
    def for_window(
        cls, vid: str, split: str, window: FrameRange, status: Status, reason: str = "", info: ClipInfo | None = None
    ) -> ManifestRow:
        """The row of a listed video: its window, an outcome, and the clip's facts when there is a clip."""
        return cls(
            id=vid,
            split=split,
            start=window.start,
            end=window.end,
            status=status,
            reason=reason,
            n_frames=info.n_frames if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            fps=info.fps if info else None,
            sha256=info.sha256 if info else "",
        )

    @classmethod
    def from_record(cls, rec: Mapping[str, str], source: str) -> ManifestRow:
        """Parse one CSV record; ``source`` names the file in error messages."""

        def opt_int(key: str) -> int | None:
            v = (rec.get(key) or "").strip()
            return int(v) if v else None

        status = (rec.get("status") or "").strip()
        if status not in STATUSES:
            raise ValueError(f"{source}: unknown status {status!r} for id {rec.get('id')!r}")
        try:
            fps_s = (rec.get("fps") or "").strip()
            return cls(
                id=rec["id"],
                split=rec.get("split") or "",
                start=opt_int("start"),
                end=opt_int("end"),
                status=status,
                reason=rec.get("reason") or "",
                n_frames=opt_int("n_frames"),
                width=opt_int("width"),
                height=opt_int("height"),
                fps=float(fps_s) if fps_s else None,
                sha256=rec.get("sha256") or "",
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"{source}: malformed manifest row {dict(rec)!r}: {e}") from None


class Manifest:
    """The per-id manifest CSV: loaded, merged row by row, and saved atomically."""

    def __init__(self, path: Path, order: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self._rows: dict[str, ManifestRow] = {}
        self._rank = {vid: i for i, vid in enumerate(order)}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, order: Sequence[str] = ()) -> Manifest:
        """Read ``path`` if it exists (an absent file gives an empty manifest)."""
        m = cls(Path(path), order)
        if m.path.exists():
            with m.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
                    raise ValueError(
                        f"{m.path}: unexpected manifest header {reader.fieldnames}, expected {MANIFEST_COLUMNS}"
                    )
                for rec in reader:
                    row = ManifestRow.from_record(rec, str(m.path))
                    m._rows[row.id] = row
        return m

    def update(self, row: ManifestRow) -> None:
        """Insert or replace the row of ``row.id``."""
        with self._lock:
            self._rows[row.id] = row

    def __getitem__(self, vid: str) -> ManifestRow:
        return self._rows[vid]

    def __contains__(self, vid: object) -> bool:
        return vid in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[ManifestRow]:
        """Rows in list order (ids unknown to the lists last, by id)."""
        with self._lock:
            rows = list(self._rows.values())
        return sorted(rows, key=lambda r: (self._rank.get(r.id, len(self._rank)), r.id))

    def save(self) -> None:
        """Write the CSV atomically (temp file in the same folder, then ``os.replace``)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row.to_record())
        write_text_atomic(self.path, buf.getvalue(), fsync=True)


@dataclass
class AcquisitionSummary:
    """What a run did: the rows it (re)wrote, in list order, and where the manifest is."""

    out_root: Path
    manifest_path: Path
    rows: list[ManifestRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of rows of this run per status."""
        c = Counter(r.status for r in self.rows)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def usable_ids(self) -> list[str]:
        """Ids of this run whose clip is usable (``ok`` or ``skipped_existing``)."""
        return [r.id for r in self.rows if r.status in USABLE_STATUSES]

    def __str__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"WFLW-V acquisition in {self.out_root}: {len(self.rows)} video(s): {counts}"


def usable_ids(out_root: str | Path) -> list[str]:
    """Ids whose manifest status is ``ok`` or ``skipped_existing`` in ``<out_root>/manifest.csv``."""
    path = Path(out_root) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{path}: no WFLW-V manifest (run the acquisition stage first)")
    return [r.id for r in Manifest.load(path).rows if r.status in USABLE_STATUSES]


# ------------------------------------------------------------------------------------------ file helpers
def _copy_atomic(src: Path, dst: Path, *, move: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dst)
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and urllib.parse.urlsplit(source).scheme in {"http", "https", "file"}


def _retryable_http(code: int) -> bool:
    return code >= 500 or code in (408, 425, 429)


def fetch(
    source: str | Path,
    dest_dir: Path,
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> Path:
    """Return a local file for ``source``: a path as is, or an http(s)/file URL downloaded into ``dest_dir``.

    Downloads go through urllib to a temp file that is renamed when complete. Server errors (5xx, 408,
    429) and connection errors are retried ``retries`` times, waiting ``backoff_s * 2**k``; other HTTP
    errors raise ``ValueError`` at once, exhausted retries raise ``ConnectionError``.
    """
    if not _is_url(source):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        return path
    url = str(source)
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    name = name if re.fullmatch(r"[A-Za-z0-9._-]+", name or "") and not name.startswith(".") else "download"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "ldeq-wflw-v-acquire/0.1"})
            with urllib.request.urlopen(req, timeout=timeout_s) as resp, tmp.open("wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if not _retryable_http(e.code):
                raise ValueError(f"{url}: download failed: {last}") from None
        except (urllib.error.URLError, OSError) as e:
            last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        finally:
            tmp.unlink(missing_ok=True)
        log.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, retries + 1, last)
    raise ConnectionError(f"{url}: download failed after {retries + 1} attempt(s): {last}")


def _check_member_name(archive: Path, name: str, root: Path) -> None:
    bad = (
        not name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or bool(PureWindowsPath(name).drive)
        or ".." in PurePosixPath(name.replace("\\", "/")).parts
    )
    if not bad:
        target = (root / name).resolve()
        bad = not target.is_relative_to(root)
    if bad:
        raise ValueError(f"{archive}: member {name!r} would be written outside the target folder; refusing to unpack")


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar (optionally gz/bz2/xz) ``archive`` into ``dest``.

    Every member is checked before anything is written: absolute names, ``..`` components, names resolving
    outside ``dest``, and (tar) links or special files make the whole archive rejected with ``ValueError``.
    """
    archive = Path(archive)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(archive, info.filename, root)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ValueError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to unpack")
            zf.extractall(root)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member_name(archive, m.name, root)
                if not (m.isfile() or m.isdir()):
                    raise ValueError(f"{archive}: member {m.name!r} is a link or special file; refusing to unpack")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                tf.extractall(root, members=members)
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")


def _find_named_dir(root: Path, name: str, source: str) -> Path | None:
    """Shallowest folder called ``name`` under ``root`` (``root`` included); ``ValueError`` if ambiguous."""
    if root.name == name:
        return root
    found = [p for p in root.rglob(name) if p.is_dir() and "__MACOSX" not in p.parts]
    if not found:
        return None
    depth = min(len(p.relative_to(root).parts) for p in found)
    top = sorted(p for p in found if len(p.relative_to(root).parts) == depth)
    if len(top) > 1:
        raise ValueError(f"{source}: several '{name}' folders at the same depth: {[str(p) for p in top]}")
    return top[0]


def _id_files(folder: Path, suffix: str) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.glob(f"*{suffix}"))
        if p.is_file() and not p.name.startswith(".") and _ID_SAFE.fullmatch(p.stem)
    }


def _same_dir(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _install_folder(src: Path | None, dst: Path, suffix: str, *, move: bool) -> int:
    if src is None or _same_dir(src, dst):
        return 0
    files = _id_files(src, suffix)
    for vid, path in files.items():
        _copy_atomic(path, dst / f"{vid}{suffix}", move=move)
    return len(files)


def _materialise(source: str | Path, work: Path, *, retries: int, backoff_s: float) -> tuple[Path, bool]:
    """Folder holding the content of ``source`` and whether its files may be moved (a private unpack)."""
    local = fetch(source, work / "download", retries=retries, backoff_s=backoff_s)
    if local.is_dir():
        return local, False
    unpacked = Path(tempfile.mkdtemp(dir=work, prefix="unpacked-"))
    safe_extract(local, unpacked)
    return unpacked, True


def install_annotations(
    sources: str | Path | Sequence[str | Path],
    out_root: str | Path,
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> dict[str, int]:
    """Fetch and unpack annotation archives (or folders) into ``<out>/landmarks`` and ``<out>/bboxes``.

    Each source must contain a ``landmarks/`` and/or ``bboxes/`` folder (at any depth) of ``<id>.npy``
    files. Returns how many files of each kind were installed.
    """
    out_root = Path(out_root)
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    work = out_root / TMP_DIRNAME
    counts = {"landmarks": 0, "bboxes": 0}
    for source in items:
        work.mkdir(parents=True, exist_ok=True)
        root, move = _materialise(source, work, retries=retries, backoff_s=backoff_s)
        lm = _find_named_dir(root, "landmarks", str(source))
        bb = _find_named_dir(root, "bboxes", str(source))
        if lm is None and bb is None:
            raise ValueError(f"{source}: no 'landmarks/' or 'bboxes/' folder found in the annotation source")
        counts["landmarks"] += _install_folder(lm, out_root / "landmarks", ".npy", move=move)
        counts["bboxes"] += _install_folder(bb, out_root / "bboxes", ".npy", move=move)
        if move:
            shutil.rmtree(root, ignore_errors=True)
    log.info("installed %d landmark and %d box file(s)", counts["landmarks"], counts["bboxes"])
    return counts


# ------------------------------------------------------------------------------------ annotation checks
def _load_npy(path: Path) -> np.ndarray:
    try:
        return load_npy(path)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"cannot load as .npy ({e})") from None


def load_checked_annotations(out_root: Path, vid: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Landmarks and boxes of ``vid`` under ``out_root`` (``None`` where absent), validated together.

    Landmarks must be finite (T, 98, 2), boxes (T, >=4) finite and non-empty with the same T (checks of
    :mod:`ldeq_shared.wflw_v`); problems raise ``DataError`` (a ``ValueError``) naming the file.
    """
    _, lm_path, bb_path = clip_paths(out_root, vid)
    lm = _load_npy(lm_path) if lm_path.is_file() else None
    bb = _load_npy(bb_path) if bb_path.is_file() else None
    if lm is not None:
        check_landmarks(lm_path, lm, N_POINTS)
    if bb is not None:
        check_boxes(bb_path, bb)
        if lm is not None and len(bb) != len(lm):
            raise DataError(bb_path, f"{len(bb)} boxes but {len(lm)} landmark frames")
    return lm, bb


def _relative_message(e: Exception, out_root: Path) -> str:
    """Error text with the output root stripped from paths (manifest reasons stay short and portable)."""
    return str(e).replace(f"{out_root}{os.sep}", "")


def _frame_warning(lm: np.ndarray | None, width: int, height: int) -> str:
    """A warning when most landmarks fall outside the frame (resolution differs from the annotators')."""
    if lm is None:
        return ""
    inside = (lm[..., 0] >= 0) & (lm[..., 0] < width) & (lm[..., 1] >= 0) & (lm[..., 1] < height)
    if inside.mean() < 0.5:
        return (
            f"warning: {100 * (1 - inside.mean()):.0f}% of the landmarks lie outside the {width}x{height} "
            "frame; the download resolution probably differs from the annotated one"
        )
    return ""


# ------------------------------------------------------------------------------------------- video I/O
@dataclass(frozen=True)
class ClipInfo:
    """Facts about one decoded clip."""

    n_frames: int
    width: int
    height: int
    fps: float
    sha256: str = ""


def probe_clip(path: Path) -> ClipInfo:
    """Decode every frame of ``path`` (declared frame counts are not trusted); ``DataError`` if unusable."""
    info = verify_video(path)
    return ClipInfo(info.n_frames, info.width, info.height, info.fps, file_sha256(path))


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """``cv2.VideoWriter`` for an mp4v clip of ``size`` (width, height); a seam the tests patch."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open an mp4v writer ({size[0]}x{size[1]} at {fps} fps)")
    return writer


def cut_window(src: Path, dst: Path, window: FrameRange, *, stop: threading.Event | None = None) -> ClipInfo:
    """Write frames ``window.start..window.end`` (inclusive, 0-based) of ``src`` to ``dst``, same fps/size.

    Frames are decoded sequentially (no seeking, which is frame-inexact). A stream that ends before
    ``window.end`` raises ``ValueError("... video has only N frames, window needs end+1")``. The clip is
    written to a hidden temp file next to ``dst``, re-decoded to verify it has exactly
    ``window.n_frames`` frames, and only then renamed onto ``dst``.
    """
    cap = cv2.VideoCapture(str(src))
    tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
    writer: cv2.VideoWriter | None = None
    try:
        if not cap.isOpened():
            raise ValueError(f"{src.name}: downloaded file cannot be opened as a video by OpenCV")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"{src.name}: source fps is unknown ({fps})")
        idx, size = 0, None
        while idx <= window.end:
            if stop is not None and stop.is_set():
                raise AcquisitionInterrupted("stopped while cutting")
            if not cap.grab():
                break
            if idx >= window.start:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    break
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    writer = _open_writer(tmp, fps, size)
                elif (frame.shape[1], frame.shape[0]) != size:
                    h, w = frame.shape[:2]
                    raise ValueError(f"{src.name}: frame {idx} changes size to {w}x{h}")
                writer.write(frame)
            idx += 1
        if idx <= window.end:
            raise ValueError(f"video has only {idx} frames, window needs {window.end + 1}")
        assert writer is not None
        writer.release()
        writer = None
        info = probe_clip(tmp)
        if info.n_frames != window.n_frames:
            raise ValueError(
                f"written clip has {info.n_frames} frames, expected {window.n_frames} "
                f"(window [{window.start}, {window.end}])"
            )
        os.replace(tmp, dst)
        return ClipInfo(info.n_frames, info.width, info.height, fps, info.sha256)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- downloads
class _QuietLogger:
    """Routes yt-dlp messages to :mod:`logging` instead of the terminal."""

    def __init__(self, vid: str) -> None:
        self.vid = vid

    def debug(self, msg: str) -> None:
        log.debug("%s: %s", self.vid, msg)

    def info(self, msg: str) -> None:
        log.debug("%s: %s", self.vid, msg)

    def warning(self, msg: str) -> None:
        log.debug("%s: yt-dlp warning: %s", self.vid, msg)

    def error(self, msg: str) -> None:
        log.debug("%s: yt-dlp error: %s", self.vid, msg)


def _clean_error(e: BaseException) -> str:
    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    msg = re.sub(r"^ERROR:\s*", "", msg)
    return msg or type(e).__name__


def _is_permanent(msg: str) -> bool:
    low = msg.lower()
    return any(p in low for p in _PERMANENT_ERRORS)


def video_url(url_template: str, vid: str) -> str:
    """The download URL of ``vid`` (always a URL, never a bare id: ids may start with '-')."""
    if "{id}" not in url_template:
        raise ValueError(f"url_template {url_template!r} must contain '{{id}}'")
    return url_template.replace("{id}", urllib.parse.quote(vid, safe="-_"))


@dataclass
class _Context:
    out_root: Path
    lists: WflwVLists
    url_template: str
    retries: int
    backoff_s: float
    format_spec: str
    ydl_options: Mapping[str, Any]
    stop: threading.Event


def _download_video(url: str, vid: str, tmpdir: Path, ctx: _Context) -> Path:
    """One yt-dlp attempt: download ``url`` into ``tmpdir`` and return the file."""
    import yt_dlp  # imported lazily: only this path needs it

    def hook(_: Mapping[str, Any]) -> None:
        if ctx.stop.is_set():
            raise yt_dlp.utils.DownloadCancelled("acquisition stopped")

    opts: dict[str, Any] = {
        "format": ctx.format_spec,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "paths": {"home": str(tmpdir), "temp": str(tmpdir)},
        "outtmpl": "video.%(ext)s",  # the id is not used in file names
        "retries": 0,  # retries are ours, with backoff
        "fragment_retries": 0,
        "cachedir": False,
        "overwrites": True,
        "socket_timeout": 30,
        "logger": _QuietLogger(vid),
        "progress_hooks": [hook],
    }
    opts.update(ctx.ydl_options)
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadCancelled:
        raise AcquisitionInterrupted("stopped while downloading") from None
    if not info:
        raise yt_dlp.utils.DownloadError("yt-dlp returned no information")
    paths = [Path(d["filepath"]) for d in info.get("requested_downloads") or () if d.get("filepath")]
    files = [p for p in paths if p.is_file()] or sorted(
        p for p in tmpdir.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))
    )
    if not files:
        raise yt_dlp.utils.DownloadError("yt-dlp reported success but wrote no file")
    return files[0]


def _download_with_retries(vid: str, tmpdir: Path, ctx: _Context) -> tuple[Path | None, str]:
    """Downloaded file, or ``None`` and the reason after the retries (permanent errors are not retried)."""
    url = video_url(ctx.url_template, vid)
    last = ""
    for attempt in range(1, ctx.retries + 2):
        if ctx.stop.is_set():
            raise AcquisitionInterrupted("stopped")
        try:
            return _download_video(url, vid, tmpdir, ctx), ""
        except AcquisitionInterrupted:
            raise
        except Exception as e:  # yt-dlp raises DownloadError, but network stacks raise many types
            last = _clean_error(e)
        if _is_permanent(last):
            return None, f"{last} (permanent error, not retried)"
        if attempt > ctx.retries:
            break
        log.info("%s: attempt %d/%d failed: %s", vid, attempt, ctx.retries + 1, last)
        shutil.rmtree(tmpdir, ignore_errors=True)
        tmpdir.mkdir()
        if ctx.stop.wait(ctx.backoff_s * 2 ** (attempt - 1)):
            raise AcquisitionInterrupted("stopped")
    return None, f"{last} (gave up after {ctx.retries + 1} attempt(s))"


def _acquire_one(vid: str, ctx: _Context) -> ManifestRow:
    """Download and cut one video; every per-video failure becomes a manifest row."""
    if ctx.stop.is_set():
        raise AcquisitionInterrupted("stopped")
    window = ctx.lists.range_of(vid)

    def row(status: Status, reason: str = "", info: ClipInfo | None = None) -> ManifestRow:
        return ManifestRow.for_window(vid, ctx.lists.split_of(vid), window, status, reason, info)

    try:
        landmarks, _ = load_checked_annotations(ctx.out_root, vid)
    except ValueError as e:
        return row("invalid", _relative_message(e, ctx.out_root))
    if landmarks is not None and len(landmarks) != window.n_frames:
        return row(
            "invalid",
            f"landmarks/{vid}.npy has {len(landmarks)} frames but the window [{window.start}, {window.end}] "
            f"has {window.n_frames}",
        )
    no_ann = "" if landmarks is not None else "warning: no landmarks for this id"
    dst = ctx.out_root / "videos" / f"{vid}.mp4"
    if dst.exists():
        try:
            info = probe_clip(dst)
        except ValueError as e:
            info, why = None, str(e)
        else:
            why = f"has {info.n_frames} frames, expected {window.n_frames}"
        if info is not None and info.n_frames == window.n_frames:
            reason = _frame_warning(landmarks, info.width, info.height) or no_ann
            return row("skipped_existing", reason, info)
        log.warning("%s: existing clip is not valid (%s); downloading again", vid, why)
        dst.unlink()
    tmp_root = ctx.out_root / TMP_DIRNAME
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(dir=tmp_root, prefix="dl-"))
    try:
        src, reason = _download_with_retries(vid, tmpdir, ctx)
        if src is None:
            return row("unavailable", reason)
        try:
            info = cut_window(src, dst, window, stop=ctx.stop)
        except (ValueError, cv2.error) as e:  # undecodable or inconsistent download
            return row("invalid", str(e))
        return row("ok", _frame_warning(landmarks, info.width, info.height) or no_ann, info)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ run driver
def _clean_stale(out_root: Path) -> None:
    """Remove temp files a killed run may have left (temp downloads, partial clips)."""
    shutil.rmtree(out_root / TMP_DIRNAME, ignore_errors=True)
    videos = out_root / "videos"
    if videos.is_dir():
        for p in videos.glob(f".*{PARTIAL_SUFFIX}"):
            p.unlink(missing_ok=True)


def _select_ids(
    lists: WflwVLists,
    ids: Iterable[str] | None,
    split: Literal["easy", "hard", "all"],
    max_videos: int | None,
) -> list[str]:
    pool = lists.ids_in(split)
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        unknown = [v for v in wanted if v not in lists]
        if unknown:
            raise ValueError(f"ids not in the WFLW-V lists ({lists.source}): {unknown[:10]}")
        in_pool = set(pool)
        outside = [v for v in wanted if v not in in_pool]
        if outside:
            raise ValueError(f"ids not in split {split!r}: {outside[:10]}")
        pool = tuple(wanted)
    if max_videos is not None:
        if max_videos < 0:
            raise ValueError(f"max_videos must be >= 0, got {max_videos}")
        pool = pool[:max_videos]
    return list(pool)


def _run_parallel(
    items: Sequence[str],
    work: Callable[[str], ManifestRow],
    manifest: Manifest,
    *,
    workers: int,
    stop: threading.Event,
    desc: str,
    progress: bool,
) -> list[ManifestRow]:
    """Run ``work`` over ``items`` in threads, saving the manifest after every finished item.

    On any exception in the driver or a worker (Ctrl-C included) the other workers are told to stop, the
    rows already finished are saved, and the exception is re-raised.
    """
    done: dict[str, ManifestRow] = {}

    def record(fut: Future[ManifestRow], vid: str) -> None:
        row = fut.result()
        manifest.update(row)
        manifest.save()
        done[vid] = row

    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wflw-v")
    futures = {ex.submit(work, vid): vid for vid in items}
    bar = tqdm(total=len(items), desc=desc, unit="video", disable=None if progress else True, leave=False)
    try:
        for fut in as_completed(futures):
            record(fut, futures[fut])
            bar.update(1)
            bar.set_postfix(Counter(r.status for r in done.values()), refresh=False)
    except BaseException:
        stop.set()
        ex.shutdown(wait=True, cancel_futures=True)
        for fut, vid in futures.items():
            if vid not in done and fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut, vid)
        raise
    finally:
        bar.close()
        ex.shutdown(wait=True)
    return [done[v] for v in items]


def _run_into_manifest(
    out_root: Path,
    lists: WflwVLists,
    items: Sequence[str],
    work: Callable[[str], ManifestRow],
    *,
    workers: int,
    stop: threading.Event,
    desc: str,
    progress: bool,
) -> AcquisitionSummary:
    """:func:`_run_parallel` into the merged manifest of ``out_root`` (saved at the end); the run's summary."""
    manifest = Manifest.load(out_root / MANIFEST_NAME, order=lists.ids)
    rows = _run_parallel(items, work, manifest, workers=workers, stop=stop, desc=desc, progress=progress)
    manifest.save()
    summary = AcquisitionSummary(out_root, manifest.path, rows)
    log.info("%s", summary)
    return summary


def acquire_from_youtube(
    out_root: str | Path,
    annotations: str | Path | Sequence[str | Path] | None = None,
    *,
    url_template: str = DEFAULT_URL_TEMPLATE,
    ids: Iterable[str] | None = None,
    max_videos: int | None = None,
    workers: int = 4,
    retries: int = 3,
    backoff_s: float = 1.0,
    split: Literal["easy", "hard", "all"] = "all",
    lists: WflwVLists | None = None,
    format_spec: str = DEFAULT_FORMAT,
    ydl_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> AcquisitionSummary:
    """Rebuild WFLW-V under ``out_root`` by downloading each listed video and cutting its frame window.

    ``annotations``: path(s) or URL(s) of the benchmark's annotation archive(s) (zip/tar) or folder(s)
    containing ``landmarks/`` and ``bboxes/``; ``None`` keeps what ``<out>/landmarks`` already holds.
    ``url_template`` gets ``{id}`` replaced (tests point it at a local server). ``ids``/``split``/
    ``max_videos`` select videos, ``lists`` overrides the shipped lists, ``ydl_options`` extends the yt-dlp
    options (for example ``{"cookiefile": ...}``). Resumable: valid clips are kept, the manifest is merged.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if retries < 0 or backoff_s < 0:
        raise ValueError(f"retries and backoff_s must be >= 0, got {retries} and {backoff_s}")
    video_url(url_template, "x")  # validates the template
    lists = lists if lists is not None else load_shipped_lists()
    selected = _select_ids(lists, ids, split, max_videos)
    out_root = Path(out_root)
    for sub in ("videos", "landmarks", "bboxes"):
        (out_root / sub).mkdir(parents=True, exist_ok=True)
    _clean_stale(out_root)
    try:
        if annotations is not None:
            install_annotations(annotations, out_root, retries=retries, backoff_s=backoff_s)
        stop = threading.Event()
        ctx = _Context(out_root, lists, url_template, retries, backoff_s, format_spec, dict(ydl_options or {}), stop)
        summary = _run_into_manifest(
            out_root,
            lists,
            selected,
            lambda vid: _acquire_one(vid, ctx),
            workers=workers,
            stop=stop,
            desc="WFLW-V download",
            progress=progress,
        )
    finally:
        _clean_stale(out_root)
    return summary


def validate_clip(out_root: Path, vid: str, lists: WflwVLists, *, in_source: bool = True) -> ManifestRow:
    """Manifest row of an installed clip, ``ok`` when it loads and spans exactly its listed window.

    Loading is :func:`ldeq_shared.wflw_v.load_wflw_v_clip`: decoded frame count == len(landmarks) ==
    len(boxes), landmarks finite (T, 98, 2), boxes finite, non-empty and on the frame.
    """
    if vid not in lists:
        return ManifestRow(vid, "", None, None, "invalid", f"id {vid!r} is not in the WFLW-V lists")
    window, split = lists.range_of(vid), lists.split_of(vid)
    if not in_source:
        return ManifestRow.for_window(vid, split, window, "unavailable", "not in the archive")
    info: ClipInfo | None = None
    try:
        clip = load_wflw_v_clip(out_root, vid, n_points=N_POINTS)
    except ValueError as e:
        status: Status = "invalid"
        reason = _relative_message(e, out_root)
        video = clip_paths(out_root, vid)[0]
        with contextlib.suppress(ValueError):
            info = probe_clip(video)
    else:
        w, h = clip.frame_size
        info = ClipInfo(clip.n_frames, w, h, clip.fps, file_sha256(clip.path))
        if clip.n_frames != window.n_frames:
            status = "invalid"
            reason = (
                f"video and annotations have {clip.n_frames} frames, window [{window.start}, {window.end}] "
                f"needs {window.n_frames}"
            )
        else:
            status, reason = "ok", _frame_warning(clip.landmarks, w, h)
    return ManifestRow.for_window(vid, split, window, status, reason, info)


def acquire_from_archive(
    out_root: str | Path,
    archive: str | Path,
    *,
    lists: WflwVLists | None = None,
    workers: int = 4,
    retries: int = 3,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> AcquisitionSummary:
    """Install a pre-packaged WFLW-V archive: zip/tar or folder with ``videos/``, ``landmarks/``, ``bboxes/``.

    The archive is fetched (path or URL), unpacked safely, its files moved under ``out_root``, and every
    clip validated (frame count == window == len(landmarks), landmarks (T, 98, 2) finite, boxes (T, >=4)).
    Listed ids missing from the archive are recorded as ``unavailable``, unlisted ones as ``invalid``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    lists = lists if lists is not None else load_shipped_lists()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_root)
    try:
        work = out_root / TMP_DIRNAME
        work.mkdir(parents=True, exist_ok=True)
        root, move = _materialise(archive, work, retries=retries, backoff_s=backoff_s)
        videos = _find_named_dir(root, "videos", str(archive))
        if videos is None:
            raise ValueError(f"{archive}: no 'videos/' folder found in the WFLW-V archive")
        base = videos.parent
        lm, bb = (
            base / name if (base / name).is_dir() else _find_named_dir(root, name, str(archive))
            for name in ("landmarks", "bboxes")
        )
        present = set(_id_files(videos, ".mp4"))
        for folder in (lm, bb):
            if folder is not None:
                present |= set(_id_files(folder, ".npy"))
        _install_folder(videos, out_root / "videos", ".mp4", move=move)
        _install_folder(lm, out_root / "landmarks", ".npy", move=move)
        _install_folder(bb, out_root / "bboxes", ".npy", move=move)
        if move:
            shutil.rmtree(root, ignore_errors=True)
        summary = _run_into_manifest(
            out_root,
            lists,
            list(lists.ids) + sorted(present - set(lists.ids)),
            lambda vid: validate_clip(out_root, vid, lists, in_source=vid in present),
            workers=workers,
            stop=threading.Event(),
            desc="WFLW-V validate",
            progress=progress,
        )
    finally:
        _clean_stale(out_root)
    return summary
