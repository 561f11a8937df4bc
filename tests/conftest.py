"""Shared fixtures: deterministic seeds and the location of the shared real-data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.ray_fixture"]


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
