"""Our tracking code against a real ``mlflow server`` (the remote set-up of docs/guide.md), not the sqlite default.

The server is started exactly as the guide says (sqlite backend, proxied artifacts, loopback, one worker, no job
consumers). ``MLFLOW_TRACKING_URI`` points the trainer's config at it; then the functions the trainer runs create
the experiment and the run (driver), log params, metrics and the final artifacts (rank 0 of the training loop),
find the run again for a resumed Ray run, and register two model versions with aliases (driver). A fresh
``MlflowClient`` checks what the server holds, and the evaluation and serving loaders download the champion.
No Ray cluster or training is started: the Ray side is covered by the DDP and ``dvc repro`` tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ldeq_shared.net import free_port
from tests.pipelines.train_helpers import tiny_config

MLFLOW = Path(sys.executable).with_name("mlflow")
START_TIMEOUT_S = 90.0  # typically 6-16 s on the 2-core machine


def server_command(db: Path, artifacts: Path, port: int) -> list[str]:
    """The command docs/guide.md documents (with the placeholders filled in)."""
    return [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own session (uvicorn and its worker), SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the worker may outlive the parent for a moment
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``http://127.0.0.1:<port>`` of a fresh server and its artifact folder; the server is stopped afterwards."""
    if not MLFLOW.is_file():
        pytest.skip(f"mlflow not installed next to {sys.executable}")
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        server_command(root / "mlflow.db", root / "art", port),
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server: no /health after {START_TIMEOUT_S} s:\n{(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.25)
        yield url, root / "art"
    finally:
        _stop(proc)
        log.close()


@pytest.mark.slow
def test_training_tracking_and_registry_against_a_tracking_server(tmp_path, monkeypatch, mlflow_server) -> None:
    import mlflow
    from mlflow import MlflowClient

    from ldeq_core import LandmarkDEQ
    from ldeq_core.checkpoints import load_checkpoint
    from pipelines.evaluate.stage import EvalSettings, load_model
    from pipelines.train.loop import _log_final_artifacts
    from pipelines.train.reporting import flatten
    from pipelines.train.tracking import (
        TAG_KIND,
        TAG_RAY_RUN,
        TAG_STORAGE,
        RunLogger,
        ensure_experiment,
        find_or_create_run,
        load_registered_model,
        register_checkpoint,
    )
    from serve.model_source import load_from_mlflow
    from serve.settings import ModelSource

    url, artifacts = mlflow_server
    project = tmp_path / "project"
    project.mkdir()

    # the trainer's config resolution: the environment overrides train.mlflow_uri (here the sqlite default)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    cfg = tiny_config(project, mlflow_uri="sqlite:///mlflow.db").resolved(project)
    assert cfg.mlflow_uri == url

    # driver (pipelines/train/trainer.run_training): experiment and run
    exp_id = ensure_experiment(cfg.mlflow_uri, cfg.mlflow_experiment, cfg.mlflow_artifacts)
    assert ensure_experiment(cfg.mlflow_uri, cfg.mlflow_experiment, cfg.mlflow_artifacts) == exp_id
    tags = {TAG_RAY_RUN: "tiny-test-0123456789", TAG_STORAGE: cfg.storage_path, TAG_KIND: "train"}
    run_id = find_or_create_run(cfg.mlflow_uri, exp_id, cfg.run_name, tags=tags, reuse=False)

    # rank 0 (pipelines/train/loop.train_loop_per_worker): params, per-epoch metrics, final artifacts
    logger = RunLogger(cfg.mlflow_uri, run_id)
    params = flatten({"train": {k: v for k, v in cfg.to_dict().items() if k != "model"}})
    params.update(flatten({"model": cfg.model_config().to_dict()}))
    params.update({"model.preset": cfg.model.preset, "world_size": 2, "steps_per_epoch": 3})
    logger.log_params(params)
    history = []
    for epoch, (loss, nme) in enumerate(((0.9, 0.20), (0.5, 0.12)), start=1):
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "val_loss": loss + 0.1,
            "val_nme": nme,
            "val_fr": 0.5,
            "val_auc": 0.1,
            "lr": 3e-3,
            "images_per_s": 100.0,
        }
        history.append(row)
        logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
    torch.manual_seed(0)
    raw = LandmarkDEQ(cfg.model_config())
    best_state = {k: v.detach().clone() for k, v in raw.state_dict().items()}
    best = {"val_nme": 0.12, "epoch": 2, "val_fr": 0.5, "val_auc": 0.1}
    _log_final_artifacts(logger, raw, best_state, best, history, cfg)  # ends with logger.finish()

    # a resumed Ray run (same ray-run and storage tags) finds its MLflow run again
    assert find_or_create_run(cfg.mlflow_uri, exp_id, cfg.run_name, tags=tags, reuse=True) == run_id

    # driver: registry versions; the second (worse) one gets "newest" but not "champion"
    reg1 = register_checkpoint(cfg.mlflow_uri, cfg.registered_model, run_id, {"val_nme": 0.12, "epoch": 2})
    reg2 = register_checkpoint(cfg.mlflow_uri, cfg.registered_model, run_id, {"val_nme": 0.30, "epoch": 2})
    assert (reg1["version"], reg1["aliases"]) == (1, ["newest", "champion"])
    assert (reg2["version"], reg2["aliases"]) == (2, ["newest"])

    # what the server holds, through a fresh client
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    exp = client.get_experiment_by_name(cfg.mlflow_experiment)
    assert exp is not None and exp.experiment_id == exp_id
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server, no shared disk needed
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == cfg.run_name
    assert run.data.tags[TAG_RAY_RUN] == tags[TAG_RAY_RUN] and run.data.tags["best_epoch"] == "2"
    assert run.data.params["train.lr"] == str(cfg.lr) and run.data.params["model.preset"] == "tiny"
    assert len(run.data.params) == len(params)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_nme")] == [(1, 0.20), (2, 0.12)]
    listed = {f.path for d in ("model", "checkpoints", "config", "plots") for f in client.list_artifacts(run_id, d)}
    assert listed == {
        "model/best.pt",
        "checkpoints/last.pt",
        "config/train_config.yaml",
        "config/model_config.yaml",
        "plots/train_curves.csv",
        "plots/train_curves.png",
    }
    stored = [p for p in artifacts.rglob("best.pt") if run_id in p.parts]
    assert len(stored) == 1  # written by the server into --artifacts-destination
    assert load_checkpoint(stored[0]).metadata["val_nme"] == 0.12
    champion = client.get_model_version_by_alias(cfg.registered_model, "champion")
    newest = client.get_model_version_by_alias(cfg.registered_model, "newest")
    assert (champion.version, newest.version) == ("1", "2")
    assert champion.run_id == run_id and champion.tags["val_nme"] == "0.12"
    # each version is an MLflow Model (a LoggedModel of the run) stored through the server, holding our best.pt
    assert champion.source == reg1["source"] and newest.source == reg2["source"] != reg1["source"]
    assert champion.source.startswith("mlflow-artifacts:") and reg1["model_id"] in champion.source
    model_files = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(champion.source, tracking_uri=url)}
    assert {"MLmodel", "artifacts"} <= model_files
    pyfunc_best = [p for p in artifacts.rglob("best.pt") if reg1["model_id"] in p.parts]
    assert len(pyfunc_best) == 1 and pyfunc_best[0].read_bytes() == stored[0].read_bytes()

    # consumers download the champion through the server: the shared loader, evaluation and serving
    def same_weights(model: torch.nn.Module) -> bool:
        return all(torch.equal(v, best_state[k]) for k, v in model.state_dict().items())

    assert same_weights(load_registered_model(cfg.registered_model, "champion", tracking_uri=url))
    settings = EvalSettings(model_source="registry", mlflow_uri=url, registered_model=cfg.registered_model)
    model, info = load_model(settings, project, {"train": {}})
    assert same_weights(model) and info["version"] == "1" and info["train_run"] == run_id
    served = load_from_mlflow(
        ModelSource(mlflow_tracking_uri=url, mlflow_name=cfg.registered_model, mlflow_alias="newest", device="cpu"),
        torch.device("cpu"),
    )
    assert same_weights(served.model) and served.source["version"] == 2

    assert not (project / "mlflow.db").exists() and not (project / "mlartifacts").exists()  # no local store used

    # MLflow 3.17's host check (the guide's --allowed-hosts advice): private IPs pass by default, names do not
    def status_with_host(host: str) -> int:
        req = urllib.request.Request(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ldeq-test", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert status_with_host("10.1.2.3:5000") == 200
    assert status_with_host("mlflow.example.org") == 403
