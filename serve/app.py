"""The HTTP service: a FastAPI ingress on a Ray Serve deployment (OpenAPI schema at ``/openapi.json``).

Routes: ``POST /v1/score`` (multipart upload of videos), ``POST /v1/jobs`` + ``GET /v1/jobs/{id}`` (batch jobs over
server-side files, see serve/jobs.py), ``GET /v1/model``, ``GET /healthz``. Every rejection is a 4xx with a JSON body
``{"error": code, "detail": message}`` naming the file or field; 5xx bodies have the same shape.

Serve entry points: ``serve run serve/config.yaml`` / ``serve deploy serve/config.yaml`` (import path
``serve.app:build_app``, args ``params_file``, ``settings``, ``base_dir``) and ``ldeq serve``.

No ``from __future__ import annotations`` here: FastAPI must see real annotations on the Serve ingress methods.
"""

import asyncio
import hmac
import io
import json
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, cast

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application, Deployment
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ldeq_core.filters import FILTER_NAMES, FILTERS
from serve import runtime
from serve.batching import FrameBatcher
from serve.errors import ServiceError, bad_request, unprocessable
from serve.inputs import parse_array
from serve.jobs import JobManager
from serve.model_source import UNTRAINED_WARNING, LoadedModel, load_model
from serve.scoring import (
    ScoreOptions,
    VideoJob,
    VideoScore,
    parse_options,
    rwr_config,
    score_video,
    validate_video,
)
from serve.settings import ServeSettings, load_settings

PUBLIC_PATHS = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
log = logging.getLogger("ray.serve")
SCORE_FIELDS = ("videos", "boxes", "landmarks", "mode", "budget_nfe", "filter", "filter_params", "output")
OPTION_FIELDS = ("mode", "budget_nfe", "filter", "filter_params", "output")
MAX_JSON_BODY = 4 * 1024 * 1024
MAX_TEXT_PART = 32 * 1024 * 1024  # JSON boxes/landmarks sent as text fields (prefer .npy file parts)

api = FastAPI(
    title="ldeq: stable video facial landmarks (LDEQ + RwR)",
    version="1.0",
    description="Post videos, get per-frame facial landmarks in original-frame pixels. Errors: "
    '`{"error": code, "detail": message}`. Auth: `Authorization: Bearer <token>` when the service has a token.',
)


def _filter_params_doc() -> str:
    """OpenAPI text of ``filter_params``: every registered filter's parameters and defaults."""
    parts = [
        f"{json.dumps(spec.defaults())} ({name}{'; freq defaults to the video fps' if spec.needs_freq else ''})"
        for name, spec in FILTERS.items()
        if spec.params
    ]
    return "JSON object of the filter's parameters; defaults: " + ", ".join(parts)


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Bearer-token check and request-body size limit, both before the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = runtime.STATE.token
        if token and path not in PUBLIC_PATHS:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                detail = "Authorization header: missing bearer token" if not auth else "Authorization: invalid token"
                await _error(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = runtime.STATE.settings.limits.max_upload_bytes if path == "/v1/score" else MAX_JSON_BODY
        length = headers.get("content-length")
        if length is None and path == "/v1/score":
            await _error(411, "length_required", "Content-Length header: required for uploads")(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > limit):
            detail = f"request body: {length} bytes exceed the limit of {limit} bytes"
            await _error(413, "payload_too_large", detail)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                detail = f"request body: more than {limit} bytes"
                await _error(413, "payload_too_large", detail)(scope, receive, send)


api.add_middleware(GuardMiddleware)


@api.exception_handler(ServiceError)
async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    return _error(exc.status, exc.code, exc.detail, exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return _error(422, "invalid_request", f"{loc}: {err.get('msg')}")


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


_ARRAY_PART = {"type": "string", "format": "binary", "description": ".npy file or JSON text"}
SCORE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["videos"],
                    "properties": {
                        "videos": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more video files (mp4/mov/mkv/webm/avi; checked from the bytes)",
                        },
                        "boxes": {
                            "type": "array",
                            "items": _ARRAY_PART,
                            "description": "optional per-video boxes (T, 4) x1, y1, x2, y2 in frame pixels, one per "
                            "frame; matched to videos by file stem (a.npy -> a.mp4), else by order. A JSON text "
                            "field may also map video file names to box lists. Without boxes the Haar detector "
                            "+ landmark tracking is used.",
                        },
                        "landmarks": {
                            "type": "array",
                            "items": _ARRAY_PART,
                            "description": "optional ground truth (T, L, 2) frame pixels; matched like boxes; "
                            "enables NME/NMF in the response",
                        },
                        "mode": {"type": "string", "enum": ["rwr", "per_frame"]},
                        "budget_nfe": {"type": "integer", "minimum": 1, "maximum": 64},
                        "filter": {"type": "string", "enum": list(FILTER_NAMES)},
                        "filter_params": {"type": "string", "description": _filter_params_doc()},
                        "output": {"type": "string", "enum": ["json", "npz"], "default": "json"},
                    },
                }
            }
        },
    }
}
JOBS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "videos": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["path"],
                                "properties": {
                                    "path": {"type": "string"},
                                    "boxes": {"type": "string"},
                                    "landmarks": {"type": "string"},
                                    "id": {"type": "string"},
                                },
                            },
                        },
                        "folder": {"type": "string", "description": "WFLW-V layout folder under the allowed root"},
                        "options": {"type": "object"},
                    },
                }
            }
        },
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, "content": {"application/json": {"example": {"error": "code", "detail": "message"}}}}
    for code, desc in (
        (400, "bad request (unknown/invalid option, path traversal)"),
        (401, "missing or invalid bearer token"),
        (403, "path or URI not allowed"),
        (404, "not found"),
        (413, "upload, resolution or frame count over the limits"),
        (415, "unsupported container or codec"),
        (422, "invalid video, boxes or landmarks; no face detected"),
        (503, "replica busy"),
        (504, "request timeout"),
    )
}


