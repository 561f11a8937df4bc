"""The ``preprocess`` stage: ``data/raw`` (``prepared.json``) -> 256x256 face-crop Parquet shards, with Ray Data.

Work items: chunks of ``stills_per_task`` stills, or one whole video (so each video is decoded once and
then flat-mapped into its frames). A Ray Data job (``from_items`` -> ``map_batches`` on a task pool,
``num_cpus=0.5`` per task, one task per CPU of the cluster) decodes and crops: precropped WFLW stills
keep an identity affine (box = the whole 256x256 image), 300-W stills are cut around their landmark box
grown by ``box_expand``, video frames around their annotated box, all with
``ldeq_core.geometry.crop_face`` (spec §5.4); landmarks are mapped with the same affine.

Determinism: work items are sorted by (split, dataset, source_id), the job preserves order, and the
driver writes the rows of each split in that order with ``pipelines.shards.ShardWriter`` (fixed file
names, row groups and encoders): the same input gives byte-identical shard files. The driver writes the
files itself, so the output lands in the local workspace even when the work runs on a cluster
(``RAY_ADDRESS``; every node must then see the input paths and have the ``ldeq`` package installed).
Everything is written to a temporary folder next to the output, which then replaces it.

A bad item (unreadable image or video, truncated video, NaN landmarks, empty box, frame-count mismatch)
is skipped and listed with its reason in ``<out>/report.json``, next to the ones prepare skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ldeq_core.geometry import apply_affine, crop_face, landmarks_to_box, validate_box
from ldeq_shared.errors import DataError
from ldeq_shared.params import Params, PreprocessSettings, as_params, load_params
from ldeq_shared.prepared import Prepared, load_prepared
from ldeq_shared.ray_session import start_or_attach
from ldeq_shared.video_io import iter_frames
from ldeq_shared.wflw_v import load_wflw_v_clip
from pipelines.formats.w300 import scan_300w
from pipelines.formats.wflw import scan_wflw
from pipelines.shards import (
    CROP_SIZE,
    JPEG_QUALITY,
    SCHEMA,
    SCHEMA_VERSION,
    STILL_FRAME_INDEX,
    ShardWriter,
    encode_image,
    image_codec_of,
    make_row,
)

REPORT_NAME = "report.json"
CPUS_PER_TASK = 0.5
IDENTITY_AFFINE = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
FULL_CROP_BOX = np.array([0.0, 0.0, float(CROP_SIZE), float(CROP_SIZE)])
_OUT_SCHEMA = SCHEMA.append(pa.field("_bad", pa.string()))
PathLike = str | os.PathLike[str]


def preprocess_settings(params: Params | Mapping[str, Any], where: str = "params.yaml") -> PreprocessSettings:
    """The typed ``preprocess`` section of ``params`` (a :class:`Params`, or a mapping parsed by it)."""
    return as_params(params, where).preprocess


def expand_box(box: np.ndarray, factor: float) -> np.ndarray:
    """(x1, y1, x2, y2) scaled by ``factor`` about its centre."""
    b = np.asarray(box, dtype=np.float64)
    c, half = (b[:2] + b[2:]) / 2.0, (b[2:] - b[:2]) / 2.0 * factor
    return np.concatenate([c - half, c + half])


# ------------------------------------------------------------------------------------------ work items
def _bad_record(dataset: str, split: str, item: str, path: str, reason: str) -> dict[str, str]:
    return {"stage": "preprocess", "dataset": dataset, "split": split, "item": item, "path": path, "reason": reason}


def _still_specs(prep: Prepared, cfg: PreprocessSettings) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """One spec per still (absolute image path, landmarks in source pixels, crop box or None)."""
    specs: list[dict[str, Any]] = []
    bad: list[dict[str, str]] = []
    for group in prep.stills:
        root = prep.resolve(group.root)
        for split, entry in group.splits.items():
            wanted = list(entry["items"])
            if group.format == "wflw":
                found, skipped = scan_wflw(root, entry["source_split"], check_images=False)
                by_name = {f.relpath: (f.image_path, f.landmarks, None) for f in found}
            elif group.format == "300w":
                subsets = sorted({n.split("/", 1)[0] for n in wanted if "/" in n}) or None
                found3, skipped = scan_300w(root, subsets, check_images=False)
                by_name = {
                    f.name: (
                        f.image_path,
                        f.landmarks,
                        expand_box(landmarks_to_box(f.landmarks), float(cfg.box_expand)),
                    )
                    for f in found3
                }
            else:
                raise ValueError(f"{prep.path}: unknown still format {group.format!r}")
            for name in wanted:
                if name not in by_name:  # listed by prepare, bad now: report it once, under its name
                    why = next((b for b in skipped if b.item == name or f"({name!r})" in b.reason), None)
                    bad.append(
                        _bad_record(
                            group.dataset,
                            split,
                            name,
                            why.path if why else os.fspath(root),
                            why.reason if why else "no longer in the annotations",
                        )
                    )
                    continue
                path, lm, box = by_name[name]
                specs.append(
                    {
                        "kind": "still",
                        "dataset": group.dataset,
                        "split": split,
                        "source_id": name,
                        "path": os.fspath(path),
                        "landmarks": np.asarray(lm, np.float64).tolist(),
                        "box": None if box is None else box.tolist(),
                    }
                )
    return specs, bad


def build_tasks(prep: Prepared, cfg: PreprocessSettings) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Sorted work items: chunks of ``stills_per_task`` stills of one (split, dataset), and single videos."""
    stills, bad = _still_specs(prep, cfg)
    videos = [
        {
            "kind": "video",
            "dataset": g.dataset,
            "split": split,
            "source_id": vid,
            "root": os.fspath(prep.resolve(g.root)),
        }
        for g in prep.videos
        for split, entry in g.splits.items()
        for vid in entry["items"]
    ]
    common = {"codec": cfg.image_codec, "quality": cfg.jpeg_quality, "n_landmarks": prep.n_landmarks}
    units = sorted([*stills, *videos], key=lambda s: (s["split"], s["dataset"], s["source_id"]))
    tasks: list[dict[str, Any]] = []
    for spec in units:
        if spec["kind"] == "video":
            tasks.append({**common, "kind": "video", "items": [spec]})
            continue
        last = tasks[-1] if tasks else None
        if (
            last is not None
            and last["kind"] == "stills"
            and len(last["items"]) < cfg.stills_per_task
            and (last["items"][-1]["split"], last["items"][-1]["dataset"]) == (spec["split"], spec["dataset"])
        ):
            last["items"].append(spec)
        else:
            tasks.append({**common, "kind": "stills", "items": [spec]})
    return tasks, bad


