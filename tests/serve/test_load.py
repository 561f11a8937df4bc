"""Bounded load test, then a replica killed mid-load: Serve recovers and a job submitted before the kill completes.

Writes ``load_results.json`` (latency percentiles, failures, recovery time) under the test's tmp dir and prints it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray

from tests.serve.conftest import Service, wait_healthy
from tests.serve.helpers import AUTH, npy_bytes, write_clip
from tests.serve.test_jobs_http import wait_job

pytestmark = pytest.mark.slow


async def _load(url: str, files: list[Any], n: int, concurrency: int) -> list[tuple[float, int]]:
    """``n`` POST /v1/score requests, ``concurrency`` at a time; (latency s, status; 0 = connection error)."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as c:

        async def one() -> tuple[float, int]:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/score", files=files)
                    ok = r.status_code == 200 and len(r.json()["videos"][0]["nfe"]) == 6
                    status = r.status_code if ok or r.status_code != 200 else -1
                except httpx.HTTPError:
                    status = 0
                return time.perf_counter() - t0, status

        return await asyncio.gather(*(one() for _ in range(n)))


def _replica_actor_names(app: str) -> list[str]:
    prefix = f"SERVE_REPLICA::{app}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def test_load_then_kill_a_replica(service: Service, tmp_path: Path) -> None:
    _, boxes = write_clip(tmp_path / "small.mp4", 31, 6, size=(96, 72))
    files = [
        ("videos", ("small.mp4", (tmp_path / "small.mp4").read_bytes())),
        ("boxes", ("small.npy", npy_bytes(boxes))),
    ]
    report: dict[str, Any] = {"requests": 200, "concurrency": 16, "video": "6 frames 96x72 with boxes"}

    # Phase 1: 200 requests, 16 in flight, no failure allowed.
    with service.client() as c:
        stats0 = c.get("/v1/model").json()["batching"]["stats"]
    t0 = time.perf_counter()
    results = asyncio.run(_load(service.url, files, 200, 16))
    wall = time.perf_counter() - t0
    lat = np.array([r[0] for r in results])
    failures = [r[1] for r in results if r[1] != 200]
    report.update(
        failures=len(failures),
        wall_s=round(wall, 3),
        throughput_rps=round(200 / wall, 2),
        p50_ms=round(1000 * float(np.percentile(lat, 50)), 1),
        p95_ms=round(1000 * float(np.percentile(lat, 95)), 1),
        max_ms=round(1000 * float(lat.max()), 1),
    )
    with service.client() as c:
        stats1 = c.get("/v1/model").json()["batching"]["stats"]
    sizes = {k: v - stats0["call_sizes"].get(k, 0) for k, v in stats1["call_sizes"].items()}
    calls = stats1["model_calls"] - stats0["model_calls"]
    report["batching_during_load"] = {
        "frames": stats1["frames"] - stats0["frames"],
        "model_calls": calls,
        "mean_call_size": round((stats1["frames"] - stats0["frames"]) / max(calls, 1), 2),
        "call_sizes": {k: v for k, v in sizes.items() if v},
    }
    assert report["batching_during_load"]["frames"] == 1200
    assert not failures, f"failed statuses: {failures[:10]}"

    # Phase 2: a job is submitted, load runs, the replica is killed mid-load.
    jdir = service.root / "killjob"
    (jdir / "videos").mkdir(parents=True)
    (jdir / "bboxes").mkdir()
    for i in range(6):
        _, b = write_clip(jdir / "videos" / f"v{i}.mp4", 40 + i, 30)
        np.save(jdir / "bboxes" / f"v{i}.npy", b)
    with service.client() as c:
        before = c.get("/healthz").json()["replica"]
        r = c.post("/v1/jobs", json={"folder": "killjob"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
    background: list[tuple[float, int]] = []
    loader = threading.Thread(target=lambda: background.extend(asyncio.run(_load(service.url, files, 60, 4))))
    loader.start()
    time.sleep(1.0)
    names = _replica_actor_names(service.app)
    assert len(names) == 1, names
    t_kill = time.perf_counter()
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    health = wait_healthy(service.url, timeout=120, not_replica=before)
    report["recovery_s"] = round(time.perf_counter() - t_kill, 2)
    loader.join(timeout=180)
    report["during_kill"] = {"requests": len(background), "failed": sum(s != 200 for _, s in background)}
    assert health["replica"] != before

    # After recovery every request succeeds, and the job submitted before the kill has all its results.
    after = asyncio.run(_load(service.url, files, 20, 4))
    report["after_recovery_failures"] = sum(s != 200 for _, s in after)
    assert report["after_recovery_failures"] == 0
    with service.client() as c:
        job = wait_job(c, job_id, timeout=150)
    report["job"] = {"status": job["status"], "progress": job["progress"], "runs": len(job.get("runs", []))}
    assert job["status"] == "done" and job["progress"]["videos_done"] == 6
    assert all(Path(v["result"]).is_file() for v in job["videos"])

    out = tmp_path / "load_results.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nload test report ({out}):\n{json.dumps(report, indent=2)}")