def _stem(name: str) -> str:
    return PurePosixPath(name).stem


def match_parts(parts: list[Any], video_names: list[str], field: str) -> list[tuple[str, bytes] | None]:
    """Assign ``boxes``/``landmarks`` parts to videos: by file stem, by JSON object key, else by order."""
    named: list[tuple[str | None, str, bytes]] = []  # (match key or None, label, data)
    for k, part in enumerate(parts):
        if isinstance(part, UploadFile):
            label = part.filename or f"{field}[{k}]"
            named.append((_stem(part.filename) if part.filename else None, label, part.file.read()))
            continue
        text = str(part)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            raise unprocessable(f"invalid_{field}", f"{field}[{k}]: text field is not JSON") from None
        if isinstance(doc, dict):
            for key, value in doc.items():
                named.append((_stem(key), f"{field}[{key!r}]", json.dumps(value).encode()))
        else:
            named.append((None, f"{field}[{k}]", text.encode()))
    out: list[tuple[str, bytes] | None] = [None] * len(video_names)
    stems = [_stem(n) for n in video_names]
    positional = []
    for key, label, data in named:
        hits = [i for i, s in enumerate(stems) if key is not None and s == key and out[i] is None]
        if hits:
            out[hits[0]] = (label, data)
        elif key is not None and label.startswith(f"{field}['"):
            raise unprocessable(f"invalid_{field}", f"{label}: no uploaded video has this name")
        else:
            positional.append((label, data))
    free = [i for i in range(len(video_names)) if out[i] is None]
    if len(positional) > len(free):
        raise unprocessable(
            f"invalid_{field}", f"{field}: {len(named)} parts for {len(video_names)} videos (at most one per video)"
        )
    for i, item in zip(free, positional, strict=False):
        out[i] = item
    return out


def parse_form_options(form: FormData) -> tuple[ScoreOptions, str]:
    """(options, output format) of a ``/v1/score`` form; 400 for an unknown field or a bad option."""
    for key in form:
        if key not in SCORE_FIELDS:
            raise bad_request("unknown_option", f"form field {key!r} is not an option (known: {SCORE_FIELDS})")
    raw: dict[str, Any] = {}
    for key in OPTION_FIELDS:
        values = form.getlist(key)
        if len(values) > 1:
            raise bad_request("invalid_option", f"{key}: given {len(values)} times")
        if not values:
            continue
        if isinstance(values[0], UploadFile):
            raise bad_request("invalid_option", f"{key}: must be a text field, not a file")
        raw[key] = values[0]
    output = raw.pop("output", "json")
    if output not in ("json", "npz"):
        raise bad_request("invalid_option", f"output: must be 'json' or 'npz', got {output!r}")
    if "filter_params" in raw:
        try:
            raw["filter_params"] = json.loads(raw["filter_params"])
        except json.JSONDecodeError:
            raise bad_request("invalid_option", "filter_params: not a JSON object") from None
    return parse_options(raw, "form"), output


