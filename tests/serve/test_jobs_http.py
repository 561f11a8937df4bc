"""Batch jobs over HTTP: a WFLW-V folder with bad videos, Parquet results and the on-disk manifest."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from ldeq_core.metrics import video_nme, video_nmf
from serve.jobs import read_results_parquet
from tests.serve.conftest import Service
from tests.serve.helpers import make_bad_videos, npy_bytes, write_clip

pytestmark = pytest.mark.slow


def wait_job(c: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("done", "failed"):
            return r.json()
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s: {r.json()}")


def test_job_over_a_folder(service: Service) -> None:
    root = service.root / "set1"
    for sub in ("videos", "bboxes", "landmarks"):
        (root / sub).mkdir(parents=True)
    gt_a, boxes_a = write_clip(root / "videos" / "a.mp4", 11, 12)
    _, boxes_b = write_clip(root / "videos" / "b.mp4", 12, 9)
    np.save(root / "bboxes" / "a.npy", boxes_a)
    np.save(root / "landmarks" / "a.npy", gt_a)
    np.save(root / "bboxes" / "b.npy", boxes_b)
    bad = make_bad_videos(root, root / "videos" / "a.mp4")
    shutil.copy(bad["corrupt"], root / "videos" / "broken.mp4")
    write_clip(root / "videos" / "noface.mp4", 13, 5)  # no boxes, and no face for the detector
    with service.client() as c:
        r = c.post("/v1/jobs", json={"folder": "set1", "options": {"budget_nfe": 3}})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
        direct = c.post(
            "/v1/score",
            files=[
                ("videos", ("a.mp4", (root / "videos" / "a.mp4").read_bytes())),
                ("boxes", ("a.npy", npy_bytes(boxes_a))),
            ],
            data={"budget_nfe": "3"},
        ).json()["videos"][0]
    assert job["status"] == "done"
    assert job["progress"] == {"videos_total": 4, "videos_done": 2, "videos_failed": 2, "frames_done": 21}
    by_id = {v["id"]: v for v in job["videos"]}
    assert sorted(by_id) == ["a", "b", "broken", "noface"]
    assert by_id["broken"]["status"] == "failed"
    assert by_id["broken"]["error"]["error"] == "invalid_video"
    assert "set1/videos/broken.mp4: no frame could be decoded" in by_id["broken"]["error"]["detail"]
    assert by_id["noface"]["error"]["error"] == "no_face_detected"
    # The manifest on disk is what GET returned (state is read back from disk).
    on_disk = json.loads((service.jobs_dir / job["job_id"] / "manifest.json").read_text())
    assert on_disk == {k: v for k, v in job.items() if k != "manifest_path"}
    # Parquet results, read with plain pyarrow.
    table = pq.read_table(by_id["a"]["result"])
    assert table.column_names[:4] == ["frame", "landmarks", "nfe", "full_solve"] and len(table) == 12
    lm = np.asarray(table.column("landmarks").to_pylist()).reshape(12, 98, 2)
    assert table.column("nfe").to_pylist() == [6] + [3] * 11
    np.testing.assert_allclose(
        np.c_[[table.column(k).to_numpy() for k in ("box_x1", "box_y1", "box_x2", "box_y2")]].T, boxes_a
    )
    # Same landmarks as a synchronous request with the same options (a job shares batches: rounding only).
    assert direct["nfe"] == table.column("nfe").to_pylist()
    np.testing.assert_allclose(lm, np.asarray(direct["landmarks"]), atol=1e-3)
    metrics = by_id["a"]["summary"]["metrics"]
    assert metrics["nme"]["face"] == pytest.approx(video_nme(lm, gt_a, "face"), rel=1e-12)
    assert metrics["nmf"]["nmj"] == pytest.approx(video_nmf(lm, gt_a), rel=1e-12)
    assert by_id["b"]["summary"]["metrics"] is None
    back = read_results_parquet(by_id["b"]["result"])
    assert back["landmarks"].shape == (9, 98, 2) and back["summary"]["n_frames"] == 9


def test_job_with_explicit_entries_and_file_uri(service: Service) -> None:
    d = service.root / "loose"
    d.mkdir()
    _, boxes = write_clip(d / "clip.mp4", 21, 6)
    np.save(d / "clip_boxes.npy", boxes)
    body = {
        "videos": [
            {"path": "loose/clip.mp4", "boxes": "loose/clip_boxes.npy", "id": "first"},
            {"path": f"file://{d / 'clip.mp4'}", "boxes": f"file://{d / 'clip_boxes.npy'}", "id": "first"},
            {"path": "loose/missing.mp4"},
        ]
    }
    with service.client() as c:
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"])
    ids = [v["id"] for v in job["videos"]]
    assert ids == ["first", "first_1", "missing"]  # ids made unique
    assert [v["status"] for v in job["videos"]] == ["done", "done", "failed"]
    assert job["videos"][2]["error"] == {
        "error": "not_found",
        "detail": "loose/missing.mp4: file not found",
        "status": 404,
    }
    one, two = (read_results_parquet(v["result"]) for v in job["videos"][:2])
    np.testing.assert_allclose(one["landmarks"], two["landmarks"], atol=1e-3)
