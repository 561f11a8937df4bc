"""The training configuration, read from the ``model:`` and ``train:`` sections of a params file.

The schema (:class:`TrainConfig`, :class:`AugmentConfig`, override syntax, path resolution) is
:mod:`ldeq_shared.train_settings`, part of the one typed configuration layer :mod:`ldeq_shared.params`; this module
re-exports it for the pipelines and adds :func:`load_train_config` (the params file plus ``--set`` overrides).
"""

from __future__ import annotations

import os

from ldeq_shared.params import ParamsError, load_params
from ldeq_shared.train_settings import (
    AUTO_DATA_THREADS_MAX,
    AugmentConfig,
    GradModeName,
    LossKind,
    TrainConfig,
    resolve_tracking_uri,
)

__all__ = [
    "AUTO_DATA_THREADS_MAX",
    "AugmentConfig",
    "GradModeName",
    "LossKind",
    "TrainConfig",
    "load_train_config",
    "resolve_tracking_uri",
]


def load_train_config(params_path: str | os.PathLike[str], overrides: list[str] | None = None) -> TrainConfig:
    """TrainConfig from the ``model:`` and ``train:`` sections of ``params_path``, plus ``key=value`` overrides."""
    cfg = load_params(params_path).train
    try:
        return cfg.with_overrides(overrides or [])
    except ValueError as exc:  # the overrides: unknown key, bad value, not key=value
        raise ParamsError(f"{params_path}: {exc}") from exc
