"""The registered model as an MLflow Model: a pyfunc wrapper of a Landmark DEQ checkpoint.

Training logs every registered version with :func:`log_landmark_model`, so the registry entry works with
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` as well as with our own loaders (the checkpoint stays at
``artifacts/best.pt`` inside the model, :data:`ldeq_shared.registry.CHECKPOINT_PATH`).

Input (tensor signature): uint8 images ``(N, H, W, 3)``, RGB unless ``params={"channels": "bgr"}``.

- crops mode (no ``boxes``): face crops of the model's size ``(N, S, S, 3)`` (``S`` = ``image_size``, 256 for the
  paper models); output landmarks ``(N, L, 2)`` float32 in crop pixels (x, y);
- frames + boxes mode: ``params={"boxes": [x1, y1, x2, y2, ...]}`` (4 numbers per image, one face box per frame;
  repeat a frame for several faces): each frame is cropped around its box as everywhere in ldeq
  (:func:`ldeq_core.geometry.crop_face`, ``params["extra_scale"]``, default 1.2) and the landmarks come back in
  frame pixels.

Every image gets a full solve with the model's own solver (per-frame inference, no RwR state between calls) under
the default :class:`~ldeq_core.inference.InferencePolicy` of the device (``model_config={"device": "cpu"}`` at
load time picks the device; default: CUDA when available).

The model does not ship source code (no ``code_paths``): loading it needs the ``ldeq`` package installed in the
serving environment (``pip install -e .``), hence ``mlflow models serve ... --env-manager local``. Shipping copies
of ``ldeq_core`` would let a served model silently diverge from, or shadow, the installed library.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import torch
from mlflow.pyfunc.model import PythonModel

from ldeq_core.checkpoints import load_checkpoint
from ldeq_core.defaults import EXTRA_SCALE
from ldeq_core.geometry import apply_affine, crop_face, invert_affine, to_model_input
from ldeq_core.inference import InferenceEngine, InferencePolicy
from ldeq_core.model import LandmarkDEQ

ARTIFACT_KEY = "checkpoint"  # pyfunc artifacts key; the file is copied to artifacts/best.pt of the model
# The LoggedModel's name. Not "model": MLflow 3 resolves runs:/<run>/<name> through a run's LoggedModel of that name
# too, which would mix it into the run's own model/ artifact folder (the plain best.pt of older registry versions).
LOGGED_MODEL_NAME = "ldeq-pyfunc"
DEFAULT_EXTRA_SCALE = EXTRA_SCALE
CHANNELS = ("rgb", "bgr")
PREDICT_BATCH = 32


def _solve(model: LandmarkDEQ, engine: InferenceEngine, crops_rgb: np.ndarray) -> np.ndarray:
    """Full solves of RGB uint8 crops ``(N, S, S, 3)`` in chunks: landmarks ``(N, L, 2)`` in crop pixels."""
    size = model.cfg.image_size
    out = np.zeros((crops_rgb.shape[0], model.cfg.n_landmarks, 2), np.float32)
    for i in range(0, crops_rgb.shape[0], PREDICT_BATCH):
        images = to_model_input(crops_rgb[i : i + PREDICT_BATCH], engine.device)
        out[i : i + PREDICT_BATCH] = engine.full_solve(images).coords.float().cpu().numpy() * size
    return out


def predict_landmarks(
    model: LandmarkDEQ,
    engine: InferenceEngine,
    images: np.ndarray,
    params: dict[str, Any] | None = None,
) -> np.ndarray:
    """The pyfunc's predict: crops (no ``boxes``) or frames + ``boxes`` -> landmarks ``(N, L, 2)`` float32."""
    p = dict(params or {})
    channels = str(p.get("channels") or "rgb").lower()
    if channels not in CHANNELS:
        raise ValueError(f"params.channels must be one of {CHANNELS}, got {channels!r}")
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    size = model.cfg.image_size
    boxes = np.asarray(p["boxes"] if p.get("boxes") is not None else [], dtype=np.float64).reshape(-1)
    if boxes.size == 0:  # crops mode
        if x.shape[1:3] != (size, size):
            raise ValueError(
                f"crops must be {size}x{size} (the model's image_size), got {x.shape[2]}x{x.shape[1]}; "
                "pass params.boxes to crop whole frames"
            )
        return _solve(model, engine, np.ascontiguousarray(x[..., ::-1] if channels == "bgr" else x))
    if boxes.size != 4 * x.shape[0]:
        raise ValueError(f"params.boxes needs 4 numbers (x1, y1, x2, y2) per image: {x.shape[0]} images, {boxes.size}")
    extra = float(p.get("extra_scale") or DEFAULT_EXTRA_SCALE)
    crops, inverse = [], []
    for frame, box in zip(x, boxes.reshape(-1, 4), strict=True):
        bgr = frame if channels == "bgr" else np.ascontiguousarray(frame[..., ::-1])
        crop, m = crop_face(bgr, box, size, extra)  # crop_face returns RGB
        crops.append(crop)
        inverse.append(invert_affine(m))
    coords = _solve(model, engine, np.stack(crops))
    return apply_affine(np.stack(inverse), coords).astype(np.float32)


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LandmarkPyfunc(PythonModel):
    """Landmark DEQ checkpoint (pyfunc artifact ``checkpoint``) -> landmarks; see the module docstring.

    ``model_config`` (set at log time, overridable in ``mlflow.pyfunc.load_model(..., model_config=...)``):
    ``device`` (``auto``, ``cpu``, ``cuda[:n]``) and ``precision`` (an :class:`InferencePolicy` precision).
    """

    def load_context(self, context: Any) -> None:
        config = dict(context.model_config or {})
        device = _pick_device(str(config.get("device", "auto")))
        self.model = load_checkpoint(context.artifacts[ARTIFACT_KEY], map_location=device).model.eval()
        self.engine = InferenceEngine(self.model, InferencePolicy(precision=config.get("precision", "auto")))

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        return predict_landmarks(self.model, self.engine, model_input, params)


