"""Real 2-worker DDP training (gloo, 0.5 CPU each) on a tiny shard set: MLflow records, registry, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ldeq_core.checkpoints import load_checkpoint
from pipelines.train import faults
from pipelines.train.tracking import load_registered_model
from pipelines.train.trainer import run_training
from tests.pipelines.train_helpers import tiny_config, write_tiny_shards

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("train_shards"), n_train=64, n_val=16)


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_two_worker_run_logs_registers_and_learns(ray_local: str, shards: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, materialize_train=True)
    res = run_training(cfg, shards, tmp_path / "out", root=tmp_path)
    uri = cfg.resolved(tmp_path).mlflow_uri

    hist = res.history
    assert [r["epoch"] for r in hist] == [1, 2]
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    assert all(r["val_images"] == 16 for r in hist)
    assert res.metrics["world_size"] == 2 and res.start_epoch == 0
    cache = res.metrics["worker_cache"]  # every worker held all 64 train rows (the default worker_cache)
    assert cache["rows"] == 64 and 0 < cache["mib"] < 64 and cache["read_s"] >= 0
    assert hist[0]["train_nfe_mean"] == cfg.train_max_nfe + 1  # solver budget + the one tracked step
    assert hist[0]["lr"] == pytest.approx(cfg.lr / 2)  # first step of a 2-step warm-up (0.5 epoch x 4 steps)
    for r in hist:  # the epoch-time breakdown: parts of the slowest rank's training time, first batch in the waits
        assert 0 < r["epoch_first_batch_s"] <= r["epoch_data_wait_s"] < r["epoch_train_s"]
        assert 0 < r["epoch_compute_s"] < r["epoch_train_s"]
        assert 0 <= r["epoch_sync_s"] < 60  # the wait for the other rank before the epoch, outside epoch_train_s

    # DVC outputs
    metrics = json.loads((tmp_path / "out" / "metrics" / "train.json").read_text())
    assert metrics["val_nme"] == pytest.approx(min(r["val_nme"] for r in hist))
    assert metrics["epochs"] == 2
    with open(tmp_path / "out" / "plots" / "train_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["val_nme"]) == pytest.approx(hist[1]["val_nme"], rel=1e-5)
    assert (tmp_path / "out" / "plots" / "train_curves.png").read_bytes()[:4] == b"\x89PNG"
    best = load_checkpoint(tmp_path / "out" / "models" / "model.pt")
    assert best.metadata["epoch"] == res.best_epoch
    assert best.model.cfg.image_size == 64

    # MLflow records
    client = _client(uri)
    run = client.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr"] == str(cfg.lr) and params["model.image_size"] == "64"
    assert params["world_size"] == "2" and params["train.augment.flip_prob"] == "0.5"
    val = client.get_metric_history(res.mlflow_run_id, "val_nme")
    assert sorted((m.step, m.value) for m in val) == [(r["epoch"], pytest.approx(r["val_nme"])) for r in hist]
    assert len(client.get_metric_history(res.mlflow_run_id, "images_per_s")) == 2
    folders = ("model", "checkpoints", "plots", "config")
    artifacts = {a.path for d in folders for a in client.list_artifacts(run.info.run_id, d)}
    assert {"model/best.pt", "checkpoints/last.pt", "plots/train_curves.png", "config/train_config.yaml"} <= artifacts

    # model registry: a version with aliases, and the registered file is our best checkpoint
    version = res.registered["version"]
    champion = client.get_model_version_by_alias(cfg.registered_model, "champion")
    assert int(champion.version) == version and champion.run_id == res.mlflow_run_id
    assert int(client.get_model_version_by_alias(cfg.registered_model, "newest").version) == version
    assert float(champion.tags["val_nme"]) == pytest.approx(metrics["val_nme"], rel=1e-5)
    loaded = load_registered_model(cfg.registered_model, "champion", tracking_uri=uri)
    for key, value in best.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_worker_crash_resumes_from_checkpoint_and_rerun_resumes(
    ray_local: str, shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "crashed.txt"
    # test-only fault injection: the last rank exits in epoch 2 (once: the marker records it)
    monkeypatch.setenv(faults.ENV_EPOCH, "2")
    monkeypatch.setenv(faults.ENV_MARKER, str(marker))
    cfg = tiny_config(tmp_path, materialize_train=True, max_failures=1, registered_model="")
    res = run_training(cfg, shards, tmp_path / "out", root=tmp_path)
    assert marker.read_text().startswith("rank 1 exited in epoch 2")
    assert res.start_epoch == 1  # the restarted worker group resumed from the epoch-1 checkpoint
    assert [r["epoch"] for r in res.history] == [1, 2]
    uri = cfg.resolved(tmp_path).mlflow_uri
    client = _client(uri)
    steps = [m.step for m in client.get_metric_history(res.mlflow_run_id, "val_nme")]
    assert sorted(steps) == [1, 2]  # epoch 1 is not trained or logged twice
    run = client.get_run(res.mlflow_run_id)
    assert run.data.tags["ldeq.resumed_from_epoch"] == "1"
    assert run.info.status == "FINISHED"

    # Re-running the same run name and settings resumes the finished Ray run: nothing is retrained, no workers.
    again = run_training(cfg, shards, tmp_path / "out2", root=tmp_path)
    assert again.ray_run_name == res.ray_run_name and again.mlflow_run_id == res.mlflow_run_id
    assert again.start_epoch == 2
    assert [r["val_nme"] for r in again.history] == [r["val_nme"] for r in res.history]
    assert sorted(m.step for m in client.get_metric_history(res.mlflow_run_id, "val_nme")) == [1, 2]