def form_videos(form: FormData, max_videos: int) -> list[UploadFile]:
    """The uploaded ``videos`` parts: at least one, at most ``max_videos`` (413), every one a file."""
    videos = form.getlist("videos")
    if not videos:
        raise bad_request("missing_field", "videos: at least one video file is required")
    if len(videos) > max_videos:
        raise ServiceError(413, "too_many_videos", f"videos: {len(videos)} files exceed {max_videos}")
    uploads = [v for v in videos if isinstance(v, UploadFile)]
    if len(uploads) != len(videos):
        raise bad_request("invalid_field", "videos: every part must be a file upload")
    return uploads


async def save_uploads(
    uploads: list[UploadFile],
    names: list[str],
    boxes: list[tuple[str, bytes] | None],
    gts: list[tuple[str, bytes] | None],
    folder: Path,
) -> list[VideoJob]:
    """Copy each upload to ``folder`` and parse its boxes and ground truth (in video order: the first bad part
    stops the request)."""
    jobs = []
    for i, up in enumerate(uploads):
        path = folder / f"video{i}"
        with open(path, "wb") as fh:
            await asyncio.to_thread(shutil.copyfileobj, up.file, fh)
        box_part, gt_part = boxes[i], gts[i]
        b = parse_array(box_part[1], box_part[0], "boxes") if box_part else None
        g = parse_array(gt_part[1], gt_part[0], "landmarks") if gt_part else None
        jobs.append(
            VideoJob(
                f"videos[{i}] {names[i]!r}",
                path,
                b,
                g,
                boxes_name=box_part[0] if box_part else None,
                gt_name=gt_part[0] if gt_part else None,
            )
        )
    return jobs


def render_scores(scores: list[VideoScore], names: list[str], meta: dict[str, Any], output: str) -> Response:
    """The ``/v1/score`` response: JSON (every per-frame array inline) or an npz of arrays plus a ``meta`` JSON."""
    if output == "npz":
        arrays: dict[str, Any] = {}  # arrays by name (Any: numpy's stub types **kwds against allow_pickle)
        for i, s in enumerate(scores):
            arrays[f"video{i}_landmarks"] = s.landmarks
            arrays[f"video{i}_nfe"] = s.nfe
            arrays[f"video{i}_full_solve"] = s.full_solve
            arrays[f"video{i}_boxes"] = s.boxes
            arrays[f"video{i}_box_source"] = np.asarray(s.box_source, dtype=str)
        meta["videos"] = [{**s.summary(), "filename": n} for s, n in zip(scores, names, strict=True)]
        arrays["meta"] = np.asarray(json.dumps(meta))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return Response(
            buf.getvalue(),
            media_type="application/x-npz",
            headers={"Content-Disposition": 'attachment; filename="landmarks.npz"'},
        )
    meta["videos"] = [{**s.to_json(), "filename": n} for s, n in zip(scores, names, strict=True)]
    return Response(json.dumps(meta), media_type="application/json")


async def _first_error(tasks: list[asyncio.Task[Any]]) -> list[Any]:
    """Await all tasks; on the first failure (or our own cancellation: timeout) cancel the rest and raise."""
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()  # a cancelled scoring task cancels its batcher stream
        raise
    for t in done:
        if t.exception() is not None:
            for p in pending:
                p.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise t.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


def _replica_id() -> str:
    try:
        ctx = serve.get_replica_context()
        return str(getattr(ctx.replica_id, "unique_id", ctx.replica_id))
    except Exception:
        return f"local-{uuid.uuid4().hex[:8]}"


