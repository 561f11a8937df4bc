"""Model sources: checkpoint file, MLflow registry (name @ alias / version), and the untrained fallback."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from serve.model_source import UNTRAINED_WARNING, load_model
from serve.settings import ModelSource, load_settings
from tests.serve.helpers import write_tiny_checkpoint


def test_checkpoint_source_and_missing_source(tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "m.pt")
    loaded = load_model(ModelSource(checkpoint=str(ckpt), device="cpu"))
    assert loaded.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest() and loaded.trained
    assert loaded.metrics == {"val_nme_inter_ocular": 12.5}
    assert loaded.model.cfg.image_size == 64 and not loaded.model.training
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(ModelSource(checkpoint=str(tmp_path / "none.pt")))
    with pytest.raises(ValueError, match="no model source configured"):
        load_model(ModelSource())
    with pytest.warns(UserWarning, match="UNTRAINED"):
        untrained = load_model(ModelSource(untrained_fallback=True, device="cpu"))
    assert not untrained.trained and untrained.sha256 is None and UNTRAINED_WARNING.startswith("WARNING")


@pytest.mark.slow
def test_mlflow_registry_source(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("serve-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    ckpt = write_tiny_checkpoint(tmp_path / "best.pt")
    client.log_artifact(run.info.run_id, os.fspath(ckpt), "model")  # the training stage's registry layout
    client.set_terminated(run.info.run_id)
    client.create_registered_model("ldeq-landmarks")
    mv = client.create_model_version(
        "ldeq-landmarks", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags={"val_nme": "7.5"}
    )
    client.set_registered_model_alias("ldeq-landmarks", "champion", mv.version)
    # A relative sqlite URI in params.yaml is made absolute against the params file's folder.
    params = tmp_path / "params.yaml"
    params.write_text(
        "serve:\n  model: {mlflow_tracking_uri: 'sqlite:///mlflow.db', mlflow_name: ldeq-landmarks, "
        "mlflow_alias: champion, device: cpu}\n"
    )
    settings = load_settings(params)
    assert settings.model.mlflow_tracking_uri == uri
    loaded = load_model(settings.model)
    assert loaded.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert (
        loaded.source["kind"] == "mlflow" and loaded.source["version"] == 1 and loaded.source["artifact"] == "best.pt"
    )
    assert loaded.metrics == {"val_nme_inter_ocular": 12.5, "val_nme": 7.5}
    ref = torch.load(ckpt, weights_only=True)["state_dict"]
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, ref[k])
    by_version = load_model(ModelSource(mlflow_tracking_uri=uri, mlflow_name="ldeq-landmarks", mlflow_version=1))
    assert by_version.sha256 == loaded.sha256
    with pytest.raises(ValueError, match="not found"):
        load_model(ModelSource(mlflow_tracking_uri=uri, mlflow_name="ldeq-landmarks", mlflow_alias="nope"))


def test_zoo_source_loads_a_verified_zoo_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.serve.test_cli_and_config import _zoo_with_one_model

    name = _zoo_with_one_model(tmp_path)
    monkeypatch.setenv("LDEQ_ZOO_DIR", str(tmp_path / "zoo"))
    from ldeq_core.pretrained import get_pretrained

    entry = get_pretrained(name)
    for zoo in (name, "default"):  # "default" = the best 68-point entry, the only one here
        loaded = load_model(ModelSource(zoo=zoo, device="cpu"))
        assert loaded.source["kind"] == "zoo" and loaded.source["name"] == name
        assert loaded.sha256 == entry.sha256 and loaded.metrics == {"val_nme_pct": 9.0}
    with pytest.raises(ValueError, match="only one of checkpoint, mlflow_name or zoo"):
        ModelSource(zoo=name, checkpoint="x.pt")
    with pytest.raises(ValueError, match="unknown"):
        load_model(ModelSource(zoo="no-such-model", device="cpu"))
