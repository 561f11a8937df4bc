"""Batch jobs: score many videos referenced by server-side path (under an allowed root) or fsspec URI.

``POST /v1/jobs`` body (JSON; unknown keys are rejected)::

    {"videos": [{"path": "clips/a.mp4", "boxes": "clips/a_boxes.npy", "landmarks": "clips/a_lm.npy", "id": "a"}],
     "folder": "wflw_v_root",            # optional: every videos/<id>.mp4 with bboxes/<id>.npy, landmarks/<id>.npy
     "options": {"mode": "rwr", "budget_nfe": 2, "filter": "none", "filter_params": {}}}

Paths are relative to ``jobs.allowed_root`` (absolute paths must lie inside it). A ``..`` component is rejected
(400 ``path_traversal``); a path that resolves outside the root, symlinks followed, is rejected (403
``path_outside_root``). URIs (``s3://bucket/key.mp4``) are read through fsspec when their protocol is listed in
``jobs.uri_protocols`` (and their prefix in ``jobs.uri_prefixes`` when set); ``file://`` URIs are local paths.

On disk, under ``jobs.jobs_dir/<job_id>/``: ``request.json`` (the resolved request), ``manifest.json`` (status,
progress, per-video status and errors, rewritten atomically after every change), ``results/<n>_<id>.parquet``
(one per scored video, written atomically), and ``lease.json`` while a replica runs the job. Status is always read
back from disk, so any replica (or a restarted service) answers ``GET /v1/jobs/{id}``; a job whose lease has not
been renewed for ``jobs.lease_s`` seconds (its replica died) is taken over and resumed by another replica, skipping
videos already done. A bad video fails that video only.

Parquet columns: ``frame`` (int32), ``landmarks`` (fixed-size list of 2L float64: x0, y0, x1, y1, ... in frame
pixels), ``nfe`` (int32), ``full_solve`` (bool), ``box_x1``, ``box_y1``, ``box_x2``, ``box_y2`` (float64),
``box_source`` (string). The schema metadata ``ldeq`` holds the video's JSON summary (metrics included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ldeq_core.fileio import atomic_path, write_text_atomic
from serve.errors import ServiceError, bad_request
from serve.inputs import parse_array
from serve.scoring import ScoreOptions, VideoJob, VideoScore, parse_options, service_error_from
from serve.settings import JobSettings

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ACTIVE = ("queued", "running")
MAX_SIDECAR_BYTES = 512 * 1024 * 1024

ScoreFn = Callable[[VideoJob, ScoreOptions], Awaitable[VideoScore]]


class JobVideo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    boxes: str | None = None
    landmarks: str | None = None
    id: str | None = None


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    videos: list[JobVideo] = []
    folder: str | None = None
    options: dict[str, Any] = {}


# ---------------------------------------------------------------------------------------------- path policy


def resolve_under_root(root: str | os.PathLike[str], ref: str, field: str) -> Path:
    """Resolve ``ref`` (relative to ``root``, or absolute) following symlinks; it must stay inside ``root``.

    400 ``path_traversal`` for a ``..`` component or an empty/NUL path, 403 ``path_outside_root`` for a path
    (or a symlink target) outside the root.
    """
    if not ref or "\x00" in ref:
        raise bad_request("invalid_path", f"{field}: empty or invalid path {ref!r}")
    if ".." in PurePosixPath(ref.replace("\\", "/")).parts:
        raise bad_request("path_traversal", f"{field}: '..' is not allowed in {ref!r}")
    root_r = Path(root).resolve()
    cand = Path(ref)
    resolved = (cand if cand.is_absolute() else root_r / cand).resolve()
    if not resolved.is_relative_to(root_r):
        raise ServiceError(
            403, "path_outside_root", f"{field}: {ref!r} resolves outside the allowed root (symlinks are followed)"
        )
    return resolved


def _protocol(ref: str) -> str | None:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", ref)
    return m.group(1).lower() if m else None


@dataclass(frozen=True)
class Source:
    """A checked reference: a local path inside the root, or an allowed fsspec URI."""

    kind: str  # "local" | "uri"
    location: str
    ref: str  # as the client wrote it (used in messages)

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "location": self.location, "ref": self.ref}


def check_source(ref: str, cfg: JobSettings, field: str) -> Source:
    """Apply the path/URI policy to one reference."""
    proto = _protocol(ref)
    if proto in ("file", "local"):
        inner = check_source(ref.split("://", 1)[1], cfg, field)
        return Source(inner.kind, inner.location, ref)
    if proto is not None:
        if proto not in cfg.uri_protocols:
            raise ServiceError(403, "uri_not_allowed", f"{field}: URI protocol {proto!r} is not enabled ({ref!r})")
        if ".." in PurePosixPath(ref.split("://", 1)[1]).parts:
            raise bad_request("path_traversal", f"{field}: '..' is not allowed in {ref!r}")
        if cfg.uri_prefixes and not any(ref.startswith(p) for p in cfg.uri_prefixes):
            raise ServiceError(403, "uri_not_allowed", f"{field}: {ref!r} is outside the allowed URI prefixes")
        return Source("uri", ref, ref)
    if cfg.allowed_root is None:
        raise ServiceError(403, "jobs_disabled", f"{field}: no jobs.allowed_root is configured for local paths")
    return Source("local", str(resolve_under_root(cfg.allowed_root, ref, field)), ref)


def _fs_for(src: Source, cfg: JobSettings) -> tuple[Any, str]:
    import fsspec

    if src.kind == "local":
        return fsspec.filesystem("file"), src.location
    proto = _protocol(src.location) or "file"
    fs, path = fsspec.core.url_to_fs(src.location, **cfg.storage_options.get(proto, {}))
    return fs, path


def expand_folder(ref: str, cfg: JobSettings) -> list[JobVideo]:
    """The clips of a WFLW-V-layout folder (``videos/<id>.mp4`` + optional ``bboxes/`` and ``landmarks/``)."""
    src = check_source(ref, cfg, "folder")
    fs, base = _fs_for(src, cfg)
    vids = f"{base.rstrip('/')}/videos"
    if not fs.isdir(vids):
        raise ServiceError(404, "not_found", f"folder: {ref!r} has no videos/ sub-folder (WFLW-V layout expected)")
    out: list[JobVideo] = []
    for entry in sorted(fs.ls(vids, detail=False)):
        name = PurePosixPath(str(entry)).name
        if name.startswith(".") or not name.endswith(".mp4"):
            continue
        vid = name[: -len(".mp4")]
        root_ref = ref.rstrip("/")
        item = JobVideo(path=f"{root_ref}/videos/{name}", id=vid)
        for sub, key in (("bboxes", "boxes"), ("landmarks", "landmarks")):
            if fs.exists(f"{base.rstrip('/')}/{sub}/{vid}.npy"):
                setattr(item, key, f"{root_ref}/{sub}/{vid}.npy")
        out.append(item)
    if not out:
        raise ServiceError(422, "no_videos", f"folder: {ref!r} has no videos/*.mp4")
    return out


def fetch_to_file(src: Source, cfg: JobSettings, dst_dir: str, max_bytes: int) -> Path:
    """A local file with the content of ``src``: the path itself (re-checked), or a download into ``dst_dir``."""
    if src.kind == "local":
        path = Path(check_source(src.ref, cfg, "path").location)  # re-check: a symlink may have changed
        if not path.is_file():
            raise ServiceError(404, "not_found", f"{src.ref}: file not found")
        if path.stat().st_size > max_bytes:
            raise ServiceError(413, "payload_too_large", f"{src.ref}: larger than {max_bytes} bytes")
        return path
    fs, remote = _fs_for(src, cfg)
    if not fs.exists(remote):
        raise ServiceError(404, "not_found", f"{src.ref}: object not found")
    dst = Path(dst_dir) / f"{uuid.uuid4().hex}{PurePosixPath(remote).suffix[:8]}"
    total = 0
    with fs.open(remote, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise ServiceError(413, "payload_too_large", f"{src.ref}: larger than {max_bytes} bytes")
            fout.write(chunk)
    return dst


def load_sidecar(src: Source, cfg: JobSettings, field: str) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="ldeq-side-") as tmp:
        path = fetch_to_file(src, cfg, tmp, MAX_SIDECAR_BYTES)
        return parse_array(path.read_bytes(), src.ref, field)


# ---------------------------------------------------------------------------------------------- results


def write_results_parquet(path: Path, score: VideoScore) -> None:
    """One video's per-frame results as Parquet, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t, n_lmk = score.landmarks.shape[:2]
    flat = pa.array(np.ascontiguousarray(score.landmarks, dtype=np.float64).reshape(-1))
    table = pa.table(
        {
            "frame": pa.array(np.arange(t, dtype=np.int32)),
            "landmarks": pa.FixedSizeListArray.from_arrays(flat, 2 * n_lmk),
            "nfe": pa.array(score.nfe.astype(np.int32)),
            "full_solve": pa.array(score.full_solve.astype(bool)),
            "box_x1": pa.array(score.boxes[:, 0]),
            "box_y1": pa.array(score.boxes[:, 1]),
            "box_x2": pa.array(score.boxes[:, 2]),
            "box_y2": pa.array(score.boxes[:, 3]),
            "box_source": pa.array(score.box_source, pa.string()),
        }
    )
    table = table.replace_schema_metadata({"ldeq": json.dumps(score.summary())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_results_parquet(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a result file back: ``landmarks`` (T, L, 2) and the other columns as arrays, plus ``summary``."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    summary = json.loads(table.schema.metadata[b"ldeq"])
    n_lmk = int(summary["n_landmarks"])
    out: dict[str, Any] = {c: table.column(c).to_numpy() for c in table.column_names if c != "landmarks"}
    flat = table.column("landmarks").combine_chunks().flatten().to_numpy()
    out["landmarks"] = flat.reshape(len(table), n_lmk, 2)
    out["summary"] = summary
    return out


# ---------------------------------------------------------------------------------------------- manager


def _now() -> float:
    return round(time.time(), 3)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "video"


class JobManager:
    """Creates, runs, resumes and reports jobs; all state lives in ``jobs_dir``."""

    def __init__(self, cfg: JobSettings, score: ScoreFn, owner: str, model_info: dict[str, Any]) -> None:
        self.cfg = cfg
        self.score = score
        self.owner = owner
        self.model_info = model_info
        self.root = Path(cfg.jobs_dir)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._scanner: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------------------------------- requests
    def prepare(self, body: dict[str, Any]) -> str:
        """Validate a job request, write it to disk and claim its lease; returns the job id (then call ``start``).

        Blocking (file system, folder listing): run it in a thread.
        """
        try:
            req = JobRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                raise bad_request("unknown_option", f"job request: unknown field {loc!r}") from None
            raise bad_request("invalid_request", f"job request: {loc}: {err['msg']}") from None
        opts = parse_options(req.options, "options")
        items = list(req.videos)
        if req.folder is not None:
            items += expand_folder(req.folder, self.cfg)
        if not items:
            raise ServiceError(422, "no_videos", "job request: give 'videos' and/or a 'folder'")
        if len(items) > self.cfg.max_videos_per_job:
            raise ServiceError(
                413, "too_many_videos", f"job request: {len(items)} videos > {self.cfg.max_videos_per_job}"
            )
        videos = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            entry: dict[str, Any] = {"index": i}
            for key in ("path", "boxes", "landmarks"):
                ref = getattr(item, key)
                entry[key] = None if ref is None else check_source(ref, self.cfg, f"videos[{i}].{key}").to_json()
            vid = item.id or PurePosixPath(item.path.split("://")[-1]).stem
            base, k = _safe(vid), 1
            while base in seen:
                base, k = f"{_safe(vid)}_{k}", k + 1
            seen.add(base)
            entry.update(id=base, status="pending", error=None, result=None, summary=None)
            videos.append(entry)
        job_id = uuid.uuid4().hex
        jdir = self.root / job_id
        (jdir / "results").mkdir(parents=True, exist_ok=False)
        write_text_atomic(jdir / "request.json", json.dumps({"options": opts.model_dump(), "videos": videos}))
        manifest = {
            "job_id": job_id,
            "status": "queued",
            "created": _now(),
            "updated": _now(),
            "model": self.model_info,
            "options": opts.model_dump(),
            "progress": {"videos_total": len(videos), "videos_done": 0, "videos_failed": 0, "frames_done": 0},
            "videos": videos,
        }
        self._write_manifest(job_id, manifest)
        if not self._claim(job_id, stale_only=False):
            raise ServiceError(500, "internal_error", f"job {job_id}: could not claim its lease")
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's manifest as stored on disk (404 if unknown)."""
        if not JOB_ID.match(job_id):
            raise ServiceError(404, "job_not_found", f"job {job_id!r}: not a job id")
        path = self.root / job_id / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ServiceError(404, "job_not_found", f"job {job_id}: no such job") from None
        return self._public(manifest)

    def _public(self, manifest: dict[str, Any]) -> dict[str, Any]:
        out = dict(manifest)
        out["manifest_path"] = str(self.root / manifest["job_id"] / "manifest.json")
        return out

    # ---------------------------------------------------------------------------------------- leases
    def _lease(self, job_id: str) -> Path:
        return self.root / job_id / "lease.json"

    def _claim(self, job_id: str, stale_only: bool = True) -> bool:
        """Take the job's lease: create it, or replace one not renewed for ``lease_s``. True if we own it now."""
        lease = self._lease(job_id)
        if lease.exists():
            if not stale_only:
                return False
            try:
                age = time.time() - lease.stat().st_mtime
            except FileNotFoundError:
                age = None
            if age is not None:
                if age < self.cfg.lease_s:
                    return False
                grave = lease.with_name(f".lease.stale.{uuid.uuid4().hex}")
                try:
                    os.rename(lease, grave)  # only one claimant wins the rename
                except FileNotFoundError:
                    return False
                grave.unlink(missing_ok=True)
        try:
            fd = os.open(lease, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump({"owner": self.owner, "claimed": _now()}, fh)
        return True

    def _owns(self, job_id: str) -> bool:
        try:
            return json.loads(self._lease(job_id).read_text())["owner"] == self.owner
        except (OSError, ValueError, KeyError):
            return False

    async def _heartbeat(self, job_id: str, task: asyncio.Task[None]) -> None:
        while not task.done():
            await asyncio.sleep(self.cfg.lease_s / 4)
            if not self._owns(job_id):
                task.cancel()  # another replica took the job over (we stalled): stop writing
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self._lease(job_id))

    # ---------------------------------------------------------------------------------------- running
    def ensure_background(self) -> None:
        """Start the orphan scanner (idempotent); call from the event loop."""
        if self._scanner is None or self._scanner.done():
            self._scanner = asyncio.get_running_loop().create_task(self._scan_loop(), name="ldeq-job-scanner")

    async def _scan_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
                for jdir in await asyncio.to_thread(lambda: sorted(self.root.iterdir())):
                    job_id = jdir.name
                    if not JOB_ID.match(job_id) or job_id in self._running:
                        continue
                    try:
                        status = json.loads((jdir / "manifest.json").read_text(encoding="utf-8"))["status"]
                    except (OSError, ValueError, KeyError):
                        continue
                    if status in ACTIVE and self._claim(job_id):
                        self.start(job_id)
            except Exception:  # never let the scanner die
                pass
            await asyncio.sleep(max(0.5, self.cfg.lease_s / 2))

    def start(self, job_id: str) -> None:
        """Run a claimed job in the background (call from the event loop)."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(job_id), name=f"ldeq-job-{job_id}")
        self._running[job_id] = task
        hb = loop.create_task(self._heartbeat(job_id, task))
        task.add_done_callback(lambda _t: (self._running.pop(job_id, None), hb.cancel()))

    def _write_manifest(self, job_id: str, manifest: dict[str, Any]) -> None:
        manifest["updated"] = _now()
        write_text_atomic(self.root / job_id / "manifest.json", json.dumps(manifest, indent=1))

    def _read_manifest(self, job_id: str) -> dict[str, Any]:
        return json.loads((self.root / job_id / "manifest.json").read_text(encoding="utf-8"))

    async def _run(self, job_id: str) -> None:
        lock = self._locks.setdefault(job_id, asyncio.Lock())
        manifest = self._read_manifest(job_id)
        opts = ScoreOptions.model_validate(manifest["options"])
        manifest["status"] = "running"
        manifest.setdefault("runs", []).append({"owner": self.owner, "started": _now()})
        for v in manifest["videos"]:
            if v["status"] == "running":  # interrupted by a dead replica: redo it
                v["status"] = "pending"
        self._write_manifest(job_id, manifest)
        sem = asyncio.Semaphore(self.cfg.video_concurrency)

        async def one(v: dict[str, Any]) -> None:
            async with sem:
                async with lock:
                    v["status"] = "running"
                    self._write_manifest(job_id, manifest)
                result = await self._process(job_id, v, opts)
                async with lock:
                    v.update(result)
                    prog = manifest["progress"]
                    if v["status"] == "done":
                        prog["videos_done"] += 1
                        prog["frames_done"] += int(v["summary"]["n_frames"])
                    else:
                        prog["videos_failed"] += 1
                    self._write_manifest(job_id, manifest)

        try:
            await asyncio.gather(*(one(v) for v in manifest["videos"] if v["status"] == "pending"))
            async with lock:
                ok = any(v["status"] == "done" for v in manifest["videos"])
                manifest["status"] = "done" if ok else "failed"
                manifest["finished"] = _now()
                self._write_manifest(job_id, manifest)
            if self._owns(job_id):
                self._lease(job_id).unlink(missing_ok=True)
        finally:
            self._locks.pop(job_id, None)

    async def _process(self, job_id: str, v: dict[str, Any], opts: ScoreOptions) -> dict[str, Any]:
        src = Source(**v["path"])
        try:
            with tempfile.TemporaryDirectory(prefix="ldeq-job-") as tmp:
                path = await asyncio.to_thread(fetch_to_file, src, self.cfg, tmp, self.cfg.max_video_bytes)
                boxes = gt = None
                if v["boxes"]:
                    boxes = await asyncio.to_thread(load_sidecar, Source(**v["boxes"]), self.cfg, "boxes")
                if v["landmarks"]:
                    gt = await asyncio.to_thread(load_sidecar, Source(**v["landmarks"]), self.cfg, "landmarks")
                job = VideoJob(
                    src.ref,
                    path,
                    boxes,
                    gt,
                    boxes_name=(v["boxes"] or {}).get("ref"),
                    gt_name=(v["landmarks"] or {}).get("ref"),
                )
                score = await self.score(job, opts)
            out = self.root / job_id / "results" / f"{v['index']:05d}_{v['id']}.parquet"
            await asyncio.to_thread(write_results_parquet, out, score)
            return {"status": "done", "error": None, "result": str(out), "summary": score.summary()}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = service_error_from(exc, src.ref)
            return {"status": "failed", "error": {**err.body(), "status": err.status}, "result": None}
