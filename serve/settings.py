"""Settings of the scoring service: the ``serve:`` section of params.yaml, overridable per deployment.

The schema (pydantic models that forbid unknown keys) is :mod:`ldeq_shared.serve_settings`, read through the one
typed configuration layer :func:`ldeq_shared.params.load_params`; this module re-exports it. Relative paths
(checkpoint, jobs folders) are resolved against a base folder by :func:`load_settings` before the settings are
shipped to the replicas, whose working directory is Ray's session folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ldeq_shared.params import load_params
from ldeq_shared.serve_settings import (
    DEFAULT_TOKEN_ENV,
    BatchSettings,
    DetectorSettings,
    InferenceSettings,
    JobSettings,
    Limits,
    ModelSource,
    RwRDefaults,
    ServeSettings,
    check_filter_name,
    validate_serve,
)

__all__ = [
    "DEFAULT_TOKEN_ENV",
    "BatchSettings",
    "DetectorSettings",
    "InferenceSettings",
    "JobSettings",
    "Limits",
    "ModelSource",
    "RwRDefaults",
    "ServeSettings",
    "check_filter_name",
    "load_settings",
    "resolve_paths",
]


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _abs(path: str | None, base: Path) -> str | None:
    if path is None or "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _abs_tracking_uri(uri: str | None, base: Path) -> str | None:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/relative.db`` (replicas run in Ray's session folder)."""
    if uri is None:
        return None
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(base / uri[len(prefix) :])
    if "://" not in uri:
        return str(base / uri) if not Path(uri).is_absolute() else uri
    return uri


def resolve_paths(settings: ServeSettings, base: str | os.PathLike[str]) -> ServeSettings:
    """Copy of ``settings`` with relative local paths (and a relative sqlite tracking URI) made absolute."""
    base = Path(base).resolve()
    model = settings.model.model_copy(
        update={
            "checkpoint": _abs(settings.model.checkpoint, base),
            "mlflow_tracking_uri": _abs_tracking_uri(
                settings.model.mlflow_tracking_uri or ("sqlite:///mlflow.db" if settings.model.mlflow_name else None),
                base,
            ),
        }
    )
    jobs = settings.jobs.model_copy(
        update={"allowed_root": _abs(settings.jobs.allowed_root, base), "jobs_dir": _abs(settings.jobs.jobs_dir, base)}
    )
    return settings.model_copy(update={"model": model, "jobs": jobs})


def load_settings(
    params_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ServeSettings:
    """Settings from the ``serve:`` section of ``params_file`` (if given) deep-merged with ``overrides``.

    Relative paths are resolved against ``base_dir`` (default: the params file's folder, else the cwd).
    Raises ``ValueError`` naming the file and the offending key.
    """
    data: Mapping[str, Any] = {}
    if params_file is not None:
        params = load_params(params_file)  # checks the whole file, the serve section included
        data = params.section("serve")
        base_dir = base_dir if base_dir is not None else params.base_dir
    data = _deep_merge(dict(data), overrides or {})
    settings = validate_serve(data, os.fspath(params_file) if params_file is not None else "settings")
    return resolve_paths(settings, base_dir if base_dir is not None else Path.cwd())
