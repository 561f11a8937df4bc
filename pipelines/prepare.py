"""The ``prepare`` stage: make ``data/raw`` for the configured source and describe it in ``prepared.json``.

Sources (``params.yaml`` section ``data``, key ``source``):

- ``synthetic`` (default, offline): ``pipelines.synthetic.generate.generate_dataset`` into
  ``<out>/synthetic/{wflw,wflw_v}``; splits ``train``/``test`` (stills) and ``video_easy``/``video_hard``.
- ``300w``: the 68-point stills under ``data.w300.root`` (referenced, never copied). Train/val split by a
  hash of the *photo* id (the name without its trailing ``_<face number>``, so faces of one photo stay
  together): a photo goes to ``val`` when ``sha256(id)`` maps below ``val_fraction``, or when its subset
  is listed in ``val_subsets`` (e.g. ``[afw]`` for a subset-level split). Animated-stills videos of the
  ``val`` images are written to ``<out>/300w_anim`` (WFLW-V layout, split ``video_val``).
- ``wflw``: a user-supplied precropped WFLW root (``data.wflw.root``): validated and referenced.
- ``wflw_v``: WFLW-V acquired into ``<out>/wflw_v`` by ``pipelines.acquire_wflw_v`` (YouTube +
  annotation archive, or a packaged archive), splits ``video_easy``/``video_hard``; plus WFLW stills
  when ``data.wflw.root`` is set.

``<out>/prepared.json`` (:mod:`ldeq_shared.prepared`, read back with ``load_prepared``) lists the still datasets
(format, root relative to ``<out>``, splits -> item names), the video datasets (root, splits -> ids),
``n_landmarks``, a content fingerprint of referenced inputs and every bad item skipped with its reason.
Generated folders carry a marker with the hash of the settings that made them: a re-run with the same settings
reuses them (idempotent), an interrupted animated-stills or WFLW-V run resumes, and ``prepared.json`` is written
(atomically) last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ldeq_core.fileio import update_from_file, write_text_atomic
from ldeq_shared.errors import BadItem
from ldeq_shared.params import DATA_SOURCES, DataSettings, Params, as_params, load_params
from ldeq_shared.prepared import PREPARED_NAME, Prepared, StillSet, VideoSet
from ldeq_shared.wflw_v import read_id_list, scan_wflw_v
from pipelines.formats.w300 import scan_300w
from pipelines.formats.wflw import list_wflw_splits, scan_wflw

MARKER_NAME = ".ldeq_prepare.json"
SOURCES = DATA_SOURCES
PathLike = str | os.PathLike[str]

_NO_HASH_KEYS = frozenset({"workers"})  # settings that do not change the generated data


# -------------------------------------------------------------------------------------------- settings
def data_settings(params: Params | Mapping[str, Any], where: str = "params.yaml") -> DataSettings:
    """The typed ``data`` section of ``params`` (a :class:`Params`, or a mapping parsed by it)."""
    return as_params(params, where).data


def data_affecting(settings: Any) -> Any:
    """``settings`` without the keys that do not change the produced data (``workers``), keys sorted."""
    if isinstance(settings, Mapping):
        return {k: data_affecting(v) for k, v in sorted(settings.items()) if k not in _NO_HASH_KEYS}
    if isinstance(settings, list | tuple):
        return [data_affecting(v) for v in settings]
    return settings


def settings_hash(settings: Any) -> str:
    """sha256 of ``data_affecting(settings)`` as canonical JSON."""
    return hashlib.sha256(json.dumps(data_affecting(settings), sort_keys=True).encode()).hexdigest()


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive
        return os.fspath(path.resolve())


def _bad(dataset: str, split: str, items: Sequence[BadItem]) -> list[dict[str, str]]:
    return [{"stage": "prepare", "dataset": dataset, "split": split, **asdict(b)} for b in items]


# ------------------------------------------------------------------------------------------ fingerprints
def fingerprint_tree(root: Path, files: Sequence[Path]) -> str:
    """sha256 over the relative names and contents of ``files`` (sorted by name)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda q: q.relative_to(root).as_posix()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        update_from_file(h, f)
        h.update(b"\0")
    return h.hexdigest()


# ----------------------------------------------------------------------------------- generated folders
def _marker_matches(folder: Path, sha: str) -> bool:
    marker = folder / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("settings_sha256") == sha
    except (OSError, json.JSONDecodeError):
        return False


def _write_marker(folder: Path, sha: str, settings: Any) -> None:
    write_text_atomic(folder / MARKER_NAME, json.dumps({"settings_sha256": sha, "settings": settings}, indent=1))


def _clean_tmp(out: Path) -> None:
    for p in out.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- sources
