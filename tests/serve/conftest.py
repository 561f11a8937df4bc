"""One real Ray Serve deployment of the service on 127.0.0.1, shared by the HTTP tests of this folder.

It runs in the session's shared Ray cluster (``ray_local`` from tests/ray_fixture.py); started on first use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ldeq_shared.net import free_port
from tests.serve.helpers import AUTH, TOKEN, write_tiny_checkpoint

APP = "ldeq-test"


@dataclass(frozen=True)
class Service:
    url: str
    root: Path  # jobs.allowed_root
    jobs_dir: Path
    checkpoint: Path
    app: str

    def client(self, auth: bool = True, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH if auth else {}, timeout=timeout)


def wait_healthy(url: str, timeout: float = 90.0, not_replica: str | None = None) -> dict:
    """Poll ``/healthz`` until it answers 200 (from a replica other than ``not_replica`` when given)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/healthz", timeout=5)
            if r.status_code == 200 and r.json().get("replica") != not_replica:
                return r.json()
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url}/healthz not healthy after {timeout} s (last: {last})")


@pytest.fixture(scope="session")
def service(ray_local: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from ray import serve

    from serve.app import make_app
    from serve.settings import load_settings

    base = tmp_path_factory.mktemp("serve")
    ckpt = write_tiny_checkpoint(base / "model.pt")
    root, jobs = base / "data", base / "jobs"
    root.mkdir()
    settings = load_settings(
        overrides={
            "model": {"checkpoint": str(ckpt)},
            "auth_token": TOKEN,
            "limits": {"max_upload_bytes": 2 * 1024 * 1024, "max_frames": 400, "request_timeout_s": 120},
            "jobs": {"allowed_root": str(root), "jobs_dir": str(jobs), "lease_s": 4.0, "video_concurrency": 2},
            "batch": {"max_batch_size": 32, "wait_s": 0.005},
        }
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(make_app(settings), name=APP, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    try:
        yield Service(url, root, jobs, ckpt, APP)
    finally:
        serve.shutdown()
