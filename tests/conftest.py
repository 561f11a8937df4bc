"""Shared fixtures: deterministic seeds and the location of the shared real-data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.ray_fixture"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n 2` two workers share the cores: one torch thread each (and in the processes they start),
    # since two spinning two-thread OpenMP pools on two cores are many times slower than one thread each.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (``$LDEQ_SHARED_DATA`` or ``<repo>/../shared/data``); skips when absent."""
    path = Path(os.environ.get("LDEQ_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set LDEQ_SHARED_DATA)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): on a busy
    2-core machine two torch threads are much slower than one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


RAY_GROUP = "ray-session"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into node-id suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Work units for ``pytest -n 2 --dist loadgroup`` (pytest-xdist): every test of the session Ray cluster
    (``ray_local``, and so the Serve deployment) runs on one worker, in collection order, since they share that
    cluster's CPUs; every other test module is one unit, so its module-scoped fixtures are built once."""
    for item in items:
        group = RAY_GROUP if "ray_local" in item.fixturenames else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