def _video_sets_from_lists(
    dataset: str, root: Path, out: Path, n_points: int
) -> tuple[VideoSet | None, list[dict[str, str]]]:
    """Video set of a WFLW-V-layout folder with ``easy_video_IDs.txt`` / ``hard_video_IDs.txt``."""
    splits: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    for name, split in (("easy_video_IDs.txt", "video_easy"), ("hard_video_IDs.txt", "video_hard")):
        if not (root / name).is_file():
            continue
        ids = read_id_list(root / name)  # a clip without a bboxes file is evaluated on detector boxes
        good, skipped = scan_wflw_v(root, ids, n_points=n_points, decode=False, require_boxes=False)
        bad += _bad(dataset, split, skipped)
        if good:
            splits[split] = {"items": [c.id for c in good]}
    return (VideoSet(dataset, _rel(root, out), splits) if splits else None), bad


def _wflw_stills(
    dataset: str, root: Path, out: Path, splits: Sequence[str] | None, check_images: bool
) -> tuple[StillSet, list[dict[str, str]]]:
    if not root.is_dir():
        raise ValueError(f"{root}: WFLW root is not a directory (data.wflw.root)")
    names = list(splits) if splits else list_wflw_splits(root)
    if not names:
        raise ValueError(f"{root}: no WFLW split files (<split>.txt) found")
    out_splits: dict[str, dict[str, Any]] = {}
    bad: list[dict[str, str]] = []
    for split in names:
        good, skipped = scan_wflw(root, split, check_images=check_images)
        bad += _bad(dataset, split, skipped)
        out_splits[split] = {"items": [g.relpath for g in good], "source_split": split}
    return StillSet(dataset, "wflw", _rel(root, out), out_splits), bad


def _prepare_synthetic(cfg: DataSettings, out: Path, progress: bool) -> dict[str, Any]:
    from pipelines.synthetic.generate import generate_dataset

    syn = {k: v for k, v in cfg.to_dict()["synthetic"].items() if k != "val_fraction"} | {"seed": cfg.seed}
    sha = settings_hash(syn)
    gen = out / "synthetic"
    if not _marker_matches(gen, sha):
        tmp = out / ".tmp-synthetic"
        shutil.rmtree(tmp, ignore_errors=True)
        workers = int(syn["workers"] or os.cpu_count() or 1)
        generate_dataset(
            tmp,
            n_train=syn["n_train"],
            n_test=syn["n_test"],
            n_videos=syn["n_videos"],
            n_frames=syn["n_frames"],
            seed=syn["seed"],
            workers=workers,
            progress=progress,
            image_format=syn["image_format"],
        )
        _write_marker(tmp, sha, syn)
        shutil.rmtree(gen, ignore_errors=True)
        os.replace(tmp, gen)
    stills, bad = _wflw_stills("synthetic", gen / "wflw", out, None, check_images=False)
    _carve_val(stills, float(cfg.synthetic.val_fraction))
    videos, vbad = _video_sets_from_lists("synthetic", gen / "wflw_v", out, 98)
    return {
        "n_landmarks": 98,
        "stills": [stills],
        "videos": [videos] if videos else [],
        "bad": bad + vbad,
        "inputs": {},
    }


def _carve_val(stills: StillSet, fraction: float) -> None:
    """Move the train stills whose ``sha256(name)`` maps below ``fraction`` to a ``val`` split (model selection
    must not see the test split)."""
    train = stills.splits.get("train")
    if not train or fraction <= 0:
        return
    val = [n for n in train["items"] if hash_fraction(n) < fraction]
    if not val:
        return
    train["items"] = [n for n in train["items"] if hash_fraction(n) >= fraction]
    stills.splits["val"] = {"items": val, "source_split": train["source_split"]}


def photo_id(name: str) -> str:
    """The photo a 300-W face comes from: its name without a trailing ``_<digits>`` face number."""
    return re.sub(r"_\d+$", "", name)


