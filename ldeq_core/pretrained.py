"""The model zoo: pretrained Landmark DEQ weights, each a typed record with a model card, loaded in one call.

The registry is one metafile, ``ldeq_core/zoo/zoo.json`` (package data), with the weights files next to it::

    {"format": "ldeq-zoo/1", "models": [{"name": ..., "n_landmarks": 68, "filename": "<name>-<sha8>.pt",
                                          "sha256": ..., "size_bytes": ..., "url": null, "card": {...},
                                          "video_defaults": {"mode": "rwr", "budget_nfe": 2, ...}}]}

>>> from ldeq_core import list_pretrained, load_pretrained
>>> [e.name for e in list_pretrained(68)]                       # doctest: +SKIP
>>> loaded = load_pretrained("ldeq68-small-w300-128px")          # doctest: +SKIP

Every load checks the file's sha256 against the record (a truncated or altered file raises
:class:`WeightsIntegrityError`). Weights can also be loaded from a URL (``https://``, ``http://`` for local
mirrors, ``file://``) with a *required* pinned sha256; they are downloaded once into a cache folder
(``cache_dir``, else ``$LDEQ_CACHE_DIR``, else ``~/.cache/ldeq/weights``), through a temp file that is renamed into
place only when its hash matches, so the cache never holds a partial or wrong file.

The zoo folder is ``$LDEQ_ZOO_DIR`` when set (tests, private zoos), else the package's ``zoo`` folder; every
function also takes ``zoo_dir=``. ``scripts/add_zoo_model.py`` adds a trained checkpoint with its measured card.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ldeq_core.checkpoints import LoadedCheckpoint, load_checkpoint, save_checkpoint
from ldeq_core.defaults import BUDGET_NFE, EXTRA_SCALE
from ldeq_core.fileio import atomic_path, file_sha256, write_bytes_atomic
from ldeq_core.model import LandmarkDEQ

if TYPE_CHECKING:
    from ldeq_core.config import ModelConfig
    from ldeq_core.rwr import RwRConfig

__all__ = [
    "BOX_CONVENTION_68",
    "LICENCE_IBUG_300W",
    "ZOO_FORMAT",
    "ModelCard",
    "PretrainedEntry",
    "WeightsDownloadError",
    "WeightsIntegrityError",
    "cache_dir",
    "default_pretrained",
    "download_weights",
    "get_pretrained",
    "list_pretrained",
    "load_pretrained",
    "make_card",
    "pretrained_file",
    "register_pretrained",
    "zoo_dir",
]

ZOO_FORMAT = "ldeq-zoo/1"
METAFILE = "zoo.json"
PACKAGE_ZOO_DIR = Path(__file__).resolve().parent / "zoo"
DEFAULT_BUDGET_NFE = BUDGET_NFE
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_URL_SCHEMES = ("https", "http", "file")
_SCHEMES = {68: "68-point iBUG 300-W", 98: "98-point WFLW"}

BOX_CONVENTION_68 = (
    "box (x1, y1, x2, y2) in frame pixels = the tight bounding box of the 68 landmarks; the model crop is a square "
    "of 1.2x that box's longer side around its centre, resized to the input size (ldeq_core.geometry.crop_face, "
    "RwRConfig.extra_scale=1.2). The 300-W training stills were cropped from the landmark box grown x1.1 about its "
    "centre (a detector-like box), so boxes between the tight landmark box and 1.1x it match training."
)
LICENCE_IBUG_300W = (
    "Weights trained on the iBUG 300-W annotations (68 points), which are released for research / non-commercial "
    "use only; as for dlib's 68-point shape predictor, use these weights for research / non-commercial purposes "
    "only. The ldeq code itself is Apache-2.0."
)


class WeightsIntegrityError(ValueError):
    """A weights file (or download) whose sha256 is not the pinned one: truncated, corrupted or replaced."""

    def __init__(self, source: str, expected: str, actual: str, detail: str = "") -> None:
        self.source, self.expected, self.actual = source, expected, actual
        super().__init__(
            f"{source}: sha256 mismatch: expected {expected}, got {actual}"
            + (f" ({detail})" if detail else "")
            + ": the file is truncated, corrupted or not the pinned weights"
        )


class WeightsDownloadError(OSError):
    """Downloading weights from a URL failed (HTTP error, unreachable host, timeout, short read)."""


# ------------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class ModelCard:
    """What a zoo model is, what it costs and how it was made (the numbers sit next to the weights).

    ``gmac_per_rwr_frame``: conv GMAC of one video frame under RwR, the stem plus ``DEFAULT_BUDGET_NFE`` (2) cell
    evaluations. ``cpu_frames_per_s``: RwR at 2 NFE, batch 1, one face, measured on ``cpu_benchmark`` (machine
    and command). ``metrics``: validation numbers of the checkpoint, e.g. ``val_nme_pct`` (inter-ocular NME, %),
    ``val_fr_pct`` (failure rate at NME 10 %, %), ``val_auc`` (AUC at 10 %, a fraction), ``val_images``.
    ``recipe``: the params file, relative to the repository root; ``command``: the exact command(s) that trained
    the model; ``git_commit``: the commit they ran at (``-dirty`` when the tree had uncommitted changes).
    """

    scheme: str
    input_size: int
    heatmap_size: int
    params: int
    gmac_per_rwr_frame: float
    cpu_frames_per_s: float
    cpu_benchmark: str
    training_data: str
    recipe: str
    command: str
    git_commit: str
    metrics: dict[str, float]
    box_convention: str
    licence: str
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        return _from_dict(cls, data, "card")


@dataclass(frozen=True)
class PretrainedEntry:
    """One zoo model: its weights file (relative to the zoo folder, carrying the first 8 hex of its sha256), the
    pinned hash and size, an optional remote copy, its card, and the recommended RwR video settings
    (:class:`~ldeq_core.rwr.RwRConfig` fields, e.g. ``{"mode": "rwr", "budget_nfe": 2, "crop_size": 128}``)."""

    name: str
    n_landmarks: int
    filename: str
    sha256: str
    size_bytes: int
    url: str | None
    card: ModelCard
    video_defaults: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainedEntry:
        data = dict(data)
        card = ModelCard.from_dict(data.pop("card", {}))
        entry = _from_dict(cls, {**data, "card": card}, f"model {data.get('name', '?')!r}")
        entry.validate()
        return entry

    def validate(self) -> None:
        """Raise ``ValueError`` on a malformed record (name, hash, file name)."""
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"zoo model name {self.name!r}: use letters, digits, '.', '_' and '-'")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"zoo model {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if Path(self.filename).name != self.filename or self.sha256[:8] not in self.filename:
            raise ValueError(
                f"zoo model {self.name!r}: filename {self.filename!r} must be a bare file name carrying the "
                f"sha256 prefix {self.sha256[:8]}"
            )

    def rwr_config(self, **overrides: Any) -> RwRConfig:
        """The recommended :class:`~ldeq_core.rwr.RwRConfig` (``video_defaults``), with optional overrides."""
        from ldeq_core.rwr import RwRConfig

        return RwRConfig(**{**self.video_defaults, **overrides})


def _from_dict(cls: type, data: Mapping[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - set(data)
    if unknown or missing:
        raise ValueError(f"zoo {what}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    return cls(**data)


# ------------------------------------------------------------------------------------------------------ folders


def zoo_dir(path: str | Path | None = None) -> Path:
    """The zoo folder: ``path`` if given, else ``$LDEQ_ZOO_DIR``, else the package's ``ldeq_core/zoo``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("LDEQ_ZOO_DIR")
    return Path(env) if env else PACKAGE_ZOO_DIR


