"""The one MLflow model-registry resolver: a registered ldeq model version -> its ``best.pt`` checkpoint.

Evaluation (``pipelines/evaluate``), serving (``serve/model_source``) and the training helpers resolve registered
models only through :func:`resolve_registered_checkpoint` / :func:`load_registered_checkpoint`:

- a reference is ``models:/<name>@<alias>``, ``models:/<name>/<version>``, or a bare ``<name>`` plus an alias
  (``champion``, ``newest``), a version number, or ``latest`` (the highest version);
- the version's checkpoint is ``best.pt`` (our weights-only format) at :data:`CHECKPOINT_PATH` of the MLflow Model
  that training registers (:mod:`ldeq_shared.mlflow_model`), or at the top of the version's artifacts for versions
  registered before the MLflow Model (a plain ``runs:/<run>/model`` folder holding ``best.pt``). Anything else is
  an error naming the model URI: no other ``*.pt`` file is guessed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldeq_core.checkpoints import LoadedCheckpoint, load_checkpoint

CHECKPOINT_FILE = "best.pt"
CHECKPOINT_PATH = f"artifacts/{CHECKPOINT_FILE}"  # inside the MLflow Model (pyfunc artifacts are copied there)
DEFAULT_ALIAS = "champion"


@dataclass(frozen=True)
class RegisteredVersion:
    """One resolved registry version: ``ref`` is what was asked for (``name@alias`` or ``name/version``)."""

    name: str
    version: int
    ref: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``: this exact version (aliases move)."""
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        """The URI as asked, plus the version it resolved to: ``models:/<name>@champion (version 3)``."""
        asked = f"models:/{self.ref}"
        return asked if asked == self.model_uri else f"{asked} (version {self.version})"


@dataclass(frozen=True)
class RegisteredCheckpoint:
    """A registered version's ``best.pt`` downloaded to ``path``."""

    path: Path
    version: RegisteredVersion


def parse_model_ref(ref: str, alias_or_version: str | int | None = None) -> tuple[str, str]:
    """``(name, alias_or_version)`` of ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a bare name
    (``alias_or_version``, default ``champion``)."""
    if ref.startswith("models:/"):
        if alias_or_version is not None:
            raise ValueError(f"{ref}: give the alias or version either in the URI or separately, not both")
        rest = ref.removeprefix("models:/")
        sep = "@" if "@" in rest else "/"
        name, _, which = rest.partition(sep)
        if not name or not which or "/" in which:
            raise ValueError(f"{ref}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return name, which
    if not ref:
        raise ValueError("registered model: empty name")
    return ref, str(DEFAULT_ALIAS if alias_or_version is None else alias_or_version)


def _store_uri(tracking_uri: str | None) -> str:
    """``tracking_uri``, or MLflow's default (``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the cwd)."""
    if tracking_uri:
        return tracking_uri
    import mlflow

    return str(mlflow.get_tracking_uri())


def resolve_model_version(
    ref: str, alias_or_version: str | int | None = None, *, tracking_uri: str | None
) -> RegisteredVersion:
    """The registry version of ``ref`` (see :func:`parse_model_ref`); ``latest`` is the highest version number.
    An unknown model, alias or version raises ``ValueError`` (``... not found in <tracking uri>``)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, which = parse_model_ref(ref, alias_or_version)
    shown = f"{name}/{which}" if which.isdigit() else f"{name}@{which}"
    tracking_uri = _store_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if which.isdigit():
            mv = client.get_model_version(name, which)
        elif which == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ValueError(f"models:/{shown}: registered model {name!r} not found in {tracking_uri} (no version)")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version_by_alias(name, which)
    except MlflowException as exc:
        msg = f"models:/{shown}: registered model version not found in {tracking_uri}: {exc.message}"
        raise ValueError(msg) from exc
    return RegisteredVersion(
        name=name,
        version=int(mv.version),
        ref=shown,
        run_id=mv.run_id or None,
        source=str(mv.source),
        tags=dict(mv.tags or {}),
    )


def _checkpoint_uri(mv: RegisteredVersion, tracking_uri: str) -> str:
    """Artifact URI of the version's ``best.pt``: inside the MLflow Model, else (older versions) at the top."""
    import mlflow

    try:
        top = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(mv.source, tracking_uri=tracking_uri)}
    except Exception as exc:  # an unreachable or deleted source
        raise ValueError(f"{mv.describe()}: cannot list its artifacts at {mv.source}: {exc}") from exc
    if "MLmodel" in top:
        return f"{mv.source.rstrip('/')}/{CHECKPOINT_PATH}"
    if CHECKPOINT_FILE in top:
        return f"{mv.source.rstrip('/')}/{CHECKPOINT_FILE}"
    raise ValueError(
        f"{mv.describe()}: no {CHECKPOINT_PATH} (MLflow Model) or {CHECKPOINT_FILE} among the "
        f"artifacts of {mv.source} (found: {sorted(top) or 'nothing'})"
    )


def resolve_registered_checkpoint(
    ref: str,
    alias_or_version: str | int | None = None,
    *,
    tracking_uri: str | None,
    dst: str | os.PathLike[str],
) -> RegisteredCheckpoint:
    """Resolve ``ref`` in the registry of ``tracking_uri`` (None: MLflow's default) and download its ``best.pt``
    into the folder ``dst``."""
    import mlflow

    tracking_uri = _store_uri(tracking_uri)
    mv = resolve_model_version(ref, alias_or_version, tracking_uri=tracking_uri)
    uri = _checkpoint_uri(mv, tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(uri, dst_path=os.fspath(dst), tracking_uri=tracking_uri)
    except Exception as exc:
        raise ValueError(f"{mv.describe()}: cannot download {uri}: {exc}") from exc
    if not Path(local).is_file():
        raise ValueError(f"{mv.describe()}: {uri} is not a checkpoint file")
    return RegisteredCheckpoint(Path(local), mv)


def load_registered_checkpoint(
    ref: str,
    alias_or_version: str | int | None = None,
    *,
    tracking_uri: str | None,
    map_location: Any = "cpu",
) -> tuple[LoadedCheckpoint, RegisteredVersion]:
    """:func:`resolve_registered_checkpoint` into a temporary folder, then :func:`load_checkpoint` (safe, strict)."""
    with tempfile.TemporaryDirectory(prefix="ldeq-registry-") as tmp:
        ckpt = resolve_registered_checkpoint(ref, alias_or_version, tracking_uri=tracking_uri, dst=tmp)
        try:
            loaded = load_checkpoint(ckpt.path, map_location=map_location)
        except ValueError as exc:
            raise ValueError(f"{ckpt.version.describe()}: {exc}") from exc
    return loaded, ckpt.version
