"""A second app in the same Serve instance (route prefix /strict): exact batching, request timeout, no auth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serve.conftest import Service, wait_healthy
from tests.serve.helpers import npy_bytes, write_clip

pytestmark = pytest.mark.slow
APP = "ldeq-strict"


@pytest.fixture(scope="module")
def strict(service: Service) -> Iterator[str]:
    from ray import serve

    from serve.app import make_app
    from serve.settings import load_settings

    settings = load_settings(
        overrides={
            "model": {"checkpoint": str(service.checkpoint)},
            "batch": {"exact": True},
            "limits": {"request_timeout_s": 0.5, "max_upload_bytes": 1024 * 1024},
            "auth_token_env": None,
        }
    )
    serve.run(make_app(settings), name=APP, route_prefix="/strict", blocking=False)
    url = f"{service.url}/strict"
    wait_healthy(url)
    try:
        yield url
    finally:
        serve.delete(APP)


def _files(path: Path, boxes: np.ndarray) -> list[Any]:
    return [("videos", (path.name, path.read_bytes())), ("boxes", (f"{path.stem}.npy", npy_bytes(boxes)))]


def _stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/model", timeout=30).json()["batching"]["stats"]


def test_exact_mode_is_bitwise_equal_under_concurrency(strict: str, tmp_path: Path) -> None:
    clips = {}
    for i, n in enumerate((8, 11, 6)):
        _, boxes = write_clip(tmp_path / f"e{i}.mp4", 50 + i, n)
        clips[f"e{i}"] = (tmp_path / f"e{i}.mp4", boxes)

    def score(name: str) -> dict[str, Any]:
        r = httpx.post(f"{strict}/v1/score", files=_files(*clips[name]), timeout=60)  # no auth header needed
        assert r.status_code == 200, r.text
        return r.json()["videos"][0]

    alone = [score(n) for n in clips]
    before = _stats(strict)
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(score, clips))
    after = _stats(strict)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(np.asarray(a["landmarks"]), np.asarray(b["landmarks"]))
        assert a["nfe"] == b["nfe"]
    frames, ticks = after["frames"] - before["frames"], after["ticks"] - before["ticks"]
    assert frames == 25 and ticks < frames  # frames of different videos shared ticks


def test_request_timeout_and_prefix_limits(strict: str, tmp_path: Path) -> None:
    _, boxes = write_clip(tmp_path / "long.mp4", 60, 390, size=(128, 96))
    before = _stats(strict)["frames"]
    t0 = time.perf_counter()
    r = httpx.post(f"{strict}/v1/score", files=_files(tmp_path / "long.mp4", boxes), timeout=60)
    assert (r.status_code, r.json()["error"]) == (504, "timeout"), r.text
    assert "not finished within 0.5 s" in r.json()["detail"] and time.perf_counter() - t0 < 10
    deadline = time.monotonic() + 3
    while _stats(strict)["active_videos"] and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = _stats(strict)
    assert stats["active_videos"] == 0  # the timed-out video was dropped from the batcher ...
    assert stats["frames"] - before < 390  # ... before it was finished
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (1024 * 1024 + 10))
    r = httpx.post(f"{strict}/v1/score", files=[("videos", ("big.mp4", big.read_bytes()))], timeout=60)
    assert r.status_code == 413 and "limit of 1048576 bytes" in r.json()["detail"]  # path seen under /strict
