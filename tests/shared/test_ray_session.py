"""start_or_attach: which ``ray.init`` options each case passes (a stand-in ``ray`` module: no cluster starts)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import types
from typing import Any

import pytest

from ldeq_shared.net import free_port
from ldeq_shared.ray_session import LOCAL_CLUSTER_ENV, start_or_attach


class FakeRay(types.ModuleType):
    def __init__(self, initialized: bool = False) -> None:
        super().__init__("ray")
        self.initialized = initialized
        self.calls: list[dict[str, Any]] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        self.initialized = True


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key in LOCAL_CLUSTER_ENV:
        monkeypatch.delenv(key, raising=False)
    return ray


def test_a_running_session_is_used_as_is(fake_ray: FakeRay) -> None:
    fake_ray.initialized = True
    session = start_or_attach(num_cpus=2, object_store_mb=512)
    assert session.how == "existing" and not session.owned and session.label == "existing"
    assert fake_ray.calls == []


def test_a_local_cluster_gets_the_resource_options_and_no_token_auth(fake_ray: FakeRay) -> None:
    session = start_or_attach(num_cpus=3, object_store_mb=512, log_to_driver=False, logging_level=logging.WARNING)
    assert session.how == "started" and session.owned and session.label == "local"
    assert fake_ray.calls == [
        {
            "address": "local",
            "include_dashboard": False,
            "log_to_driver": False,
            "num_cpus": 3,
            "object_store_memory": 512 * 1024**2,
            "configure_logging": True,
            "logging_level": logging.WARNING,
        }
    ]
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"


def test_a_local_cluster_keeps_environment_settings_made_by_the_user(fake_ray: FakeRay, monkeypatch) -> None:
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    start_or_attach()
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1" and os.environ["RAY_AUTH_MODE"] == "disabled"


def test_ray_defaults_are_left_to_ray(fake_ray: FakeRay) -> None:
    start_or_attach(include_dashboard=None, configure_logging=False)
    assert fake_ray.calls == [{"address": "local", "include_dashboard": None, "configure_logging": False}]


@pytest.mark.parametrize("auth_off", [False, True])
def test_attaching_passes_no_resource_option(fake_ray: FakeRay, monkeypatch, auth_off: bool) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    session = start_or_attach(
        num_cpus=3, object_store_mb=512, log_to_driver=False, logging_level=logging.WARNING, auth_off_on_attach=auth_off
    )
    assert session.how == "attached" and session.owned and session.label == "10.0.0.1:6379"
    assert fake_ray.calls == [{"address": "10.0.0.1:6379", "configure_logging": True, "logging_level": logging.WARNING}]
    assert os.environ.get("RAY_AUTH_MODE") == ("disabled" if auth_off else None)
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ  # a cluster we join is not ours to configure


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