@serve.deployment(
    name="LandmarkService",
    max_ongoing_requests=64,
    ray_actor_options={"num_cpus": 0.5},
    health_check_period_s=5,
    graceful_shutdown_timeout_s=10,
)
@serve.ingress(api)
class LandmarkService:
    """One replica: a model, ONE shared RwR tracker inside the frame batcher, and the job manager."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = ServeSettings.model_validate(settings)
        runtime.STATE.settings = self.settings  # read by GuardMiddleware (see serve/runtime.py)
        runtime.STATE.token = self.settings.token()
        if self.settings.batch.torch_threads:
            torch.set_num_threads(self.settings.batch.torch_threads)
        self.loaded: LoadedModel = load_model(self.settings.model)
        self.crop_size = self.loaded.model.cfg.image_size
        self.n_landmarks = self.loaded.model.cfg.n_landmarks
        b = self.settings.batch
        self.batcher = FrameBatcher(
            self.loaded.model,
            rwr_config(self.settings, ScoreOptions(), self.crop_size),
            max_batch_size=b.max_batch_size,
            wait_s=b.wait_s,
            max_active=b.max_active_videos,
            exact=b.exact,
            inference=self.settings.inference.policy(),
            prepare_threads=b.prepare_threads,
            read_ahead=b.read_ahead,
        )
        self.warmup: dict[str, Any] = {"buckets": [], "seconds": 0.0}
        if self.settings.inference.warmup:  # compile + capture now: no request waits for it
            start = time.perf_counter()
            engine = self.batcher.tracker.engine
            rwr = self.settings.rwr  # the default request's graphs: with the state warp when it is on
            buckets = engine.warmup(rwr.budget_nfe, b.max_batch_size, warp=rwr.warp_state)
            self.warmup = {"buckets": buckets, "seconds": round(time.perf_counter() - start, 3)}
            if buckets:
                log.info(
                    "inference warm-up (%s): buckets %s in %.1f s", engine.describe(), buckets, self.warmup["seconds"]
                )
        self.replica = _replica_id()
        self.jobs_enabled = self.settings.jobs.allowed_root is not None or bool(self.settings.jobs.uri_protocols)
        self.jobs = JobManager(
            self.settings.jobs, self._score_job, f"{self.replica}:{uuid.uuid4().hex[:8]}", self._model_brief()
        )
        self.warnings = [] if self.loaded.trained else [UNTRAINED_WARNING]
        self.started = time.time()

    # ------------------------------------------------------------------------------------------------ helpers
    def _model_brief(self) -> dict[str, Any]:
        return {"sha256": self.loaded.sha256, "source": self.loaded.source, "trained": self.loaded.trained}

    def _background(self) -> None:
        if self.jobs_enabled:
            self.jobs.ensure_background()

    async def check_health(self) -> None:
        """Serve's periodic health check; also (re)starts the job scanner that resumes orphaned jobs."""
        self._background()

    async def _score_job(self, job: VideoJob, opts: ScoreOptions) -> VideoScore:
        job = await asyncio.to_thread(validate_video, job, self.settings, self.n_landmarks)
        return await score_video(job, self.batcher, self.settings, opts, self.crop_size)

    # ------------------------------------------------------------------------------------------------ routes
    @api.get("/healthz", summary="Liveness and replica identity")
    async def healthz(self) -> dict[str, Any]:
        self._background()
        return {
            "status": "ok",
            "replica": self.replica,
            "model_sha256": self.loaded.sha256,
            "trained": self.loaded.trained,
            "active_videos": self.batcher.active,
            "uptime_s": round(time.time() - self.started, 3),
        }

    @api.get(
        "/v1/model", summary="Model configuration, checkpoint sha256, source and metrics", responses=ERROR_RESPONSES
    )
    async def model_info(self) -> dict[str, Any]:
        self._background()
        cfg = self.loaded.model.cfg
        return {
            **self._model_brief(),
            "config": cfg.to_dict(),
            "metadata": self.loaded.metadata,
            "metrics": self.loaded.metrics,
            "n_landmarks": cfg.n_landmarks,
            "crop_size": self.crop_size,
            "device": str(next(self.loaded.model.parameters()).device),
            "inference": {**self.batcher.tracker.engine.policy.to_dict(), "warmup": self.warmup},
            "rwr_defaults": self.settings.rwr.model_dump(),
            "batching": {**self.settings.batch.model_dump(), "stats": self.batcher.stats()},
            "limits": self.settings.limits.model_dump(),
            "replica": self.replica,
            "warnings": self.warnings,
        }

    @api.post(
        "/v1/score",
        summary="Score uploaded videos: per-frame landmarks, NFE, boxes, timing, NME/NMF with ground truth",
        openapi_extra=SCORE_OPENAPI,
        responses=ERROR_RESPONSES,
    )
    async def score(self, request: Request) -> Response:
        self._background()
        timeout = self.settings.limits.request_timeout_s
        try:
            return await asyncio.wait_for(self._score(request), timeout=timeout)
        except TimeoutError:
            raise ServiceError(504, "timeout", f"request: not finished within {timeout} s") from None

    async def _score(self, request: Request) -> Response:
        """``POST /v1/score``: read the form, save and validate the videos, score them (boxes or detection, the
        frame batcher, the filter), then answer in the requested format."""
        t0 = time.perf_counter()
        lim = self.settings.limits
        form = await request.form(max_files=3 * lim.max_videos_per_request, max_fields=64, max_part_size=MAX_TEXT_PART)
        try:
            opts, output = parse_form_options(form)
            uploads = form_videos(form, lim.max_videos_per_request)
            names = [v.filename or f"video{i}" for i, v in enumerate(uploads)]
            boxes = match_parts(form.getlist("boxes"), names, "boxes")
            gts = match_parts(form.getlist("landmarks"), names, "landmarks")
            with tempfile.TemporaryDirectory(prefix="ldeq-req-") as tmp:
                jobs = await save_uploads(uploads, names, boxes, gts, Path(tmp))
                checked = await self._validate_all(jobs)
                scores = await self._score_all(checked, opts)
        finally:
            await form.close()
        return render_scores(scores, names, self._response_meta(opts, output, t0), output)

    async def _validate_all(self, jobs: list[VideoJob]) -> list[VideoJob]:
        """Probe, decode and check every video (in threads); the first failure cancels the rest."""
        return await _first_error(
            [asyncio.create_task(asyncio.to_thread(validate_video, j, self.settings, self.n_landmarks)) for j in jobs]
        )

    async def _score_all(self, jobs: list[VideoJob], opts: ScoreOptions) -> list[VideoScore]:
        """Score every validated video concurrently through the replica's frame batcher."""
        return await _first_error(
            [asyncio.create_task(score_video(j, self.batcher, self.settings, opts, self.crop_size)) for j in jobs]
        )

    def _response_meta(self, opts: ScoreOptions, output: str, t0: float) -> dict[str, Any]:
        """The response fields shared by every video: model, replica, options, RwR settings, timing, warnings."""
        return {
            "model": self._model_brief(),
            "replica": self.replica,
            "options": {**opts.model_dump(), "output": output},
            "rwr": {
                "mode": opts.mode or self.settings.rwr.mode,
                "budget_nfe": opts.budget_nfe or self.settings.rwr.budget_nfe,
                "crop_size": self.crop_size,
            },
            "timing": {"total_s": round(time.perf_counter() - t0, 4)},
            "warnings": self.warnings,
        }

    @api.post(
        "/v1/jobs",
        status_code=202,
        summary="Submit a batch job over server-side files (paths under the allowed root, or allowed URIs)",
        openapi_extra=JOBS_OPENAPI,
        responses=ERROR_RESPONSES,
    )
    async def submit_job(self, request: Request) -> JSONResponse:
        self._background()
        if not self.jobs_enabled:
            raise ServiceError(403, "jobs_disabled", "jobs: no jobs.allowed_root or jobs.uri_protocols configured")
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("invalid_json", "request body: not valid JSON") from None
        if not isinstance(body, dict):
            raise bad_request("invalid_request", "request body: expected a JSON object")
        job_id = await asyncio.to_thread(self.jobs.prepare, body)
        self.jobs.start(job_id)
        return JSONResponse(self.jobs.get(job_id), status_code=202)

    @api.get(
        "/v1/jobs/{job_id}", summary="Job status, progress, per-video status and errors", responses=ERROR_RESPONSES
    )
    async def job_status(self, job_id: str) -> dict[str, Any]:
        self._background()
        return await asyncio.to_thread(self.jobs.get, job_id)


