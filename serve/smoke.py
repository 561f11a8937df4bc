"""The pipeline's last stage: start the Serve app on 127.0.0.1 with the trained model, score a few held-out videos
over HTTP, check the answer against the metric functions, and write ``metrics/serve_smoke.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ldeq_core.fileio import write_text_atomic
from ldeq_shared.net import free_port
from ldeq_shared.prepared import load_prepared
from ldeq_shared.ray_session import start_or_attach
from ldeq_shared.wflw_v import clip_paths


def _pick_videos(raw_dir: Path, n: int) -> list[dict[str, Path]]:
    """The first ``n`` videos of the prepared data (WFLW-V layout), hardest split first when present."""
    prep = load_prepared(raw_dir)
    picked: list[dict[str, Path]] = []
    for vset in prep.videos:
        root = prep.resolve(vset.root)
        for split in sorted(vset.splits, reverse=True):
            for vid in vset.splits[split]["items"]:
                video, landmarks, boxes = clip_paths(root, vid)
                picked.append({"id": vid, "video": video, "boxes": boxes, "landmarks": landmarks})
                if len(picked) == n:
                    return picked
    if not picked:
        raise ValueError(f"{raw_dir}: the prepared data has no videos to score")
    return picked


def run_smoke(root: Path, *, checkpoint: Path, raw_dir: Path, out: Path, n_videos: int = 2) -> dict[str, Any]:
    """Deploy, POST ``n_videos`` videos with boxes and ground truth to ``/v1/score``, verify, write ``out``."""
    import httpx
    import ray
    from ray import serve

    from ldeq_core.metrics import video_nme, video_nmf
    from serve.app import make_app
    from serve.settings import load_settings

    videos = _pick_videos(raw_dir, n_videos)
    settings = load_settings(overrides={"model": {"checkpoint": str(checkpoint)}}, base_dir=str(root))
    started = start_or_attach(
        configure_logging=False, log_to_driver=False, object_store_mb=512, auth_off_on_attach=True
    ).owned
    port = free_port()
    t0 = time.perf_counter()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app(settings), name="ldeq-smoke", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=300) as client:
            deadline = time.monotonic() + 120
            while client.get("/healthz").status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}/healthz did not become healthy")
                time.sleep(0.5)
            startup_s = time.perf_counter() - t0
            files = []
            for v in videos:
                stem = v["id"]
                files.append(("videos", (f"{stem}.mp4", v["video"].read_bytes(), "video/mp4")))
                files.append(("boxes", (f"{stem}.npy", v["boxes"].read_bytes(), "application/octet-stream")))
                files.append(("landmarks", (f"{stem}.npy", v["landmarks"].read_bytes(), "application/octet-stream")))
            t1 = time.perf_counter()
            resp = client.post("/v1/score", files=files, data={"budget_nfe": "2"})
            latency = time.perf_counter() - t1
            model_info = client.get("/v1/model").json()
        if resp.status_code != 200:
            raise RuntimeError(f"/v1/score answered {resp.status_code}: {resp.text[:500]}")
        body = resp.json()
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
    per_video = []
    for v, ans in zip(videos, body["videos"], strict=True):
        pred = np.asarray(ans["landmarks"], dtype=np.float64)
        gt = np.load(v["landmarks"])
        checks = {"nme": video_nme(pred, gt), "nmf": video_nmf(pred, gt)}
        served = {"nme": ans["metrics"]["nme"]["inter_ocular"], "nmf": ans["metrics"]["nmf"]["nmj"]}
        for key in checks:
            if not np.isclose(checks[key], served[key], rtol=1e-9):
                raise RuntimeError(f"{v['id']}: served {key} {served[key]} != recomputed {checks[key]}")
        per_video.append(
            {
                "id": v["id"],
                "frames": len(pred),
                "nme_io": served["nme"],
                "nmf": served["nmf"],
                "nfe_mean": float(np.mean(ans["nfe"])),
            }
        )
    frames = sum(p["frames"] for p in per_video)
    result = {
        "status": "ok",
        "videos": len(per_video),
        "frames": frames,
        "request_latency_s": round(latency, 3),
        "frames_per_s": round(frames / latency, 1),
        "startup_s": round(startup_s, 1),
        "model_trained": bool(model_info.get("trained", True)),
        "nme_io_mean": float(np.mean([p["nme_io"] for p in per_video])),
        "nmf_mean": float(np.mean([p["nmf"] for p in per_video])),
        "per_video": per_video,
    }
    write_text_atomic(out, json.dumps(result, indent=2))
    return result
