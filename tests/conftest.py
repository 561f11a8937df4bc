"""Shared fixtures: deterministic seeds and the location of the shared real-data folder."""

from __future__ import annotations

import os
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