def settings_payload(settings: ServeSettings) -> dict[str, Any]:
    """Settings as plain data for the replicas (the literal token, if any, kept)."""
    data = settings.model_dump(mode="json")
    data["auth_token"] = settings.auth_token.get_secret_value() if settings.auth_token is not None else None
    return data


def make_app(settings: ServeSettings, **deployment_options: Any) -> Application:
    """Bind the deployment with ``settings`` (and optional ``.options(...)`` such as num_replicas)."""
    service = cast(Deployment, LandmarkService)  # @serve.deployment made it one; mypy ignores class decorators
    dep = service.options(**deployment_options) if deployment_options else service
    return dep.bind(settings_payload(settings))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Serve application builder (``import_path: serve.app:build_app``).

    ``args``: ``params_file`` (a params.yaml whose ``serve:`` section holds the settings), ``settings`` (overrides,
    same shape) and ``base_dir`` (for relative paths; default the params file's folder or the cwd).
    """
    args = dict(args or {})
    unknown = set(args) - {"params_file", "settings", "base_dir"}
    if unknown:
        raise ValueError(f"build_app: unknown args {sorted(unknown)} (known: params_file, settings, base_dir)")
    settings = load_settings(args.get("params_file"), args.get("settings"), args.get("base_dir"))
    return make_app(settings)
