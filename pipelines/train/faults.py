"""Test-only fault injection for the training loop: kill one worker mid-run to exercise Ray Train's restart and
checkpoint resume. Nothing here is part of the user-facing configuration (``TrainConfig`` / ``params.yaml``).

A test arms it in the driver process (the one calling ``run_training``) with two environment variables:

- ``LDEQ_TEST_FAIL_AT_EPOCH``: the 1-based epoch in which the last rank exits abruptly;
- ``LDEQ_TEST_FAIL_MARKER``: a file the failing worker writes before it exits; while it exists, nothing fails
  again (so the restarted worker group, and any later run, trains normally).

Ray workers do not see the driver's environment (the cluster may have been started earlier), so
:func:`pipelines.train.trainer.build_trainer` forwards the plan to the workers in the train-loop config under
:data:`CONFIG_KEY`, and each worker arms it with :func:`arm`. Unset (always, outside the tests), nothing happens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_EPOCH = "LDEQ_TEST_FAIL_AT_EPOCH"
ENV_MARKER = "LDEQ_TEST_FAIL_MARKER"
CONFIG_KEY = "test_fault"  # key of the plan in the train-loop config (absent unless armed)
FAIL_DELAY_S = 5.0
EXIT_CODE = 3

_armed: dict[str, Any] | None = None  # this worker process's plan


def plan_from_env() -> dict[str, Any] | None:
    """The plan armed in this (driver) process's environment, or None; both variables or neither."""
    epoch, marker = os.environ.get(ENV_EPOCH), os.environ.get(ENV_MARKER)
    if not epoch and not marker:
        return None
    if not (epoch and marker):
        raise ValueError(f"test fault injection: set both {ENV_EPOCH} and {ENV_MARKER}, or neither")
    return {"epoch": int(epoch), "marker": marker}


def arm(plan: Mapping[str, Any] | None) -> None:
    """Arm (or, with None, disarm) the plan in this worker process."""
    global _armed
    _armed = dict(plan) if plan else None


def maybe_fail(epoch: int, rank: int, world: int) -> None:
    """If armed: the last rank exits abruptly in the plan's epoch (``epoch`` is 0-based), once (marker file)."""
    plan = _armed
    if plan is None or epoch + 1 != plan["epoch"] or rank != world - 1:
        return
    marker = Path(plan["marker"])
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"rank {rank} exited in epoch {epoch + 1}\n")
    # The Train controller collects reports when it polls the workers (every 2 s); wait so that the previous
    # epoch's checkpoint is registered and the test knows which checkpoint the restarted group must resume from.
    time.sleep(FAIL_DELAY_S)
    os._exit(EXIT_CODE)
