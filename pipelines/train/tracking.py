"""MLflow helpers: experiment and run bookkeeping, rank-0 logging, the model registry.

Registry versions are MLflow Models (pyfunc, :mod:`ldeq_shared.mlflow_model`): :func:`register_checkpoint` logs the
run's ``model/best.pt`` artifact as the run's LoggedModel ``ldeq-pyfunc`` (signature, input example, the checkpoint at
``artifacts/best.pt``) and registers that as a new version, so ``mlflow.pyfunc.load_model("models:/<name>@champion")``
and ``mlflow models serve`` work. Our own consumers (evaluation, serving) resolve versions with the one resolver,
:mod:`ldeq_shared.registry`, which also reads versions registered before (a plain ``runs:/<run>/model`` folder).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_ARTIFACT_DIR = "model"
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
TAG_RAY_RUN = "ldeq.ray_run"
TAG_STORAGE = "ldeq.storage_path"
TAG_KIND = "ldeq.kind"


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``params.yaml``, else the source tree."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").is_file():
            return d
    return Path(__file__).resolve().parents[2]


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` whose tracking and registry stores are both ``uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_root: str | None) -> str:
    """Id of experiment ``name``, created with artifacts under ``artifact_root/<name>`` for local stores."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if artifact_root and uri.startswith("sqlite:"):
        location = str(Path(artifact_root) / name)
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def find_or_create_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    *,
    tags: Mapping[str, str],
    reuse: bool,
    parent_run_id: str | None = None,
) -> str:
    """Run id of the newest run of ``experiment_id`` with the same ray-run and storage tags when ``reuse``
    (a resumed Ray run keeps logging into its MLflow run), else of a new run."""
    client = mlflow_client(uri)
    if reuse and TAG_RAY_RUN in tags:
        query = f"tags.`{TAG_RAY_RUN}` = '{tags[TAG_RAY_RUN]}'"
        for run in client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=20):
            if run.data.tags.get(TAG_STORAGE) == tags.get(TAG_STORAGE):
                return str(run.info.run_id)
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    return str(run.info.run_id)


class RunLogger:
    """Rank-0 logging into an existing run through the client API (no global active-run state)."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.client = mlflow_client(uri)
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params not yet on the run; a changed value (a resumed run with new settings) becomes a tag."""
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        changed = [
            RunTag(f"changed_param.{k}", str(v)[:5000])
            for k, v in params.items()
            if k in existing and existing[k] != str(v)[:6000]
        ]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def register_checkpoint(
    uri: str,
    name: str,
    run_id: str,
    metrics: Mapping[str, float],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    aliases: tuple[str, ...] = ("newest",),
    champion_metric: str = "val_nme",
) -> dict[str, Any]:
    """Log ``checkpoint`` (default: the run's ``model/best.pt`` artifact, what rank 0 logs) as the run's MLflow Model
    (LoggedModel ``ldeq-pyfunc``, :func:`ldeq_shared.mlflow_model.log_landmark_model`) and register it as a new
    version of ``name`` with ``metrics`` as tags; set ``aliases``, and ``champion`` when the version's
    ``champion_metric`` is lower than the current champion's (or no champion).
    (MLflow reserves the alias ``latest``: ``models:/<name>/latest`` already means the newest version.)

    Returns ``{"name", "version", "aliases", "source", "model_id"}`` (``source``: the logged model's artifact
    location, holding ``MLmodel`` and ``artifacts/best.pt``).
    """
    from mlflow.exceptions import MlflowException

    from ldeq_shared.mlflow_model import log_landmark_model

    client = mlflow_client(uri)
    with tempfile.TemporaryDirectory(prefix="ldeq-register-") as tmp:
        path = Path(checkpoint) if checkpoint is not None else _download_run_checkpoint(uri, run_id, tmp)
        logged = log_landmark_model(uri, run_id, path)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="ldeq Landmark DEQ: MLflow pyfunc models (crops or frames + boxes -> landmarks)"
        )
    source = str(logged.artifact_location)
    tags = {k: f"{float(v):.6g}" for k, v in metrics.items() if v is not None}
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags, model_id=logged.model_id)
    set_aliases = list(aliases)
    value = metrics.get(champion_metric)
    if value is not None:
        try:
            champ = client.get_model_version_by_alias(name, "champion")
            best = float(champ.tags.get(champion_metric, "inf"))
        except MlflowException:
            best = float("inf")
        if float(value) < best:
            set_aliases.append("champion")
    for alias in set_aliases:
        client.set_registered_model_alias(name, alias, mv.version)
    return {
        "name": name,
        "version": int(mv.version),
        "aliases": set_aliases,
        "source": source,
        "model_id": logged.model_id,
    }


def _download_run_checkpoint(uri: str, run_id: str, dst: str) -> Path:
    """The run's ``model/best.pt`` artifact, downloaded into ``dst``; ``ValueError`` naming the URI if absent."""
    import mlflow

    artifact = f"runs:/{run_id}/{MODEL_ARTIFACT_DIR}/{BEST_FILE}"
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact, dst_path=dst, tracking_uri=uri))
    except Exception as exc:
        raise ValueError(f"{artifact}: cannot register it, no such checkpoint in {uri} ({exc})") from exc


def load_registered_model(name: str, alias_or_version: str | int = "champion", tracking_uri: str | None = None) -> Any:
    """The ``LandmarkDEQ`` (eval mode, CPU) of a registered version's ``best.pt`` (:mod:`ldeq_shared.registry`).

    ``alias_or_version``: an alias (``champion``, ``newest``), ``latest`` (the highest version) or a version
    number. ``tracking_uri`` defaults to the project's ``sqlite:///mlflow.db`` resolved against
    :func:`project_root`. Errors (unknown model, alias or file) raise ``ValueError``.
    """
    from ldeq_shared.registry import load_registered_checkpoint
    from pipelines.train.config import resolve_tracking_uri

    uri = tracking_uri or resolve_tracking_uri("sqlite:///mlflow.db", project_root())
    loaded, _ = load_registered_checkpoint(name, alias_or_version, tracking_uri=uri)
    return loaded.model.eval()
