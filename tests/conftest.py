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


def xdist_group(item: pytest.Item) -> str:
    """The unit of work of ``item`` under ``pytest -n 2 --dist loadgroup`` (pytest-xdist).

    Tests of the session Ray cluster (``ray_local``) share that cluster's CPUs, so they run in order on one worker:
    the Serve tests (one session deployment) in one group, the data/train/evaluate tests in another, each group with
    its own cluster on whichever worker takes it. Every other test module is one unit, so its module-scoped fixtures
    are built once."""
    module = item.nodeid.split("::")[0]
    if "ray_local" not in item.fixturenames:
        return module
    return "ray-serve" if module.startswith(("tests/serve/", "tests/bench/test_bench_serve")) else "ray-pipelines"


# Under `--dist loadgroup --no-loadscope-reorder` the longest units go first (each a minute or more serially); the
# rest keep their collection order.
FIRST_UNITS = ("ray-pipelines", "tests/pipelines/test_train_multinode.py", "ray-serve")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into node-id suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its :func:`xdist_group`; under ``--dist loadgroup`` put the longest units first."""
    groups = {item.nodeid: xdist_group(item) for item in items}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    if config.getoption("dist", "no") == "loadgroup":
        rank = {g: i for i, g in enumerate(FIRST_UNITS)}
        items.sort(key=lambda item: rank.get(groups[item.nodeid], len(rank)))  # stable: order within a unit kept
