"""End-to-end serving benchmark: frames/s and latency of ``POST /v1/score`` (upload, validate, decode, box, crop,
RwR, response) on a local Ray Serve deployment of ``serve.app``, for one video alone and for concurrent clients.

The test video is made here: a synthetic face clip (``pipelines.synthetic.generate.render_video``) at the chosen
size, written with ``ldeq_shared.video_io.write_video`` (mp4v), sent with its per-frame boxes as ``.npy``
(``--with-boxes``) or without boxes (``--no-boxes``: the Haar detector + landmark tracking path; a seed whose first
frames the detector finds a face in is searched for, since the service rejects a video without one).

Each concurrency level starts ``clients`` threads at once; each posts the same video ``--requests-per-client`` times
back to back (multipart, like a real client). frames/s = frames scored by successful requests / wall time of the
level; latencies are per request, client side (upload to parsed JSON answer). The server-side timing fields of the
answers (``timing.total_s`` and each video's validate/detect/queue/solve seconds) and the replica's batching
counters are reported alongside. Every answer's landmarks are compared with the first lone run's: with
``--exact`` (``batch.exact``) the service guarantees bitwise equality; without it batched convolutions round
differently from a batch of one (see serve/batching.py), so the largest difference is reported, not required.

GPU (one H100, one replica holding the whole GPU; the repo root as working directory):
    PYTHONPATH=. python3 bench/bench_serve.py --device cuda --replicas 1 --gpus-per-replica 1
        --checkpoint models/model.pt --out bench_serve.json        (one command line)
(``--checkpoint none --allow-untrained --untrained-preset paper`` times the 256-px paper-size model instead; speed
does not depend on the weights. ``--replicas 2 --gpus-per-replica 0.5`` shares the GPU between two replicas.)
CPU smoke (what tests/bench/test_bench_serve.py runs):
    python bench/bench_serve.py --quick --device cpu --allow-untrained --out /tmp/bench_serve.json

Ray: when Ray is already initialised in this process (tests), that cluster is used and left running; likewise a
running Serve instance is reused (the app then gets its own route prefix) and only this app is deleted afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python bench/bench_serve.py` from anywhere: serve/, pipelines/ importable

APP_NAME = "ldeq-bench-serve"
MAX_SEED_TRIES = 40
FULL = {
    "frames": 150, "width": 1280, "height": 720, "clients": "1,8,32", "requests_per_client": 3, "single_runs": 3,
    "warmup": 2, "untrained_preset": "paper", "object_store_gb": 2.0,
}  # fmt: skip
QUICK = {
    "frames": 20, "width": 320, "height": 240, "clients": "1,2", "requests_per_client": 2, "single_runs": 2,
    "warmup": 1, "untrained_preset": "tiny", "object_store_gb": 0.5,
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ test video
@dataclass
class BenchVideo:
    """The benchmark's video file and what is posted with it."""

    path: Path
    n_frames: int
    width: int
    height: int
    fps: float
    seed: int
    fourcc: str
    boxes: np.ndarray | None  # (T, 4) when sent with boxes
    n_bytes: int = 0
    seeds_tried: int = 1
    first_face_frame: int | None = None  # --no-boxes: frame where the service's detector first finds the face

    def describe(self) -> dict[str, Any]:
        return {
            "source": "pipelines.synthetic.generate.render_video (easy clip)",
            "frames": self.n_frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "fourcc": self.fourcc,
            "bytes": self.n_bytes,
            "seed": self.seed,
            "seeds_tried": self.seeds_tried,
            "with_boxes": self.boxes is not None,
            "first_face_frame": self.first_face_frame,
        }