def cache_dir(path: str | Path | None = None) -> Path:
    """The download cache: ``path`` if given, else ``$LDEQ_CACHE_DIR``, else ``~/.cache/ldeq/weights``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("LDEQ_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ldeq" / "weights"


# ------------------------------------------------------------------------------------------------------ registry


def _read_metafile(folder: Path) -> list[PretrainedEntry]:
    path = folder / METAFILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable zoo metafile ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != ZOO_FORMAT or not isinstance(data.get("models"), list):
        raise ValueError(f"{path}: not an {ZOO_FORMAT} metafile (expected {{'format': ..., 'models': [...]}})")
    try:
        entries = [PretrainedEntry.from_dict(m) for m in data["models"]]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate model names {sorted({n for n in names if names.count(n) > 1})}")
    return entries


def _write_metafile(folder: Path, entries: list[PretrainedEntry]) -> None:
    text = json.dumps({"format": ZOO_FORMAT, "models": [e.to_dict() for e in entries]}, indent=2) + "\n"
    write_bytes_atomic(folder / METAFILE, text.encode("utf-8"), fsync=True)


def list_pretrained(n_landmarks: int | None = None, *, zoo_dir: str | Path | None = None) -> list[PretrainedEntry]:
    """The zoo's models in metafile order, optionally only those with ``n_landmarks`` points."""
    entries = _read_metafile(_zoo(zoo_dir))
    return [e for e in entries if n_landmarks is None or e.n_landmarks == n_landmarks]


