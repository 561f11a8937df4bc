"""The one way ldeq gets a Ray session: use the running one, else attach to ``$RAY_ADDRESS``, else start a local
cluster.

Every entry point that needs Ray (preprocessing, training, evaluation, the serve commands and the serve smoke test)
calls :func:`start_or_attach` with its own options and calls ``ray.shutdown()`` afterwards only when
:attr:`RaySession.owned` is true. Resource options (``num_cpus``, ``object_store_mb``, ``include_dashboard``) apply
only to a local cluster: Ray refuses them when connecting to an existing one. A local cluster is a private
throw-away one, so its token authentication is off (``RAY_AUTH_MODE=disabled`` unless already set; see
docs/stack-notes.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

How = Literal["existing", "attached", "started"]

# Environment defaults of a local cluster (each only where the variable is unset). A private throw-away cluster has
# no token authentication; its one node cannot be drained or preempted, so Ray Train's preemption watcher (an
# extra actor process per training run) has nothing to watch.
LOCAL_CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass(frozen=True)
class RaySession:
    """How :func:`start_or_attach` got its session: ``existing`` (Ray was already initialised in this process),
    ``attached`` (connected to ``address``) or ``started`` (a new local cluster)."""

    how: How
    address: str = ""

    @property
    def owned(self) -> bool:
        """True when this call ran ``ray.init``, so the caller should ``ray.shutdown()`` when done."""
        return self.how != "existing"

    @property
    def label(self) -> str:
        """``existing``, the address attached to, or ``local`` (for reports)."""
        return {"existing": "existing", "started": "local"}.get(self.how, self.address)


def start_or_attach(
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_mb: float | None = None,
    include_dashboard: bool | None = False,
    log_to_driver: bool | None = None,
    logging_level: int | str | None = None,
    configure_logging: bool = True,
    auth_off_on_attach: bool = False,
) -> RaySession:
    """Use the running Ray session, else attach to ``address`` (default ``$RAY_ADDRESS``), else start a local
    cluster with ``num_cpus`` CPUs (None: Ray's default, every core), an object store of ``object_store_mb`` MiB
    (None: Ray's default, 30 % of the memory), the dashboard when ``include_dashboard`` (None: Ray's default) and
    worker output printed here when ``log_to_driver`` (None: Ray's default, on).

    ``logging_level`` (None: Ray's default) and ``configure_logging`` apply to both attaching and starting. With
    ``auth_off_on_attach``, ``RAY_AUTH_MODE`` defaults to ``disabled`` before attaching too (for clusters started
    by ldeq's own tests and scripts); otherwise an attach uses the environment as it is.
    """
    import ray

    if ray.is_initialized():
        return RaySession("existing")
    logging: dict[str, Any] = {"configure_logging": configure_logging}
    if logging_level is not None:
        logging["logging_level"] = logging_level
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if auth_off_on_attach:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, **logging)
        return RaySession("attached", address)
    for key, value in LOCAL_CLUSTER_ENV.items():  # read by the cluster's processes, which inherit this environment
        os.environ.setdefault(key, value)
    local: dict[str, Any] = {"include_dashboard": include_dashboard}
    if log_to_driver is not None:
        local["log_to_driver"] = log_to_driver
    if num_cpus is not None:
        local["num_cpus"] = num_cpus
    if object_store_mb is not None:
        local["object_store_memory"] = int(object_store_mb * 1024**2)
    # address="local": always a new private cluster. Without it ray.init() joins the latest cluster that `ray start`
    # left on this machine (another user's, or another test worker's); joining one is what $RAY_ADDRESS is for.
    ray.init(address="local", **local, **logging)
    return RaySession("started")