def make_video(
    folder: Path,
    n_frames: int,
    width: int,
    height: int,
    *,
    with_boxes: bool,
    seed: int = 0,
    fourcc: str = "mp4v",
    detector: Any = None,
) -> BenchVideo:
    """Render and encode the synthetic test clip. Without boxes, seeds from ``seed`` on are tried until the Haar
    detector (``detector``: the service's ``DetectorSettings``) finds a face in the decoded clip's first frames."""
    from ldeq_shared.video_io import iter_frames, write_video
    from pipelines.synthetic.generate import render_video

    path = folder / f"bench_{width}x{height}_{n_frames}f.mp4"
    for k in range(MAX_SEED_TRIES):
        s = seed + k
        clip = render_video(np.random.default_rng(s), n_frames, False, size=(width, height))
        info = write_video(path, clip.frames, fps=clip.fps, fourcc=fourcc)
        if with_boxes:
            boxes = clip.boxes.astype(np.float64)
            return BenchVideo(path, info.n_frames, width, height, clip.fps, s, fourcc, boxes, path.stat().st_size)
        from serve.detector import HaarFaceDetector, find_first_face
        from serve.settings import DetectorSettings

        cfg = detector if detector is not None else DetectorSettings()
        frames = iter_frames(path, strict=False)
        try:
            found = find_first_face(frames, HaarFaceDetector(cfg), cfg.max_search_frames)
        finally:
            frames.close()
        if found is not None:
            n_bytes = path.stat().st_size
            return BenchVideo(path, info.n_frames, width, height, clip.fps, s, fourcc, None, n_bytes, k + 1, found[0])
    raise RuntimeError(
        f"no synthetic clip among seeds {seed}..{seed + MAX_SEED_TRIES - 1} has a face the Haar detector finds at "
        f"{width}x{height}; use --with-boxes or another --seed"
    )


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def upload_parts(video: BenchVideo) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The multipart body of one request: the video and, when present, its boxes (matched by file stem)."""
    parts = [("videos", (video.path.name, video.path.read_bytes(), "video/mp4"))]
    if video.boxes is not None:
        parts.append(("boxes", (f"{video.path.stem}.npy", npy_bytes(video.boxes), "application/octet-stream")))
    return parts


# ------------------------------------------------------------------------------------------------ client
@dataclass
class Sample:
    """One request as the client saw it, plus the server-side fields of its answer."""

    latency_s: float
    status: int  # HTTP status; 0 = connection error / timeout
    frames: int = 0
    error: str | None = None
    landmarks: np.ndarray | None = None
    nfe: np.ndarray | None = None
    server: dict[str, float] = field(default_factory=dict)
    box_source: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.error is None


def post_video(client: Any, parts: list[Any], n_frames: int, data: dict[str, str]) -> Sample:
    """POST one video to /v1/score and parse the answer; any failure is recorded, never raised."""
    import httpx

    t0 = time.perf_counter()
    try:
        resp = client.post("/v1/score", files=parts, data=data)
        body = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return Sample(time.perf_counter() - t0, 0, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - t0
    if body is None:
        return Sample(latency, resp.status_code, error=f"HTTP {resp.status_code}: {resp.text[:300]}")
    video = body["videos"][0]
    lm = np.asarray(video["landmarks"], dtype=np.float64)
    sample = Sample(
        latency,
        resp.status_code,
        frames=len(lm),
        landmarks=lm,
        nfe=np.asarray(video["nfe"], dtype=np.int64),
        server={
            "total_s": float(body["timing"]["total_s"]),
            **{k: float(v) for k, v in video["timing"].items()},
            "mean_batch_size": float(video["mean_batch_size"]),
            "mean_nfe": float(video["mean_nfe"]),
        },
        box_source=Counter(video["box_source"]),
    )
    if sample.frames != n_frames:
        sample.error = f"answer has {sample.frames} frames, the video {n_frames}"
    return sample


def run_clients(
    url: str, parts: list[Any], n_frames: int, clients: int, per_client: int, *, timeout: float, data: dict[str, str]
) -> tuple[list[Sample], float]:
    """``clients`` threads started together, each posting ``per_client`` requests back to back; (samples, wall s)."""
    import httpx

    samples: list[list[Sample]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            barrier.wait()
            for _ in range(per_client):
                samples[i].append(post_video(client, parts, n_frames, data))

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [s for per in samples for s in per], wall


def summarise(samples: list[Sample], wall_s: float | None, reference: Sample | None) -> dict[str, Any]:
    """frames/s, latency percentiles, failures, server timing means and agreement with the reference answer."""
    ok = [s for s in samples if s.ok]
    lat = np.asarray([s.latency_s for s in ok], dtype=np.float64)
    frames = sum(s.frames for s in ok)
    out: dict[str, Any] = {
        "requests": len(samples),
        "ok": len(ok),
        "failures": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "frames_scored": frames,
        "wall_s": None if wall_s is None else round(wall_s, 4),
        "frames_per_s": None if not wall_s else round(frames / wall_s, 2),
        "latency_s": None,
        "server_mean_s": None,
    }
    if len(ok):
        p50, p95 = np.percentile(lat, [50, 95])
        out["latency_s"] = {
            "p50": round(float(p50), 4), "p95": round(float(p95), 4), "mean": round(float(lat.mean()), 4),
            "min": round(float(lat.min()), 4), "max": round(float(lat.max()), 4),
        }  # fmt: skip
        keys = sorted({k for s in ok for k in s.server})
        out["server_mean_s"] = {k: round(float(np.mean([s.server.get(k, np.nan) for s in ok])), 4) for k in keys}
        # upload, proxy hops, response transfer and JSON parsing: client latency minus the service's own total_s
        outside = [s.latency_s - s.server["total_s"] for s in ok if "total_s" in s.server]
        out["outside_service_mean_s"] = round(float(np.mean(outside)), 4) if outside else None
        boxes: Counter[str] = Counter()
        for s in ok:
            boxes.update(s.box_source)
        out["box_source"] = dict(sorted(boxes.items()))
    if reference is not None and reference.landmarks is not None and len(ok):
        diffs = [float(np.max(np.abs(s.landmarks - reference.landmarks))) for s in ok if s.landmarks is not None]
        out["max_landmark_diff_px"] = max(diffs)
        out["landmarks_bitwise_equal"] = all(d == 0.0 for d in diffs)
        out["nfe_identical"] = all(s.nfe is not None and np.array_equal(s.nfe, reference.nfe) for s in ok)
    return out


# ------------------------------------------------------------------------------------------------ service
def resolve_checkpoint(arg: str | None, allow_untrained: bool) -> Path | None:
    """The checkpoint to serve, or None for an untrained model (only with ``--allow-untrained``).

    A configured checkpoint that does not exist would make every replica fail in ``load_model`` (crash loop), so
    it is checked here.
    """
    if arg is not None and arg.lower() in ("", "none"):
        if not allow_untrained:
            raise SystemExit("--checkpoint none: serving an untrained model needs --allow-untrained")
        return None
    path = Path(arg) if arg else REPO / "models" / "model.pt"
    path = path if path.is_absolute() else (Path.cwd() / path)
    if path.is_file():
        return path.resolve()
    if not allow_untrained:
        raise SystemExit(
            f"checkpoint {path} not found; pass --checkpoint PATH, or --allow-untrained to time a randomly "
            "initialised model (speed does not depend on the weights)"
        )
    warnings.warn(f"checkpoint {path} not found: timing an UNTRAINED model", stacklevel=2)
    return None


def build_settings(args: argparse.Namespace, checkpoint: Path | None) -> Any:
    """ServeSettings: params file's serve section (if any) + the benchmark's overrides (auth and jobs off)."""
    from serve.settings import load_settings

    batch: dict[str, Any] = {"max_batch_size": args.max_batch_size, "exact": args.exact}
    if args.batch_wait_s is not None:
        batch["wait_s"] = args.batch_wait_s
    if args.torch_threads is not None:
        batch["torch_threads"] = args.torch_threads
    if args.prepare_threads is not None:
        batch["prepare_threads"] = args.prepare_threads
    overrides: dict[str, Any] = {
        "model": {
            "checkpoint": str(checkpoint) if checkpoint else None,
            "mlflow_name": None,
            "mlflow_alias": None,
            "mlflow_version": None,
            "untrained_fallback": checkpoint is None,
            "untrained_preset": args.untrained_preset,
            "device": args.device,
        },
        "batch": batch,
        "limits": {"max_frames": max(5000, args.frames), "request_timeout_s": args.timeout},
        "jobs": {"allowed_root": None, "uri_protocols": []},
        "auth_token": None,
        "auth_token_env": None,
    }
    if args.budget_nfe is not None:
        overrides["rwr"] = {"budget_nfe": args.budget_nfe}
    params = args.params
    if params:
        params = Path(params) if Path(params).is_absolute() else REPO / params
        if not params.is_file():
            raise SystemExit(f"--params {params}: not found")
    return load_settings(params or None, overrides, base_dir=REPO)


@dataclass
class Service:
    url: str
    started_ray: bool
    started_serve: bool


def start_service(settings: Any, deployment: dict[str, Any], args: argparse.Namespace) -> Service:
    """Start (or attach to) Ray and Serve on 127.0.0.1, deploy the app, wait until /healthz answers."""
    import httpx
    import ray
    from ray import serve
    from ray.serve.context import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    from ldeq_shared.net import free_port
    from ldeq_shared.ray_session import start_or_attach
    from serve.app import make_app

    if not ray.is_initialized():
        path = os.environ.get("PYTHONPATH", "")
        if str(REPO) not in path.split(os.pathsep):  # replicas import serve.app from the repository
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)
    started_ray = start_or_attach(
        configure_logging=False,
        log_to_driver=args.ray_logs,
        object_store_mb=args.object_store_gb * 1024,
        auth_off_on_attach=True,
    ).owned
    gpus_needed = deployment["num_replicas"] * deployment["ray_actor_options"]["num_gpus"]
    gpus_have = float(ray.cluster_resources().get("GPU", 0.0))
    if gpus_needed > gpus_have + 1e-9:
        if started_ray:
            ray.shutdown()
        raise SystemExit(f"the deployment asks for {gpus_needed} GPUs, the Ray cluster has {gpus_have}")
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        started_serve = False
    except ValueError:
        started_serve = True
    try:
        if started_serve:
            port = args.port or free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            prefix = "/"
        else:  # a Serve instance already runs in this cluster (e.g. the test session's): share its proxy
            from ray.serve.context import _get_global_client

            port = int(_get_global_client().http_config.port)
            prefix = "/" + APP_NAME
        serve.run(make_app(settings, **deployment), name=APP_NAME, route_prefix=prefix, blocking=False)
        url = f"http://127.0.0.1:{port}" + ("" if prefix == "/" else prefix)
        deadline = time.monotonic() + args.startup_timeout
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            app = serve.status().applications.get(APP_NAME)
            if app is not None and str(app.status).endswith("DEPLOY_FAILED"):
                raise RuntimeError(f"deployment failed: {app.message}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}/healthz not healthy after {args.startup_timeout} s (status: {app})")
            time.sleep(0.5)
    except BaseException:
        stop_service(Service("", started_ray, started_serve))
        raise
    return Service(url, started_ray, started_serve)


def stop_service(svc: Service) -> None:
    import ray
    from ray import serve

    try:
        if svc.started_serve:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    finally:
        if svc.started_ray:
            ray.shutdown()


def batching_stats(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{url}/v1/model", timeout=60).json()["batching"]["stats"]


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    from serve.batching import TIME_PHASES

    calls = after["model_calls"] - before["model_calls"]
    frames = after["frames"] - before["frames"]
    ticks = after["ticks"] - before["ticks"]
    sizes = {k: v - before["call_sizes"].get(k, 0) for k, v in after["call_sizes"].items()}
    return {
        "frames": frames,
        "model_calls": calls,
        "ticks": ticks,
        "mean_call_size": round(frames / calls, 2) if calls else 0.0,
        "call_sizes": {k: v for k, v in sizes.items() if v},
        # where a replica's worker thread spent each tick (ms per tick): the host work vs the model
        **{
            f"{phase}_ms_per_tick": round(1e3 * (after[f"{phase}_s"] - before[f"{phase}_s"]) / max(ticks, 1), 3)
            for phase in TIME_PHASES
        },
    }


# ------------------------------------------------------------------------------------------------ report
def environment(device: str) -> dict[str, Any]:
    import cv2
    import ray
    import torch

    from ldeq_core.profiling import cpu_name

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "ray": ray.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
        "device": device,
        "device_name": cpu_name(),
    }
    if device == "cuda":
        env["device_name"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def print_table(result: dict[str, Any]) -> None:
    env, video = result["environment"], result["video"]
    model = result["model"]
    print(
        f"\nldeq serve benchmark: {video['frames']} frames {video['width']}x{video['height']} {video['fourcc']} "
        f"({video['bytes'] / 1e6:.2f} MB, {'with boxes' if video['with_boxes'] else 'no boxes: Haar + tracking'}); "
        f"model {model.get('source', {}).get('kind')} crop {model.get('crop_size')} on {model.get('device')} "
        f"({env['device_name']}); {result['deployment']['num_replicas']} replica(s), "
        f"max batch {result['settings']['batch']['max_batch_size']}, exact={result['settings']['batch']['exact']}"
    )
    head = (
        f"{'scenario':<12} {'req':>4} {'fail':>4} {'frames':>7} {'wall s':>8} {'frames/s':>9} {'p50 s':>7} "
        f"{'p95 s':>7} {'max s':>7} {'srv solve':>9} {'srv queue':>9} {'batch':>6} {'max diff px':>11}"
    )
    print(head)
    print("-" * len(head))
    rows = [("one video", result["single"])] + [(f"clients={r['clients']}", r) for r in result["concurrency"]]
    for name, r in rows:
        lat, srv = r["latency_s"] or {}, r["server_mean_s"] or {}
        print(
            f"{name:<12} {r['requests']:>4} {r['failures']:>4} {r['frames_scored']:>7} {_fmt(r['wall_s'], '.2f'):>8} "
            f"{_fmt(r['frames_per_s'], '.1f'):>9} {_fmt(lat.get('p50'), '.3f'):>7} {_fmt(lat.get('p95'), '.3f'):>7} "
            f"{_fmt(lat.get('max'), '.3f'):>7} {_fmt(srv.get('solve_s'), '.3f'):>9} "
            f"{_fmt(srv.get('queue_s'), '.3f'):>9} {_fmt(srv.get('mean_batch_size'), '.1f'):>6} "
            f"{_fmt(r.get('max_landmark_diff_px'), '.2e'):>11}"
        )
    t = result["targets"]
    print(
        f"targets (one GPU, 150-frame 720p): best frames/s {_fmt(t['best_frames_per_s'])} >= 1000: "
        f"{_fmt(t['frames_per_s_met'])}; p95 at 8 clients {_fmt(t['p95_at_8_clients_s'])} s < 1 s: "
        f"{_fmt(t['p95_at_8_met'])}"
        + ("" if t["applicable"] else "  (not applicable: not a 150-frame 720p run on cuda)")
    )


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="CPU smoke: 20 frames 320x240, clients 1,2, tiny model")
    p.add_argument("--frames", type=int, help="video frames (150; quick 20)")
    p.add_argument("--width", type=int, help="frame width (1280; quick 320)")
    p.add_argument("--height", type=int, help="frame height (720; quick 240)")
    boxes = p.add_mutually_exclusive_group()
    boxes.add_argument(
        "--with-boxes",
        dest="with_boxes",
        action="store_true",
        default=True,
        help="send per-frame boxes (.npy) with the video (default)",
    )
    boxes.add_argument(
        "--no-boxes",
        dest="with_boxes",
        action="store_false",
        help="send the video alone: exercises the Haar detector + landmark tracking path",
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic clip seed (first tried)")
    p.add_argument("--fourcc", default="mp4v", help="OpenCV fourcc of the test video (mp4v; avc1 if available)")
    p.add_argument("--clients", help="concurrency levels, comma separated (1,8,32; quick 1,2)")
    p.add_argument("--requests-per-client", type=int, help="requests each client posts back to back (3; quick 2)")
    p.add_argument("--single-runs", type=int, help="lone requests for the one-video figure (3; quick 2)")
    p.add_argument("--warmup", type=int, help="untimed lone requests before anything (2; quick 1)")
    p.add_argument(
        "--level-warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one untimed round (each client posts once) before each concurrency level",
    )
    p.add_argument("--checkpoint", help="checkpoint to serve (default models/model.pt; 'none': untrained)")
    p.add_argument(
        "--allow-untrained", action="store_true", help="time a randomly initialised model when there is no checkpoint"
    )
    p.add_argument("--untrained-preset", help="preset of the untrained model (paper; quick tiny)")
    p.add_argument("--params", default="params.yaml", help="params file whose serve: section is the base ('' none)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--gpus-per-replica", type=float, help="GPU fraction per replica (cuda: 1/replicas; cpu: 0)")
    p.add_argument("--cpus-per-replica", type=float, default=0.5, help="Ray CPU reservation per replica")
    p.add_argument("--max-batch-size", type=int, default=32, help="settings.batch.max_batch_size")
    p.add_argument("--batch-wait-s", type=float, help="settings.batch.wait_s (default: the settings')")
    p.add_argument("--exact", action="store_true", help="settings.batch.exact: batch-of-one solves (bitwise equal)")
    p.add_argument("--torch-threads", type=int, help="settings.batch.torch_threads")
    p.add_argument("--prepare-threads", type=int, help="settings.batch.prepare_threads (decode + crop pool)")
    p.add_argument("--budget-nfe", type=int, help="settings.rwr.budget_nfe (default: the settings')")
    p.add_argument("--port", type=int, help="Serve HTTP port (default: a free one)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, client and service (s)")
    p.add_argument("--startup-timeout", type=float, default=240.0, help="seconds to wait for /healthz")
    p.add_argument("--object-store-gb", type=float, help="Ray object store when this script starts Ray (2; quick 0.5)")
    p.add_argument("--ray-logs", action="store_true", help="show the replicas' logs")
    p.add_argument("--workdir", help="folder for the test video (default: a temporary one)")
    p.add_argument("--out", help="write the result JSON here")
    args = p.parse_args(argv)
    profile = QUICK if args.quick else FULL
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.client_levels = [int(c) for c in str(args.clients).split(",") if c.strip()]
    if not args.client_levels or min(args.client_levels) < 1:
        p.error("--clients: positive integers, comma separated")
    for name in ("frames", "requests_per_client", "single_runs", "replicas"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return (and optionally write) the result dict."""
    args = parse_args(argv)
    import torch

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    gpus = (
        args.gpus_per_replica
        if args.gpus_per_replica is not None
        else (1.0 / args.replicas if device == "cuda" else 0.0)
    )
    if device == "cuda" and gpus <= 0:
        raise SystemExit("--device cuda needs --gpus-per-replica > 0")
    checkpoint = resolve_checkpoint(args.checkpoint, args.allow_untrained)
    settings = build_settings(args, checkpoint)
    deployment = {
        "num_replicas": args.replicas,
        "ray_actor_options": {"num_cpus": args.cpus_per_replica, "num_gpus": gpus},
        "max_ongoing_requests": max(64, 2 * max(args.client_levels)),
    }
    data: dict[str, str] = {}  # request form options: none, the service's defaults (settings.rwr) apply

    with tempfile.TemporaryDirectory(prefix="ldeq-bench-serve-") as tmp:
        folder = Path(args.workdir) if args.workdir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        video = make_video(
            folder,
            args.frames,
            args.width,
            args.height,
            with_boxes=args.with_boxes,
            seed=args.seed,
            fourcc=args.fourcc,
            detector=settings.detector,
        )
        make_s = time.perf_counter() - t0
        print(f"test video: {video.describe()} (made in {make_s:.1f} s)", flush=True)
        parts = upload_parts(video)
        t0 = time.perf_counter()
        svc = start_service(settings, deployment, args)
        startup_s = time.perf_counter() - t0
        print(f"service up at {svc.url} in {startup_s:.1f} s", flush=True)
        try:
            import httpx

            model = httpx.get(f"{svc.url}/v1/model", timeout=60).json()
            print("inference path:", json.dumps(model.get("inference")), flush=True)
            n = video.n_frames
            warm, _ = (
                run_clients(svc.url, parts, n, 1, args.warmup, timeout=args.timeout, data=data)
                if args.warmup
                else ([], 0.0)
            )
            if any(not s.ok for s in warm):
                raise RuntimeError(f"warm-up request failed: {[s.error for s in warm if not s.ok][:3]}")
            single, _ = run_clients(svc.url, parts, n, 1, args.single_runs, timeout=args.timeout, data=data)
            reference = next((s for s in single if s.ok), None)
            one = summarise(single, None, reference)
            if one["latency_s"]:  # one video alone: frames / median latency
                one["frames_per_s"] = round(n / one["latency_s"]["p50"], 2)
            one["clients"] = 1
            levels = []
            for c in args.client_levels:
                if args.level_warmup:
                    run_clients(svc.url, parts, n, c, 1, timeout=args.timeout, data=data)
                before = batching_stats(svc.url) if args.replicas == 1 else None
                samples, wall = run_clients(
                    svc.url, parts, n, c, args.requests_per_client, timeout=args.timeout, data=data
                )
                row = {
                    "clients": c,
                    "requests_per_client": args.requests_per_client,
                    **summarise(samples, wall, reference),
                }
                row["batching"] = stats_delta(before, batching_stats(svc.url)) if before is not None else None
                levels.append(row)
                print(
                    f"clients={c}: {row['frames_per_s']} frames/s, latency {row['latency_s']}, "
                    f"failures {row['failures']}",
                    flush=True,
                )
        finally:
            stop_service(svc)

    by_clients = {r["clients"]: r for r in levels}
    best = max((r["frames_per_s"] or 0.0 for r in levels), default=None)
    p95_8 = (by_clients[8]["latency_s"] or {}).get("p95") if 8 in by_clients else None
    result: dict[str, Any] = {
        "benchmark": "bench/bench_serve.py",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "environment": environment(device),
        "video": {**video.describe(), "made_in_s": round(make_s, 2)},
        "service": {"startup_s": round(startup_s, 2), "app": APP_NAME},
        "deployment": deployment,
        "settings": settings.to_public_dict(),
        "model": {
            k: model.get(k)
            for k in ("source", "sha256", "trained", "device", "crop_size", "n_landmarks", "config", "warnings")
        },
        "request_options": data,
        "single": one,
        "concurrency": levels,
        "targets": {
            "best_frames_per_s": best,
            "frames_per_s_met": None if best is None else best >= 1000.0,
            "p95_at_8_clients_s": p95_8,
            "p95_at_8_met": None if p95_8 is None else p95_8 < 1.0,
            "applicable": device == "cuda" and (video.n_frames, video.width, video.height) == (150, 1280, 720),
            "note": "targets are stated for one GPU and 150-frame 720p videos",
        },
    }
    print_table(result)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(out.suffix + ".tmp")
        tmp_out.write_text(json.dumps(result, indent=2))
        os.replace(tmp_out, out)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