def get_pretrained(name: str, *, zoo_dir: str | Path | None = None) -> PretrainedEntry:
    """The zoo record called ``name``; ``ValueError`` listing the known names otherwise."""
    entries = list_pretrained(zoo_dir=zoo_dir)
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none: the zoo is empty"
    raise ValueError(f"unknown pretrained model {name!r} (zoo {_zoo(zoo_dir)}); known models: {known}")


REALTIME_CPU_FPS = 30.0  # a model is a CPU default only when its card says it runs at least this fast


def default_pretrained(
    n_landmarks: int = 68, *, device: str | Any = "cpu", zoo_dir: str | Path | None = None
) -> PretrainedEntry | None:
    """The ``n_landmarks``-point model with the lowest validation NME (``card.metrics['val_nme_pct']``; models
    without it rank last) for ``device``: on a GPU (``cuda...``) any model; on a CPU only the real-time ones
    (``card.cpu_frames_per_s`` >= :data:`REALTIME_CPU_FPS`; all of them when none is). None when the zoo has no
    model of that scheme."""
    entries = list_pretrained(n_landmarks, zoo_dir=zoo_dir)
    if not entries:
        return None
    if not str(getattr(device, "type", device)).startswith("cuda"):
        fast = [e for e in entries if (e.card.cpu_frames_per_s or 0.0) >= REALTIME_CPU_FPS]
        entries = fast or entries
    return min(entries, key=lambda e: float(e.card.metrics.get("val_nme_pct", float("inf"))))


def _zoo(path: str | Path | None) -> Path:  # for functions whose `zoo_dir` argument hides zoo_dir()
    return zoo_dir(path)


def _cache(path: str | Path | None) -> Path:
    return cache_dir(path)


# ------------------------------------------------------------------------------------------------------ loading


def _is_url(text: str) -> bool:
    return "://" in text


def _check_sha256(sha256: str, what: str) -> str:
    sha = sha256.strip().lower()
    if not _SHA256_RE.fullmatch(sha):
        raise ValueError(f"{what}: sha256 must be 64 hex digits, got {sha256!r}")
    return sha


def _verify_file(path: Path, expected: str, expected_size: int | None = None) -> None:
    actual = file_sha256(path)
    if actual != expected:
        size = path.stat().st_size
        detail = f"{size} bytes"
        if expected_size is not None and size != expected_size:
            detail += f", expected {expected_size} bytes" + (": truncated" if size < expected_size else "")
        raise WeightsIntegrityError(str(path), expected, actual, detail)


def pretrained_file(
    name_or_url: str,
    *,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    zoo_dir: str | Path | None = None,
    progress: bool | None = None,
) -> Path:
    """The local, sha256-verified weights file of a zoo name or a URL (downloading a URL once into the cache).

    Use this where a path is needed (e.g. ``ldeq serve --checkpoint``); :func:`load_pretrained` builds the model.
    """
    if _is_url(name_or_url):
        if sha256 is None:
            raise ValueError(
                f"{name_or_url}: loading weights from a URL needs a pinned sha256 (sha256='<64 hex digits>')"
            )
        return download_weights(name_or_url, sha256, cache_dir=cache_dir, progress=progress)
    entry = get_pretrained(name_or_url, zoo_dir=zoo_dir)
    if sha256 is not None and _check_sha256(sha256, entry.name) != entry.sha256:
        raise ValueError(f"zoo model {entry.name!r}: the pinned sha256 {sha256} is not the zoo's {entry.sha256}")
    path = _zoo(zoo_dir) / entry.filename
    if path.is_file():
        _verify_file(path, entry.sha256, entry.size_bytes)
        return path
    if entry.url:
        return download_weights(entry.url, entry.sha256, cache_dir=cache_dir, progress=progress)
    raise FileNotFoundError(f"{path}: weights of zoo model {entry.name!r} not found, and the entry has no url")


