"""Load the replica's model: an ldeq checkpoint file, a model-zoo entry, an MLflow registered model version, or
(only when asked) an untrained model with a loud warning.

MLflow models (``models:/<name>@<alias>`` or ``models:/<name>/<version>``) are resolved by the same resolver as the
evaluation stage, :mod:`ldeq_shared.registry`: the version's ``best.pt`` (inside the registered MLflow Model, or at
the top of an older plain artifact folder), in our weights-only format. Nothing is unpickled beyond tensors and
builtins.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
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


def load_from_mlflow(src: ModelSource, device: torch.device) -> LoadedModel:
    """Resolve ``name`` @ alias (or version) in the registry and load the version's ``best.pt``
    (:func:`ldeq_shared.registry.load_registered_checkpoint`). The version's tags (training metrics) are reported
    as metrics."""
    from ldeq_shared.registry import CHECKPOINT_FILE, load_registered_checkpoint

    uri, name = src.mlflow_tracking_uri, src.mlflow_name
    assert name is not None  # the caller chose this source because mlflow_name is set
    which = src.mlflow_alias if src.mlflow_alias else src.mlflow_version
    try:
        loaded, mv = load_registered_checkpoint(name, which, tracking_uri=uri, map_location=device)
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from exc
    source = {
        "kind": "mlflow",
        "tracking_uri": uri,
        "name": src.mlflow_name,
        "alias": src.mlflow_alias,
        "version": mv.version,
        "run_id": mv.run_id,
        "artifact_source": mv.source,
        "artifact": CHECKPOINT_FILE,
        "tags": dict(mv.tags),
    }
    return LoadedModel(loaded.model, source, loaded.sha256, dict(loaded.metadata))


def load_from_zoo(name: str, device: torch.device) -> LoadedModel:
    """A model-zoo entry (sha256-verified); ``default`` is the best 68-point entry for ``device`` (on a CPU, the best
    real-time one)."""
    from ldeq_core.pretrained import default_pretrained, get_pretrained, load_pretrained

    entry = default_pretrained(68, device=device) if name == "default" else get_pretrained(name)
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
