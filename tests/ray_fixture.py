"""A session-wide local Ray cluster for tests (Ray Data, Train, Serve), shared by every test that asks for it.

Usage: add ``ray_local`` to a test's arguments. It yields the GCS address, so a subprocess (for example
``ldeq data preprocess`` under ``dvc repro``) can join the same cluster with ``RAY_ADDRESS=<address>``.
Sized for a 2-core machine: tasks and actors should ask for fractional CPUs (``num_cpus=0.5``) so that
Ray Data read tasks can still be scheduled (see docs/stack-notes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[str]:
    """Start (once per session) a 2-CPU local Ray cluster without dashboard or token auth; yield its address.

    If Ray is already initialised in this process, that cluster is used and left running.
    """
    from ldeq_shared.ray_session import LOCAL_CLUSTER_ENV

    # The cluster's processes inherit this environment: the local-cluster defaults of `ldeq`'s own clusters, and a
    # Ray Train controller that polls its workers every 0.5 s instead of 2 s (each training run ends sooner).
    for key, value in {**LOCAL_CLUSTER_ENV, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}.items():
        os.environ.setdefault(key, value)
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
            address="local",  # a new cluster, never one that `ray start` (a two-node test) left running
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        if started:
            ray.shutdown()