def load_pretrained(
    name_or_url: str,
    map_location: str | torch.device = "cpu",
    *,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    zoo_dir: str | Path | None = None,
    progress: bool | None = None,
) -> LoadedCheckpoint:
    """Load a zoo model by name, or weights from a URL with a pinned ``sha256``; returns a ``LoadedCheckpoint``.

    A zoo name loads ``<zoo>/<filename>``, verified by sha256 on every load, or, when that file is missing and the
    entry has a ``url``, the cached download of it. ``metadata`` gains ``zoo_name`` (by name) or ``weights_url``.
    Raises :class:`WeightsIntegrityError` on a hash mismatch, :class:`WeightsDownloadError` when a download fails,
    ``ValueError`` for an unknown name or a URL without ``sha256``.
    """
    path = pretrained_file(name_or_url, sha256=sha256, cache_dir=cache_dir, zoo_dir=zoo_dir, progress=progress)
    loaded = load_checkpoint(path, map_location)
    if _is_url(name_or_url):
        expected, extra = _check_sha256(sha256 or "", name_or_url), {"weights_url": name_or_url}
    else:
        entry = get_pretrained(name_or_url, zoo_dir=zoo_dir)
        expected, extra = entry.sha256, {"zoo_name": entry.name}
        if loaded.model.cfg.n_landmarks != entry.n_landmarks:
            raise ValueError(
                f"{path}: zoo model {entry.name!r} is listed with {entry.n_landmarks} landmarks, "
                f"the weights have {loaded.model.cfg.n_landmarks}"
            )
    if loaded.sha256 != expected:  # the file changed between the check and the load
        raise WeightsIntegrityError(str(path), expected, loaded.sha256, "changed while loading")
    loaded.metadata = {**loaded.metadata, **extra}
    return loaded


# ------------------------------------------------------------------------------------------------------ downloads


def _url_basename(url: str) -> str:
    base = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    return re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "weights.pt"


def _cache_name(url: str, sha256: str) -> str:
    return f"{sha256[:16]}-{_url_basename(url)}"


