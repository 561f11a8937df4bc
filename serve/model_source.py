"""Load the replica's model: an ldeq checkpoint file, a model-zoo entry, an MLflow registered model version, or
(only when asked) an untrained model with a loud warning.

MLflow models are resolved with ``models:/<name>@<alias>`` or ``models:/<name>/<version>``; the version's
artifacts must contain a checkpoint in our weights-only format (``model.pt`` preferred, else the first ``*.pt`` /
``*.pth`` in sorted order). Nothing is unpickled beyond tensors and builtins.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ldeq_core.checkpoints import load_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from serve.settings import ModelSource

_METRIC_WORDS = ("nme", "nmf", "auc", "fr_", "loss", "acc")
UNTRAINED_WARNING = (
    "WARNING: serving a RANDOMLY INITIALISED, UNTRAINED model (no checkpoint found): its landmarks are "
    "meaningless. Train one (`dvc repro`) or pass --checkpoint PATH."
)


@dataclass
class LoadedModel:
    """The model ready for inference plus what ``GET /v1/model`` reports about it."""

    model: LandmarkDEQ
    source: dict[str, Any]
    sha256: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    trained: bool = True

    @property
    def metrics(self) -> dict[str, Any]:
        """``metadata["metrics"]`` if present, else the metric-like numbers of the metadata (``val_nme``, ...),
        plus the registry version's numeric tags for an MLflow model."""
        m = self.metadata.get("metrics")
        if isinstance(m, dict):
            out = dict(m)
        else:
            out = {
                k: v
                for k, v in self.metadata.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and any(s in k for s in _METRIC_WORDS)
            }
        for k, v in (self.source.get("tags") or {}).items():
            try:
                out.setdefault(k, float(v))
            except (TypeError, ValueError):
                continue
        return out


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _checkpoint_in(folder: Path) -> Path:
    """The checkpoint among a model version's artifacts: ``best.pt`` (what training registers), ``model.pt``, else
    the first ``*.pt``/``*.pth`` in sorted order."""
    if folder.is_file():
        return folder
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".pt", ".pth"))
    if not files:
        raise ValueError(f"{folder}: the MLflow model version has no .pt/.pth checkpoint among its artifacts")
    for name in ("best.pt", "model.pt"):
        preferred = [p for p in files if p.name == name]
        if preferred:
            return preferred[0]
    return files[0]


def load_from_mlflow(src: ModelSource, device: torch.device) -> LoadedModel:
    """Resolve ``name`` @ alias (or version) in the registry, download the version's source artifacts and load
    the ldeq checkpoint in them. The version's tags (training metrics) are reported as metrics."""
    import mlflow  # heavy import, only for this source
    from mlflow.exceptions import MlflowException

    uri, name = src.mlflow_tracking_uri, src.mlflow_name
    assert name is not None  # the caller chose this source because mlflow_name is set
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    ref = f"{name}@{src.mlflow_alias}" if src.mlflow_alias else f"{name}/{src.mlflow_version}"
    try:
        mv = (
            client.get_model_version_by_alias(name, src.mlflow_alias)
            if src.mlflow_alias
            else client.get_model_version(name, str(src.mlflow_version))
        )
    except MlflowException as exc:
        raise ValueError(f"model: registered model {ref!r} not found in {uri}: {exc.message}") from exc
    with tempfile.TemporaryDirectory(prefix="ldeq-mlflow-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp, tracking_uri=uri)
        ckpt = _checkpoint_in(Path(local))
        loaded = load_checkpoint(ckpt, map_location=device)
        name = ckpt.name
    source = {
        "kind": "mlflow",
        "tracking_uri": uri,
        "name": src.mlflow_name,
        "alias": src.mlflow_alias,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "artifact_source": mv.source,
        "artifact": name,
        "tags": dict(mv.tags or {}),
    }
    return LoadedModel(loaded.model, source, loaded.sha256, dict(loaded.metadata))


def load_from_zoo(name: str, device: torch.device) -> LoadedModel:
    """A model-zoo entry (sha256-verified); ``default`` is the best 68-point entry."""
    from ldeq_core.pretrained import default_pretrained, get_pretrained, load_pretrained

    entry = default_pretrained(68) if name == "default" else get_pretrained(name)
    if entry is None:
        raise ValueError("model: zoo 'default' requested but the model zoo is empty")
    loaded = load_pretrained(entry.name, map_location=device)
    source = {"kind": "zoo", "name": entry.name, "scheme": entry.card.scheme, "licence": entry.card.licence}
    metadata = {**loaded.metadata, "metrics": dict(entry.card.metrics)}
    return LoadedModel(loaded.model, source, loaded.sha256, metadata)


def load_model(src: ModelSource) -> LoadedModel:
    """Load the model described by ``src``; ``ValueError``/``FileNotFoundError`` name the missing source."""
    device = pick_device(src.device)
    if src.checkpoint:
        loaded = load_checkpoint(src.checkpoint, map_location=device)
        source = {"kind": "checkpoint", "path": str(src.checkpoint)}
        out = LoadedModel(loaded.model, source, loaded.sha256, dict(loaded.metadata))
    elif src.zoo:
        out = load_from_zoo(src.zoo, device)
    elif src.mlflow_name:
        out = load_from_mlflow(src, device)
    elif src.untrained_fallback:
        warnings.warn(UNTRAINED_WARNING, stacklevel=2)
        torch.manual_seed(0)
        model = LandmarkDEQ(get_preset(src.untrained_preset)).to(device)
        out = LoadedModel(model, {"kind": "untrained", "preset": src.untrained_preset}, None, {}, trained=False)
    else:
        raise ValueError(
            "model: no model source configured (set serve.model.checkpoint or serve.model.mlflow_name; "
            "untrained_fallback is off)"
        )
    out.model.eval()
    return out
