"""The registered model is an MLflow Model: ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` use it.

A tiny random checkpoint is logged the way rank 0 of training logs ``model/best.pt``, then registered with the
training's own ``register_checkpoint`` (sqlite store in a temporary folder). The pyfunc's landmarks are checked
against a direct torch run of the same checkpoint, for crops and for frames + boxes, in-process and through a real
``mlflow models serve`` subprocess; evaluation and serving resolve the same entry through the one resolver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ldeq_core.checkpoints import file_sha256, load_checkpoint
from ldeq_core.geometry import apply_affine, crop_face, invert_affine, to_model_input
from ldeq_shared.net import free_port
from tests.pipelines.test_mlflow_server import _stop
from tests.serve.helpers import IMAGE_SIZE, write_tiny_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # one_torch_thread: tests/conftest.py

NAME = "ldeq-landmarks"
CHAMPION = f"models:/{NAME}@champion"
SERVE_TIMEOUT_S = 90.0  # `mlflow models serve` answered /ping after ~14 s on the 2-core machine


@dataclass
class Registered:
    uri: str
    checkpoint: Path
    run_id: str
    version: int


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """A run holding ``model/best.pt`` (what rank 0 logs), registered by the training's registration code, plus a
    version in the pre-pyfunc layout (v2, a plain folder) and a broken one (v3, no checkpoint)."""
    from mlflow import MlflowClient

    from pipelines.train.tracking import register_checkpoint

    root = tmp_path_factory.mktemp("mlflow_model")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("ldeq-test", artifact_location=str(root / "artifacts"))
    run_id = client.create_run(exp, run_name="tiny").info.run_id
    client.log_param(run_id, "train.lr", "0.001")
    ckpt = write_tiny_checkpoint(root / "best.pt")
    client.log_artifact(run_id, os.fspath(ckpt), "model")
    (root / "notes.txt").write_text("not a checkpoint")
    client.log_artifact(run_id, os.fspath(root / "notes.txt"), "config")
    client.set_terminated(run_id)
    reg = register_checkpoint(uri, NAME, run_id, {"val_nme": 0.5, "epoch": 2})
    assert reg["aliases"] == ["newest", "champion"] and reg["version"] == 1
    for folder in ("model", "config"):  # v2: the old registry layout; v3: no best.pt at all
        client.create_model_version(NAME, source=f"runs:/{run_id}/{folder}", run_id=run_id)
    return Registered(uri, ckpt, run_id, reg["version"])


@pytest.fixture
def default_store(registered: Registered, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow's global tracking and registry URIs -> the test store (what ``models:/`` URIs resolve against),
    restored afterwards."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.uri)
    yield registered.uri


def _direct_crops(ckpt: Path, crops_rgb: np.ndarray) -> np.ndarray:
    """Landmarks (crop pixels) of the checkpoint run directly with torch (full solve, fp32)."""
    model = load_checkpoint(ckpt).model.eval()
    with torch.no_grad():
        return model(to_model_input(crops_rgb)).coords.numpy() * model.cfg.image_size


def _direct_frames(ckpt: Path, frames_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Landmarks (frame pixels): ldeq's crop around each box, the direct run, the inverse crop affine."""
    pairs = [crop_face(f[..., ::-1].copy(), b, IMAGE_SIZE) for f, b in zip(frames_rgb, boxes, strict=True)]
    coords = _direct_crops(ckpt, np.stack([c for c, _ in pairs]))
    return apply_affine(np.stack([invert_affine(m) for _, m in pairs]), coords)