def download_weights(
    url: str,
    sha256: str,
    *,
    cache_dir: str | Path | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """The cached copy of ``url``, downloading it first if needed; returns its path in the cache folder.

    The file is ``<cache>/<sha256[:16]>-<basename>``. A cached file is re-hashed on every call (a bad one is
    replaced by a fresh download). Downloads stream in chunks into a temp file of the cache folder, hashed on the
    way, and are renamed into place only when the hash matches: a failed or wrong download leaves nothing behind.
    ``progress``: a tqdm bar (None: only when stderr is a terminal).
    """
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in _URL_SCHEMES:
        raise ValueError(f"{url}: unsupported URL scheme {scheme!r} (use {', '.join(_URL_SCHEMES)})")
    sha = _check_sha256(sha256, url)
    folder = _cache(cache_dir)
    target = folder / _cache_name(url, sha)
    if target.is_file():
        actual = file_sha256(target)
        if actual == sha:
            return target
        warnings.warn(
            f"{target}: cached weights have sha256 {actual}, expected {sha}; downloading {url} again",
            stacklevel=2,
        )
        target.unlink(missing_ok=True)
    with atomic_path(target, fsync=True) as tmp:
        with open(tmp, "wb") as out:
            actual, size = _stream(url, out, timeout, progress)
        if actual != sha:
            raise WeightsIntegrityError(url, sha, actual, f"{size} bytes downloaded; nothing was cached")
    return target


def _stream(url: str, out: Any, timeout: float, progress: bool | None) -> tuple[str, int]:
    """Copy ``url`` into ``out`` chunk by chunk; return (sha256 hex, bytes). Errors name the URL."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "ldeq-model-zoo"})
    h, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            disable = (not sys.stderr.isatty()) if progress is None else not progress
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=_url_basename(url), disable=disable
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise WeightsDownloadError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise WeightsDownloadError(f"{url}: download failed: {exc.reason}") from exc
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise WeightsDownloadError(f"{url}: download failed: {type(exc).__name__}: {exc}") from exc
    if total is not None and size != total:
        raise WeightsDownloadError(f"{url}: download truncated: got {size} of {total} bytes")
    return h.hexdigest(), size


# ------------------------------------------------------------------------------------------------------ adding


def make_card(
    cfg: ModelConfig,
    *,
    training_data: str,
    recipe: str,
    command: str,
    git_commit: str,
    metrics: Mapping[str, float],
    cpu_frames_per_s: float,
    cpu_benchmark: str,
    box_convention: str | None = None,
    licence: str | None = None,
    notes: str = "",
) -> ModelCard:
    """A :class:`ModelCard` whose scheme, sizes, parameter count and GMAC per RwR frame come from ``cfg``.

    ``box_convention`` and ``licence`` default to :data:`BOX_CONVENTION_68` / :data:`LICENCE_IBUG_300W` for
    68-point models and must be given for other schemes.
    """
    from ldeq_core.profiling import model_cost

    if cfg.n_landmarks != 68 and (box_convention is None or licence is None):
        raise ValueError(f"a {cfg.n_landmarks}-point model needs an explicit box_convention and licence")
    cost = model_cost(cfg)
    return ModelCard(
        scheme=_SCHEMES.get(cfg.n_landmarks, f"{cfg.n_landmarks}-point"),
        input_size=cfg.image_size,
        heatmap_size=cfg.heatmap_size,
        params=cost.params_total,
        gmac_per_rwr_frame=round(cost.macs_per_frame(DEFAULT_BUDGET_NFE) / 1e9, 4),
        cpu_frames_per_s=float(cpu_frames_per_s),
        cpu_benchmark=cpu_benchmark,
        training_data=training_data,
        recipe=recipe,
        command=command,
        git_commit=git_commit,
        metrics={k: float(v) for k, v in metrics.items()},
        box_convention=box_convention or BOX_CONVENTION_68,
        licence=licence or LICENCE_IBUG_300W,
        notes=notes,
    )


_KEPT_METADATA = ("run_name", "epoch", "source", "val_nme")


def register_pretrained(
    checkpoint: str | Path | LandmarkDEQ | LoadedCheckpoint,
    name: str,
    card: ModelCard,
    *,
    url: str | None = None,
    video_defaults: Mapping[str, Any] | None = None,
    zoo_dir: str | Path | None = None,
    half: bool = False,
) -> PretrainedEntry:
    """Add ``checkpoint`` to the zoo as ``name`` (replacing a model of that name) and return its record.

    The model is re-saved in our format on the CPU, fp32 (or float16 with ``half``: half the bytes; loading casts
    the weights back to float32), with its metadata trimmed to ``run_name``, ``epoch``,
    ``source``, ``val_nme``, ``zoo_name`` and the source file's sha256, as ``<zoo>/<name>-<sha256[:8]>.pt``; the
    metafile is rewritten atomically. ``video_defaults`` default to RwR at budget 2 with the model's crop size.
    A replaced model's old weights file is deleted.
    """
    from ldeq_core.rwr import RwRConfig

    folder = _zoo(zoo_dir)
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"zoo model name {name!r}: use letters, digits, '.', '_' and '-'")
    source_sha = None
    if isinstance(checkpoint, str | Path):
        checkpoint = load_checkpoint(checkpoint)
    if isinstance(checkpoint, LoadedCheckpoint):
        model, metadata, source_sha = checkpoint.model, checkpoint.metadata, checkpoint.sha256
    else:
        model, metadata = checkpoint, {}
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    cfg = model.cfg
    if card.input_size != cfg.image_size or card.heatmap_size != cfg.heatmap_size:
        raise ValueError(
            f"card input/heatmap size {card.input_size}/{card.heatmap_size} != model {cfg.image_size}/"
            f"{cfg.heatmap_size}"
        )
    defaults = dict(
        video_defaults
        if video_defaults is not None
        else {"mode": "rwr", "budget_nfe": DEFAULT_BUDGET_NFE, "crop_size": cfg.image_size, "extra_scale": EXTRA_SCALE}
    )
    RwRConfig(**defaults)  # unknown keys or bad values raise here, not at a user's load
    if url is not None and urllib.parse.urlparse(url).scheme.lower() not in _URL_SCHEMES:
        raise ValueError(f"{url}: unsupported URL scheme (use {', '.join(_URL_SCHEMES)})")

    kept = {k: metadata[k] for k in _KEPT_METADATA if k in metadata}
    kept["zoo_name"] = name
    if half:
        kept["weights_stored_as"] = "float16"
    if source_sha:
        kept["source_sha256"] = source_sha
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_checkpoint(tmp, model.half() if half else model, kept)
        sha = file_sha256(tmp)
        filename = f"{name}-{sha[:8]}.pt"
        size = tmp.stat().st_size
        os.replace(tmp, folder / filename)
    finally:
        tmp.unlink(missing_ok=True)

    entry = PretrainedEntry(
        name=name,
        n_landmarks=cfg.n_landmarks,
        filename=filename,
        sha256=sha,
        size_bytes=size,
        url=url,
        card=card,
        video_defaults=defaults,
    )
    entry.validate()
    entries = _read_metafile(folder)
    old = next((e for e in entries if e.name == name), None)
    if old is not None:
        entries = [entry if e.name == name else e for e in entries]
    else:
        entries.append(entry)
    _write_metafile(folder, entries)
    if old is not None and old.filename != filename and all(e.filename != old.filename for e in entries):
        (folder / old.filename).unlink(missing_ok=True)
    return entry