# ------------------------------------------------------------------------------------- item processing
def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read image ({err.__class__.__name__})") from None


def process_still(spec: Mapping[str, Any], codec: str, n_landmarks: int, quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """Crop one still; return its shard row. ``ValueError`` (``DataError``) for a bad item."""
    path = spec["path"]
    lm = np.asarray(spec["landmarks"], dtype=np.float64)
    if lm.shape != (n_landmarks, 2):
        raise DataError(path, f"expected ({n_landmarks}, 2) landmarks, got shape {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise DataError(path, "NaN or inf landmark coordinate")
    data = _read_bytes(path)
    if spec["box"] is None:  # precropped 256x256 (WFLW layout): identity affine
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise DataError(path, "image cannot be decoded")
        if img.shape != (CROP_SIZE, CROP_SIZE, 3) or img.dtype != np.uint8:
            raise DataError(
                path, f"precropped image must be {CROP_SIZE}x{CROP_SIZE} 8-bit RGB, got {img.shape} {img.dtype}"
            )
        same_codec = image_codec_of(data) == codec  # precropped files keep their bytes
        encoded = data if same_codec else encode_image(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), codec, quality)
        affine, box, crop_lm = IDENTITY_AFFINE, FULL_CROP_BOX, lm
    else:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(path, "image cannot be decoded")
        box = np.asarray(spec["box"], dtype=np.float64)
        validate_box(box, (img.shape[1], img.shape[0]), name=f"{path}: box")
        crop, affine = crop_face(img, box)
        encoded, crop_lm = encode_image(crop, codec, quality), apply_affine(affine, lm)
    return make_row(
        encoded,
        crop_lm,
        affine,
        box,
        source_id=spec["source_id"],
        frame_index=STILL_FRAME_INDEX,
        split=spec["split"],
        dataset=spec["dataset"],
    )


def process_video(
    spec: Mapping[str, Any], codec: str, n_landmarks: int, quality: int = JPEG_QUALITY
) -> list[dict[str, Any]]:
    """Decode one video once and crop every frame; return its rows in frame order (``DataError`` if bad)."""
    clip = load_wflw_v_clip(spec["root"], spec["source_id"], n_points=n_landmarks, decode=False, require_boxes=False)
    n = len(clip.landmarks)
    rows: list[dict[str, Any]] = []
    for t, frame in enumerate(iter_frames(clip.path, strict=True)):
        if t >= n:
            raise DataError(clip.path, f"video has more frames than its {n} annotated frames")
        crop, affine = crop_face(frame, clip.boxes[t])
        rows.append(
            make_row(
                encode_image(crop, codec, quality),
                apply_affine(affine, clip.landmarks[t]),
                affine,
                clip.boxes[t],
                source_id=clip.id,
                frame_index=t,
                split=spec["split"],
                dataset=spec["dataset"],
            )
        )
    if len(rows) != n:
        raise DataError(clip.path, f"decoded {len(rows)} frames but the annotations have {n}")
    return rows


def _bad_row(spec: Mapping[str, Any], err: Exception) -> dict[str, Any]:
    path = getattr(err, "path", spec.get("path") or spec.get("root", ""))
    reason = getattr(err, "reason", f"{err.__class__.__name__}: {err}")
    record = _bad_record(spec["dataset"], spec["split"], spec["source_id"], os.fspath(path), reason)
    return {
        "image": b"",
        "landmarks": [],
        "affine": [],
        "box": [],
        "source_id": spec["source_id"],
        "frame_index": STILL_FRAME_INDEX,
        "split": spec["split"],
        "dataset": spec["dataset"],
        "n_landmarks": 0,
        "schema_version": SCHEMA_VERSION,
        "_bad": json.dumps(record),
    }


def run_task(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of one work item; a bad still or video gives one row whose ``_bad`` holds its report record."""
    rows: list[dict[str, Any]] = []
    for spec in task["items"]:
        try:
            if task["kind"] == "video":
                got = process_video(spec, task["codec"], task["n_landmarks"], task.get("quality", JPEG_QUALITY))
            else:
                got = [process_still(spec, task["codec"], task["n_landmarks"], task.get("quality", JPEG_QUALITY))]
        except (ValueError, OSError, cv2.error) as err:
            rows.append(_bad_row(spec, err))
        else:
            rows.extend({**r, "_bad": None} for r in got)
    return rows


def process_task_batch(batch: pa.Table) -> pa.Table:
    """Ray Data UDF: a batch of JSON work items -> their rows (shard columns + ``_bad``)."""
    cv2.setNumThreads(1)
    rows: list[dict[str, Any]] = []
    for payload in batch.column("task").to_pylist():
        rows.extend(run_task(json.loads(payload)))
    return pa.Table.from_pylist(rows, schema=_OUT_SCHEMA)


# ------------------------------------------------------------------------------------------- the job
def _start_ray(cfg: PreprocessSettings) -> tuple[bool, str]:
    """Use the running Ray, or connect to ``RAY_ADDRESS``, or start a local cluster; (started, address)."""
    session = start_or_attach(
        num_cpus=cfg.num_cpus or os.cpu_count() or 1,
        object_store_mb=int(cfg.object_store_mb),
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    return session.owned, session.label


def _run_job(tasks: Sequence[Mapping[str, Any]], cfg: PreprocessSettings) -> Iterator[pa.Table]:
    """Run the Ray Data job; yield its output tables in work-item order."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = bool(cfg.progress)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = int(cfg.concurrency or cpus)
        ds = ray.data.from_items([{"task": json.dumps(t)} for t in tasks], override_num_blocks=len(tasks))
        ds = ds.map_batches(
            process_task_batch,
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=CPUS_PER_TASK,
            compute=ray.data.TaskPoolStrategy(size=size),
        )
        yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def _finish(
    tmp: Path,
    writers: Mapping[str, ShardWriter],
    kinds: Mapping[str, str],
    bad: list[dict[str, str]],
    prep: Prepared,
    cfg: PreprocessSettings,
    tasks: Sequence[Any],
    address: str,
    cpus: int,
    t0: float,
    t_job: float,
) -> dict[str, Any]:
    """Close the split writers and write ``report.json`` into ``tmp``; return the report."""
    splits: dict[str, Any] = {}
    for split in sorted(writers):
        files = writers[split].close()
        splits[split] = {
            "kind": kinds.get(split, "stills"),
            "rows": sum(f.rows for f in files),
            "sources": sum(f.sources for f in files),
            "files": [{"name": f.path.name, "rows": f.rows, "sha256": f.sha256} for f in files],
        }
    if not splits:
        raise ValueError(f"{prep.path}: every item was bad, no shard written (first: {bad[:3]})")
    rows = sum(s["rows"] for s in splits.values())
    wall, job = time.perf_counter() - t0, time.perf_counter() - t_job
    report = {
        "schema_version": SCHEMA_VERSION,
        "source": prep.source,
        "n_landmarks": prep.n_landmarks,
        "image_codec": cfg.image_codec,
        "jpeg_quality": cfg.jpeg_quality,
        "splits": splits,
        "rows": rows,
        "bad_items": [*prep.bad_items, *bad],
        "n_bad_items": len(prep.bad_items) + len(bad),
        "wall_seconds": round(wall, 2),
        "job_seconds": round(job, 2),
        "rows_per_second": round(rows / job, 1),
        "ray": {
            "address": address,
            "cluster_cpus": cpus,
            "cpus_per_task": CPUS_PER_TASK,
            "concurrency": int(cfg.concurrency or cpus),
            "tasks": len(tasks),
        },
        "settings": cfg.to_dict(),
    }
    (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def run_preprocess(
    raw_dir: PathLike, out_dir: PathLike, settings: PreprocessSettings | Mapping[str, Any]
) -> dict[str, Any]:
    """Build the shards of ``raw_dir``'s ``prepared.json`` into ``out_dir`` (replaced atomically).

    ``settings`` is a merged ``preprocess`` section (``preprocess_settings``). Returns the report, which is
    also written to ``<out_dir>/report.json``.
    """
    import ray

    t0 = time.perf_counter()
    cfg = settings if isinstance(settings, PreprocessSettings) else preprocess_settings({"preprocess": settings})
    prep = load_prepared(raw_dir)
    tasks, bad = build_tasks(prep, cfg)
    if not tasks:
        raise ValueError(f"{prep.path}: nothing to preprocess ({len(bad)} bad item(s))")
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".tmp-{out.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    kinds = {t["items"][0]["split"]: ("video" if t["kind"] == "video" else "stills") for t in tasks}
    writers: dict[str, ShardWriter] = {}
    started, address = _start_ray(cfg)
    t_job = time.perf_counter()
    bar = None
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(desc="preprocess", unit="rows")
        for table in _run_job(tasks, cfg):
            bad_col = table.column("_bad")
            for rec in bad_col.drop_null().to_pylist():
                bad.append(json.loads(rec))
            good = table.filter(bad_col.is_null()).drop(["_bad"])
            for split in dict.fromkeys(good.column("split").to_pylist()):
                if split not in writers:
                    writers[split] = ShardWriter(
                        tmp / split,
                        rows_per_shard=cfg.rows_per_shard,
                        row_group_size=cfg.row_group_size,
                        keep_sources_together=kinds.get(split) == "video",
                    )
                writers[split].write(good.filter(pc.equal(good.column("split"), split)))
            if bar is not None:
                bar.update(good.num_rows)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        if started:
            ray.shutdown()
    try:
        report = _finish(tmp, writers, kinds, bad, prep, cfg, tasks, address, cpus, t0, t_job)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".tmp-{out.name}-old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return report


def preprocess_from_params(params_path: PathLike = "params.yaml") -> dict[str, Any]:
    """``run_preprocess`` with ``data.out`` as input and the ``preprocess`` section of ``params_path``."""
    params = load_params(params_path)  # relative paths are relative to the params file's folder
    return run_preprocess(params.resolve(params.data.out), params.resolve(params.preprocess.out), params.preprocess)