def _inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops (3, 64, 64, 3), frames (2, 96, 128, 3), boxes (2, 4)): uint8 RGB noise and two face boxes."""
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, size=(3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    frames = rng.integers(0, 256, size=(2, 96, 128, 3), dtype=np.uint8)
    boxes = np.array([[30.0, 20.0, 80.0, 75.0], [50.5, 10.0, 110.0, 70.0]])
    return crops, frames, boxes


def test_pyfunc_load_and_predict_crops_and_frames_with_boxes(registered: Registered, default_store: str) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(CHAMPION)
    sig = model.metadata.signature
    assert sig is not None and sig.params is not None
    assert sig.inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, -1, -1, 3)}}]
    assert sig.outputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 98, 2)}}]
    assert {p.name: p.default for p in sig.params.params} == {"boxes": [], "channels": "rgb", "extra_scale": 1.2}
    example = model.input_example
    assert isinstance(example, np.ndarray) and example.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert model.metadata.metadata["ldeq"]["checkpoint_sha256"] == file_sha256(registered.checkpoint)

    crops, frames, boxes = _inputs()
    got = model.predict(crops)
    assert got.shape == (3, 98, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, _direct_crops(registered.checkpoint, crops), atol=1e-3)
    bgr = model.predict(np.ascontiguousarray(crops[..., ::-1]), params={"channels": "bgr"})
    np.testing.assert_allclose(bgr, got, atol=1e-5)

    on_frames = model.predict(frames, params={"boxes": boxes.reshape(-1).tolist()})
    assert on_frames.shape == (2, 98, 2)
    np.testing.assert_allclose(on_frames, _direct_frames(registered.checkpoint, frames, boxes), atol=1e-3)
    # frame pixels, not crop pixels: box 2's crop spans x 45..117 (centre 81, side 1.2 x 60)
    assert on_frames[1, :, 0].min() >= 45 and on_frames[1, :, 0].max() <= 117

    with pytest.raises(Exception, match="64x64"):
        model.predict(frames)  # whole frames without boxes
    with pytest.raises(Exception, match="4 numbers"):
        model.predict(frames, params={"boxes": [1.0, 2.0, 30.0, 40.0]})


def test_one_resolver_for_evaluation_serving_and_training(registered: Registered, tmp_path: Path) -> None:
    from ldeq_shared.registry import load_registered_checkpoint, resolve_registered_checkpoint
    from pipelines.evaluate.stage import EvalSettings, load_model
    from pipelines.train.tracking import load_registered_model
    from serve.model_source import load_model as serve_load
    from serve.settings import ModelSource

    sha = file_sha256(registered.checkpoint)
    ckpt = resolve_registered_checkpoint(CHAMPION, tracking_uri=registered.uri, dst=tmp_path)
    assert ckpt.path.name == "best.pt" and file_sha256(ckpt.path) == sha and ckpt.version.version == 1
    assert ckpt.version.model_uri == f"models:/{NAME}/1" and ckpt.version.run_id == registered.run_id

    served = serve_load(ModelSource(mlflow_tracking_uri=registered.uri, mlflow_name=NAME, mlflow_alias="champion"))
    assert served.sha256 == sha and served.source["version"] == 1 and served.source["artifact"] == "best.pt"
    assert served.metrics["val_nme"] == 0.5  # the version's tags
    settings = EvalSettings(model_source="registry", mlflow_uri=registered.uri, registered_model=NAME)
    evaluated, info = load_model(settings, tmp_path, {"train": {}})
    assert info["version"] == "1" and info["train_run"] == registered.run_id
    trained = load_registered_model(NAME, "champion", tracking_uri=registered.uri)
    for key, value in served.model.state_dict().items():
        assert torch.equal(evaluated.state_dict()[key], value) and torch.equal(trained.state_dict()[key], value), key

    # v2 is a version registered before the MLflow Model (a plain folder holding best.pt): still readable
    old, mv = load_registered_checkpoint(NAME, 2, tracking_uri=registered.uri)
    assert old.sha256 == sha and mv.source == f"runs:/{registered.run_id}/model"
    # errors name the model URI: a version without best.pt (no other *.pt is guessed), unknown aliases
    with pytest.raises(ValueError, match=rf"models:/{NAME}/3: no artifacts/best.pt .*notes.txt"):
        load_registered_checkpoint(f"models:/{NAME}/3", tracking_uri=registered.uri)
    with pytest.raises(ValueError, match=rf"model: models:/{NAME}@nope: registered model version not found"):
        serve_load(ModelSource(mlflow_tracking_uri=registered.uri, mlflow_name=NAME, mlflow_alias="nope"))
    with pytest.raises(ValueError, match=rf"models:/{NAME}/3: no artifacts/best.pt"):
        load_model(EvalSettings(model_source="registry", mlflow_uri=registered.uri, registered_model=NAME,
                                model_alias="3"), tmp_path, {"train": {}})  # fmt: skip


def _post(url: str, body: dict[str, Any]) -> np.ndarray:
    req = urllib.request.Request(url, json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return np.asarray(json.loads(resp.read())["predictions"], dtype=np.float64)


def test_mlflow_models_serve_answers_invocations(registered: Registered, tmp_path: Path) -> None:
    """``mlflow models serve -m models:/ldeq-landmarks@champion --env-manager local``, for real."""
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    port = free_port()
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registered.uri,
        "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the server execs `uvicorn`
        "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",  # as one_torch_thread, for the server's torch
    }
    env.pop("MLFLOW_REGISTRY_URI", None)
    cmd = [str(mlflow_cli), "models", "serve", "-m", CHAMPION, "--env-manager", "local"]
    cmd += ["-p", str(port), "-h", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + SERVE_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow models serve exited ({proc.returncode}):\n{_tail(tmp_path)}")
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve: no /ping after {SERVE_TIMEOUT_S} s:\n{_tail(tmp_path)}")
                time.sleep(0.25)

            crops, frames, boxes = _inputs(seed=1)
            got = _post(f"{url}/invocations", {"inputs": crops.tolist()})
            np.testing.assert_allclose(got, _direct_crops(registered.checkpoint, crops), atol=1e-3)
            body = {"inputs": frames.tolist(), "params": {"boxes": boxes.reshape(-1).tolist()}}
            got = _post(f"{url}/invocations", body)
            np.testing.assert_allclose(got, _direct_frames(registered.checkpoint, frames, boxes), atol=1e-3)
            with pytest.raises(urllib.error.HTTPError) as err:  # a bad request is a 4xx with the reason
                _post(f"{url}/invocations", {"inputs": frames.tolist()})
            assert 400 <= err.value.code < 500 and "64x64" in err.value.read().decode()
        finally:
            _stop(proc)


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