def example_input(model: LandmarkDEQ) -> np.ndarray:
    """The logged input example: one mid-grey crop ``(1, S, S, 3)`` uint8 of the model's size."""
    size = model.cfg.image_size
    return np.full((1, size, size, 3), 128, np.uint8)


def landmark_signature(example: np.ndarray, landmarks: np.ndarray) -> Any:
    """The ``ModelSignature`` inferred from a real (input, output) pair, with the image height and width left free
    (frames of any size in the boxes mode) and the ``params`` schema (boxes, channels, extra_scale)."""
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    inferred = infer_signature(example, landmarks)
    image = inferred.inputs.inputs[0]
    params = ParamSchema(
        [
            ParamSpec("boxes", "double", [], (-1,)),
            ParamSpec("channels", "string", "rgb"),
            ParamSpec("extra_scale", "double", DEFAULT_EXTRA_SCALE),
        ]
    )
    return ModelSignature(Schema([TensorSpec(image.type, (-1, -1, -1, 3))]), inferred.outputs, params)


def _requirements() -> list[str]:
    """``ldeq`` (which pins torch, numpy and opencv) and this mlflow; informational with ``--env-manager local``."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = [f"mlflow=={mlflow.__version__}"]
    with suppress(PackageNotFoundError):
        reqs.insert(0, f"ldeq=={version('ldeq')}")
    return reqs


def _check_reloads(local: Path, model: LandmarkDEQ) -> None:
    """The saved MLflow Model loads (entry script, artifacts, imports) and holds exactly ``model``'s weights."""
    inner = mlflow.pyfunc.load_model(os.fspath(local), model_config={"device": "cpu"}).unwrap_python_model()
    state = inner.model.state_dict() if isinstance(inner, LandmarkPyfunc) else {}
    if state.keys() != model.state_dict().keys() or not all(
        torch.equal(state[k], v) for k, v in model.state_dict().items()
    ):
        raise ValueError(f"{local}: the saved MLflow Model does not load the checkpoint's weights")


def log_landmark_model(
    tracking_uri: str,
    run_id: str,
    checkpoint: str | os.PathLike[str],
    *,
    name: str = LOGGED_MODEL_NAME,
) -> Any:
    """Log ``checkpoint`` (our format) as the MLflow Model ``name`` of run ``run_id`` (a LoggedModel of the run's
    experiment, linked to the run as an output); returns the READY ``LoggedModel`` (``model_id``,
    ``artifact_location``: the source to register).

    Only the client API of ``tracking_uri`` is used (no global tracking URI, active run or experiment). The
    signature comes from a real prediction on :func:`example_input` (the pyfunc's own predict function), and the
    saved model must load through ``mlflow.pyfunc.load_model`` with the same weights before anything is uploaded.
    """
    import shutil
    import tempfile

    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    from ldeq_shared.registry import CHECKPOINT_FILE

    loaded = load_checkpoint(Path(checkpoint))  # refuse a broken file before logging anything
    model = loaded.model.eval()
    example = example_input(model)
    expected = predict_landmarks(model, InferenceEngine(model), example)
    signature = landmark_signature(example, expected)
    metadata = {
        "ldeq": {
            "checkpoint": f"artifacts/{CHECKPOINT_FILE}",
            "checkpoint_sha256": loaded.sha256,
            "image_size": model.cfg.image_size,
            "n_landmarks": model.cfg.n_landmarks,
            "output": "landmarks (N, L, 2) float32, (x, y) in crop pixels, or frame pixels with params.boxes",
        }
    }
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=run_id, params=dict(run.data.params)
    )
    try:
        with tempfile.TemporaryDirectory(prefix="ldeq-pyfunc-") as tmp:
            best = Path(tmp) / CHECKPOINT_FILE  # a pyfunc artifact keeps its file name inside the model
            shutil.copyfile(checkpoint, best)
            local = Path(tmp) / "model"
            mlmodel = Model(
                artifact_path=logged.artifact_location,
                run_id=run_id,
                model_uuid=logged.model_id,
                model_id=logged.model_id,
            )
            mlflow.pyfunc.save_model(
                local,
                python_model=os.fspath(Path(__file__).with_name("pyfunc_entry.py")),  # models from code: no pickle
                artifacts={ARTIFACT_KEY: os.fspath(best)},
                signature=signature,
                input_example=example,
                pip_requirements=_requirements(),
                metadata=metadata,
                model_config={"device": "auto"},
                mlflow_model=mlmodel,
            )
            _check_reloads(local, model)
            client.log_model_artifacts(logged.model_id, os.fspath(local))
    except BaseException:
        with suppress(Exception):  # keep the original error
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
