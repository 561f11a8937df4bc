"""serve/config.yaml against Serve's schema, the application builder, and `ldeq serve --check` (no Ray started)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from ldeq_cli import serve_commands
from tests.serve.helpers import write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_config_yaml_is_a_valid_loopback_serve_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    assert schema.http_options.host == "127.0.0.1" and schema.proxy_location.value == "HeadOnly"
    (app,) = schema.applications
    assert app.import_path == "serve.app:build_app"
    dep = app.deployments[0]
    assert dep.ray_actor_options.num_gpus == 0 and dep.autoscaling_config["max_replicas"] >= 1


def test_build_app_reads_params_and_rejects_unknown_args(tmp_path: Path) -> None:
    from ray.serve import Application

    from serve.app import build_app

    params = tmp_path / "params.yaml"
    params.write_text("serve:\n  model: {checkpoint: m.pt}\n  batch: {max_batch_size: 8}\n")
    app = build_app({"params_file": str(params), "settings": {"batch": {"wait_s": 0.0}}})
    assert isinstance(app, Application)
    with pytest.raises(ValueError, match="unknown args"):
        build_app({"params": "x"})
    with pytest.raises(ValueError, match="max_batch_sizes"):
        build_app({"settings": {"batch": {"max_batch_sizes": 1}}})


def _cli() -> typer.Typer:
    app = typer.Typer()
    serve_commands.register(app)
    app.command("noop")(lambda: None)  # keep "serve" as a sub-command
    return app


def _zoo_with_one_model(folder: Path) -> str:
    """A model zoo folder holding one registered tiny 68-point model; returns its name."""
    from ldeq_core.checkpoints import save_checkpoint
    from ldeq_core.config import get_preset
    from ldeq_core.model import LandmarkDEQ
    from ldeq_core.pretrained import make_card, register_pretrained

    model = LandmarkDEQ(get_preset("tiny", n_landmarks=68, image_size=64, heatmap_size=16))
    ckpt = folder / "src.pt"
    save_checkpoint(ckpt, model)
    card = make_card(
        model.cfg,
        training_data="none (test)",
        recipe="-",
        command="-",
        git_commit="-",
        metrics={"val_nme_pct": 9.0},
        cpu_frames_per_s=1.0,
        cpu_benchmark="-",
    )
    register_pretrained(ckpt, "test-zoo-68", card, zoo_dir=folder / "zoo")
    return "test-zoo-68"


def test_ldeq_serve_check_serves_the_best_zoo_model_when_no_checkpoint_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = _zoo_with_one_model(tmp_path)
    monkeypatch.setenv("LDEQ_ZOO_DIR", str(tmp_path / "zoo"))
    (tmp_path / "serve").mkdir()
    config = tmp_path / "serve" / "config.yaml"
    config.write_text(
        yaml.safe_dump({"applications": [{"name": "ldeq", "import_path": "serve.app:build_app", "args": {}}]})
    )
    res = CliRunner().invoke(_cli(), ["serve", "--config", str(config), "--check"])
    assert res.exit_code == 0, res.output
    assert f"serving the zoo model {name}" in res.output and "UNTRAINED" not in res.output


def test_ldeq_serve_check_warns_about_an_untrained_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # params_file is resolved against the cwd, like `serve run` does
    (tmp_path / "empty_zoo").mkdir()
    (tmp_path / "empty_zoo" / "zoo.json").write_text('{"format": "ldeq-zoo/1", "models": []}')
    monkeypatch.setenv("LDEQ_ZOO_DIR", str(tmp_path / "empty_zoo"))  # no zoo model to fall back on
    (tmp_path / "serve").mkdir()
    config = tmp_path / "serve" / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http_options": {"host": "127.0.0.1", "port": 8123},
                "applications": [
                    {"name": "ldeq", "import_path": "serve.app:build_app", "args": {"params_file": "params.yaml"}}
                ],
            }
        )
    )
    (tmp_path / "params.yaml").write_text("serve:\n  model: {checkpoint: models/model.pt, device: cpu}\n")
    runner = CliRunner()
    res = runner.invoke(_cli(), ["serve", "--config", str(config), "--check"])
    assert res.exit_code == 0, res.output
    assert "RANDOMLY INITIALISED, UNTRAINED" in res.output and "models/model.pt not found" in res.output
    assert "trained=False" in res.output and "http://127.0.0.1:8123" in res.output
    ckpt = write_tiny_checkpoint(tmp_path / "models" / "model.pt")  # now the configured default exists
    res = runner.invoke(_cli(), ["serve", "--config", str(config), "--check"])
    assert res.exit_code == 0 and "UNTRAINED" not in res.output
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() in res.output
    res = runner.invoke(_cli(), ["serve", "--config", str(config), "--check", "--checkpoint", str(tmp_path / "x.pt")])
    assert res.exit_code != 0 and "checkpoint not found" in res.output


def test_inference_settings_reach_the_policy_and_reject_typos(tmp_path: Path) -> None:
    from serve.settings import load_settings

    params = tmp_path / "params.yaml"
    params.write_text(
        "serve:\n  inference: {precision: tf32, cuda_graphs: true, compile: true, dynamic_batch: false}\n"
        "  batch: {prepare_threads: 3}\n"
    )
    s = load_settings(str(params))
    resolved = s.inference.policy().resolve("cpu")  # CPU fallback of a CUDA-only request, with the reasons
    assert (resolved.precision, resolved.cuda_graphs, s.batch.prepare_threads, s.batch.read_ahead) == (
        "fp32",
        False,
        3,
        True,
    )
    assert (resolved.compile, resolved.dynamic_batch, s.inference.warmup) == (True, False, True)
    assert "tf32 requested on a CPU" in resolved.describe()
    with pytest.raises(ValueError, match="precison"):
        load_settings(overrides={"inference": {"precison": "tf32"}})