def hash_fraction(key: str) -> float:
    """A uniform number in [0, 1) from ``sha256(key)`` (stable across machines and Python versions)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_300w(names: Sequence[str], val_fraction: float, val_subsets: Sequence[str] = ()) -> dict[str, list[str]]:
    """Deterministic train/val split of 300-W names ``<subset>/<stem>`` by photo hash (see module doc)."""
    val_sub = set(val_subsets)
    out: dict[str, list[str]] = {"train": [], "val": []}
    for name in sorted(names):
        subset = name.split("/", 1)[0] if "/" in name else ""
        is_val = subset in val_sub or hash_fraction(photo_id(name)) < val_fraction
        out["val" if is_val else "train"].append(name)
    return out


def _resolve_input(value: Any, key: str, base: Path, source: str = "params.yaml") -> Path:
    if not value:
        raise ValueError(f"{source}: {key} must be set for this data source")
    p = Path(os.path.expanduser(str(value)))
    p = p if p.is_absolute() else base / p
    if not p.is_dir():
        raise ValueError(f"{p}: {key} is not a directory")
    return p


def _prepare_300w(cfg: DataSettings, out: Path, base: Path, progress: bool) -> dict[str, Any]:
    from pipelines.animated_stills import build_animated_stills_dataset

    w3 = cfg.to_dict()["w300"]
    root = _resolve_input(cfg.w300.root, "data.w300.root", base)
    good, skipped = scan_300w(root, w3["subsets"] or None, check_images=True)
    bad = _bad("300w", "", skipped)
    by_name = {g.name: g for g in good}
    splits = split_300w(list(by_name), float(w3["val_fraction"]), w3["val_subsets"] or ())
    files = [p for g in good for p in (g.image_path, g.pts_path)]
    fingerprint = fingerprint_tree(root, files)
    stills = StillSet(
        "300w",
        "300w",
        _rel(root, out),
        {s: {"items": names, "source_split": None} for s, names in splits.items() if names},
    )
    videos: list[VideoSet] = []
    n_videos = int(w3["n_videos"])
    if n_videos > 0 and splits["val"]:
        anim = {k: w3[k] for k in ("n_videos", "n_frames", "frame_size", "fps")}
        if w3.get("anim"):
            anim["anim"] = dict(w3["anim"])  # part of the hash only when set: existing folders stay valid
        anim.update(seed=cfg.seed, val=splits["val"], inputs=fingerprint)
        sha = settings_hash(anim)
        vdir = out / "300w_anim"
        if not _marker_matches(vdir, sha):
            shutil.rmtree(vdir, ignore_errors=True)
            vdir.mkdir(parents=True)
            _write_marker(vdir, sha, {k: v for k, v in anim.items() if k != "val"})
        ids = build_animated_stills_dataset(
            [by_name[n] for n in splits["val"]],
            vdir,
            n_videos,
            n_frames=int(w3["n_frames"]),
            size=(int(w3["frame_size"][0]), int(w3["frame_size"][1])),
            fps=float(w3["fps"]),
            seed=int(cfg.seed),
            params=dict(w3.get("anim") or {}),
            id_prefix="anim",
            skip_existing=True,
        )
        clips, vbad = scan_wflw_v(vdir, ids, n_points=68, decode=False)
        bad += _bad("300w_anim", "video_val", vbad)
        if clips:
            videos.append(VideoSet("300w_anim", _rel(vdir, out), {"video_val": {"items": [c.id for c in clips]}}))
    elif n_videos > 0 and progress:
        print("prepare: 300-W val split is empty, no animated-stills videos")
    return {
        "n_landmarks": 68,
        "stills": [stills],
        "videos": videos,
        "bad": bad,
        "inputs": {_rel(root, out): fingerprint},
    }


def _wflw_input(
    cfg: DataSettings, out: Path, base: Path
) -> tuple[list[StillSet], list[dict[str, str]], dict[str, str]]:
    wf = cfg.wflw
    root = _resolve_input(wf.root, "data.wflw.root", base)
    stills, bad = _wflw_stills("wflw", root, out, wf.splits, wf.check_images)
    files = [root / f"{s['source_split']}.txt" for s in stills.splits.values()]
    files += [root / s["source_split"] / rel for s in stills.splits.values() for rel in s["items"]]
    return [stills], bad, {_rel(root, out): fingerprint_tree(root, files)}


def _prepare_wflw_v(cfg: DataSettings, out: Path, base: Path, progress: bool) -> dict[str, Any]:
    from pipelines.acquire_wflw_v import (
        MANIFEST_NAME,
        Manifest,
        acquire_from_archive,
        acquire_from_youtube,
        usable_ids,
    )
    from pipelines.wflw_v_lists import load_lists_from_dir, load_shipped_lists

    wv = cfg.wflw_v
    lists = (
        load_lists_from_dir(_resolve_input(wv.lists_dir, "data.wflw_v.lists_dir", base))
        if wv.lists_dir
        else load_shipped_lists()
    )
    vdir = out / "wflw_v"

    def local(v: Any) -> Any:  # relative local paths are relative to the project, URLs pass through
        if v is None or re.match(r"^[a-z][a-z0-9+.-]*://", str(v)):
            return v
        p = Path(os.path.expanduser(str(v)))
        return p if p.is_absolute() else base / p

    if wv.archive:
        acquire_from_archive(
            vdir,
            local(wv.archive),
            lists=lists,
            workers=wv.workers,
            retries=wv.retries,
            progress=progress,
        )
    else:
        acquire_from_youtube(
            vdir,
            local(wv.annotations),
            url_template=wv.url_template,
            lists=lists,
            split=wv.split,
            max_videos=wv.max_videos,
            workers=wv.workers,
            retries=wv.retries,
            progress=progress,
        )
    usable = set(usable_ids(vdir))
    bad = [
        {
            "stage": "prepare",
            "dataset": "wflw_v",
            "split": f"video_{r.split}" if r.split else "",
            "item": r.id,
            "path": os.fspath(vdir / "videos" / f"{r.id}.mp4"),
            "reason": f"{r.status}: {r.reason}",
        }
        for r in Manifest.load(vdir / MANIFEST_NAME).rows
        if r.id not in usable
    ]
    splits: dict[str, dict[str, Any]] = {}
    for split in ("easy", "hard"):
        ids = [v for v in lists.ids_in(split) if v in usable]
        clips, vbad = scan_wflw_v(vdir, ids, n_points=98, decode=False)
        bad += _bad("wflw_v", f"video_{split}", vbad)
        if clips:
            splits[f"video_{split}"] = {"items": [c.id for c in clips]}
    videos = [VideoSet("wflw_v", _rel(vdir, out), splits)] if splits else []
    stills: list[StillSet] = []
    inputs: dict[str, str] = {}
    if cfg.wflw.root:
        stills, sbad, inputs = _wflw_input(cfg, out, base)
        bad += sbad
    return {"n_landmarks": 98, "stills": stills, "videos": videos, "bad": bad, "inputs": inputs}


# ---------------------------------------------------------------------------------------------- the stage
def prepare(params: Params | Mapping[str, Any], *, base_dir: PathLike | None = None, progress: bool = True) -> Prepared:
    """Run the prepare stage for ``params`` (a :class:`Params`, or a params mapping parsed by it); return what
    ``prepared.json`` holds.

    Relative paths in the settings are relative to ``base_dir`` (default: the params file's folder, else the
    current directory, the project root under DVC).
    """
    t0 = time.perf_counter()
    p = as_params(params)
    cfg = p.data
    base = Path(base_dir) if base_dir is not None else (p.base_dir or Path.cwd())
    out = Path(cfg.out)
    out = out if out.is_absolute() else base / out
    out.mkdir(parents=True, exist_ok=True)
    _clean_tmp(out)
    source = cfg.source
    if source == "synthetic":
        res = _prepare_synthetic(cfg, out, progress)
    elif source == "300w":
        res = _prepare_300w(cfg, out, base, progress)
    elif source == "wflw":
        stills, bad, inputs = _wflw_input(cfg, out, base)
        res = {"n_landmarks": 98, "stills": stills, "videos": [], "bad": bad, "inputs": inputs}
    else:
        res = _prepare_wflw_v(cfg, out, base, progress)
    # generated folders of other sources are stale; WFLW-V downloads are kept (expensive to redo)
    keep = {"synthetic": {"synthetic"}, "300w": {"300w_anim"}}.get(source, set())
    for name in ("synthetic", "300w_anim"):
        if name not in keep:
            shutil.rmtree(out / name, ignore_errors=True)
    counts: dict[str, int] = {}
    for group in (*res["stills"], *res["videos"]):
        for split, entry in group.splits.items():
            counts[split] = counts.get(split, 0) + len(entry["items"])
    if not counts:
        raise ValueError(f"data source {source!r}: no usable item (bad items: {res['bad'][:5]})")
    prep = Prepared(
        source=source,
        n_landmarks=res["n_landmarks"],
        stills=res["stills"],
        videos=res["videos"],
        bad_items=res["bad"],
        settings=data_affecting(cfg.to_dict()),
        settings_sha256=settings_hash(cfg.to_dict()),
        inputs=res["inputs"],
        counts=counts,
        path=out / PREPARED_NAME,
    )
    write_text_atomic(out / PREPARED_NAME, prep.to_json())
    if progress:
        print(
            f"prepare: {source}: {counts}, {len(prep.bad_items)} bad item(s) skipped, "
            f"{time.perf_counter() - t0:.1f} s -> {out / PREPARED_NAME}"
        )
    return prep


def prepare_from_params(params_path: PathLike = "params.yaml", *, progress: bool = True) -> Prepared:
    """``prepare`` with the settings of ``params_path``; relative paths resolve against the params file's folder
    (the project root for ``params.yaml``), as in the train stage."""
    return prepare(load_params(params_path), progress=progress)
