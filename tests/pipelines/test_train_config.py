"""TrainConfig: params.yaml sections, overrides, path resolution, run fingerprints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipelines.train import faults
from pipelines.train.config import TrainConfig, load_train_config, resolve_tracking_uri
from pipelines.train.sweep import SweepConfig, load_sweep_config, search_space
from pipelines.train.trainer import ray_run_name, steps_per_epoch

REPO = Path(__file__).resolve().parents[2]


def write_params(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_sections_and_overrides(tmp_path: Path) -> None:
    params = write_params(
        tmp_path,
        {
            "model": {"preset": "tiny", "image_size": 128, "heatmap_size": 32, "solver": {"max_nfe": 5}},
            "train": {"epochs": 7, "lr": 0.002, "augment": {"flip_prob": 0.25}},
            "data": {"source": "synthetic"},
        },
    )
    cfg = load_train_config(
        params,
        [
            "train.lr=5e-4",
            "batch_size=4",
            "model.solver.tol=0.01",
            "augment.blur_prob=0",
            "grad_mode=one_step",
            "train_max_nfe=3",
        ],
    )
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (7, 5e-4, 4)
    assert (cfg.augment.flip_prob, cfg.augment.blur_prob) == (0.25, 0.0)
    m = cfg.model_config()
    assert (m.image_size, m.heatmap_size, m.injection_width) == (128, 32, 32)  # tiny widths kept
    assert (m.solver.max_nfe, m.solver.tol, m.solver.method) == (5, 0.01, "anderson")
    assert m.grad.mode == "one_step"
    assert cfg.effective_train_nfe == 3
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_errors_name_the_file_and_key(tmp_path: Path) -> None:
    params = write_params(tmp_path, {"model": {"preset": "tiny"}, "train": {"epochz": 3}})
    with pytest.raises(ValueError, match=r"params\.yaml.*epochz"):
        load_train_config(params)
    params = write_params(tmp_path, {"model": {"preset": "tiny", "widht": 3}, "train": {}})
    with pytest.raises(ValueError, match="widht"):
        load_train_config(params)
    with pytest.raises(ValueError, match=r"train\.lr.*fast"):
        TrainConfig().with_overrides(["lr=fast"])
    with pytest.raises(ValueError, match="key=value"):
        TrainConfig().with_overrides(["lr"])
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"train\.compile: true needs train\.bf16: false"):
        TrainConfig().with_overrides(["compile=true"])  # bf16 defaults to true
    assert TrainConfig().with_overrides(["compile=true", "bf16=false"]).compile


def test_paths_resolve_against_the_root(tmp_path: Path) -> None:
    cfg = TrainConfig(storage_path="outputs/ray", data_dir="/abs/shards").resolved(tmp_path)
    assert cfg.storage_path == str(tmp_path.resolve() / "outputs" / "ray")
    assert cfg.data_dir == "/abs/shards"
    assert cfg.mlflow_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert cfg.mlflow_uri.startswith("sqlite:////")
    assert resolve_tracking_uri("sqlite:////x/y.db", tmp_path) == "sqlite:////x/y.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    assert TrainConfig(storage_path="s3://bucket/runs").resolved(tmp_path).storage_path == "s3://bucket/runs"


def test_run_fingerprint_tracks_training_settings_only() -> None:
    cfg = TrainConfig()
    name = ray_run_name(cfg, "data1")
    assert name.startswith("ldeq-train-") and len(name) == len("ldeq-train-") + 10
    assert ray_run_name(cfg.with_overrides(["max_failures=3", "storage_path=/x", "data_threads=1"]), "data1") == name
    assert ray_run_name(cfg.with_overrides(["lr=0.5"]), "data1") != name
    assert ray_run_name(cfg.with_overrides(["model.solver.max_nfe=3"]), "data1") != name
    assert ray_run_name(cfg, "data2") != name


def test_fault_injection_is_not_a_config_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killing a worker is a test-only hook (pipelines/train/faults.py), armed by environment variables."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not names & {"fail_at_epoch", "fail_marker"}
    # configs written before the move carry the keys with their null default: still accepted, and ignored
    assert TrainConfig.from_dict({"fail_at_epoch": None, "fail_marker": None}) == TrainConfig()
    with pytest.raises(ValueError, match="test-only"):
        TrainConfig().with_overrides(["fail_at_epoch=2"])

    monkeypatch.delenv(faults.ENV_EPOCH, raising=False)
    monkeypatch.delenv(faults.ENV_MARKER, raising=False)
    assert faults.plan_from_env() is None
    marker = tmp_path / "crashed.txt"
    monkeypatch.setenv(faults.ENV_MARKER, str(marker))
    with pytest.raises(ValueError, match="both"):
        faults.plan_from_env()
    monkeypatch.setenv(faults.ENV_EPOCH, "2")
    plan = faults.plan_from_env()
    assert plan == {"epoch": 2, "marker": str(marker)}
    # armed in a worker: only the last rank, in that epoch (0-based 1), fails; these calls must all return
    faults.arm(plan)
    try:
        faults.maybe_fail(epoch=0, rank=1, world=2)  # another epoch
        faults.maybe_fail(epoch=1, rank=0, world=2)  # not the last rank
        marker.write_text("already failed once\n")
        faults.maybe_fail(epoch=1, rank=1, world=2)  # the marker exists: it failed before
    finally:
        faults.arm(None)
    assert marker.read_text() == "already failed once\n"


def test_steps_per_epoch_matches_an_equal_split() -> None:
    assert steps_per_epoch(64, 2, 8) == 4
    assert steps_per_epoch(70, 4, 8) == 2  # 17 rows per worker
    assert steps_per_epoch(10, 2, 8) == 0


def test_repository_params_load() -> None:
    cfg = load_train_config(REPO / "params.yaml")
    assert cfg.model.preset in ("tiny", "paper")
    assert cfg.model_config().n_landmarks == 98
    sweep = load_sweep_config(REPO / "params.yaml")
    assert sweep.space and set(search_space(sweep.space)) == set(sweep.space)


def test_sweep_config_validation() -> None:
    with pytest.raises(ValueError, match="grid"):
        SweepConfig(space={"lr": {"normal": [0, 1]}})
    with pytest.raises(ValueError, match=r"sweep\.spaces: unknown key"):
        SweepConfig.from_dict({"spaces": {}})
    space = search_space({"lr": {"grid": [1, 2]}, "train_max_nfe": {"choice": [4, 8]}})
    assert space["lr"] == {"grid_search": [1, 2]}
    assert sorted(space["train_max_nfe"].categories) == [4, 8]


def test_cli_reports_bad_settings_without_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ldeq_cli.main import app

    params = write_params(tmp_path, {"model": {"preset": "tiny"}, "train": {}})
    res = CliRunner().invoke(app, ["train", "--params", str(params), "--set", "loss=l3"])
    assert res.exit_code == 2
    assert "loss" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["sweep", "--params", str(params), "--set", "epochs=0"])
    assert res.exit_code == 2 and "epochs" in res.output


def test_tracking_uri_comes_from_the_environment_when_set(tmp_path, monkeypatch) -> None:
    from pipelines.train.config import TrainConfig

    cfg = TrainConfig(mlflow_uri="sqlite:///mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cfg.resolved(tmp_path).mlflow_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert cfg.resolved(tmp_path).mlflow_uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize("split", [False, True])
def test_compile_cell_sets_ddp_graph_splitting(split: bool) -> None:
    """train.compile_ddp_split reaches torch's DDP graph splitting, and the cell is compiled in place (the compiled
    forward runs, the state-dict keys stay those of the eager model)."""
    import torch
    from torch._dynamo.testing import CompileCounter

    from ldeq_core.config import get_preset
    from ldeq_core.model import LandmarkDEQ
    from pipelines.train.loop import compile_cell

    before = torch._dynamo.config.optimize_ddp
    torch._dynamo.reset()
    try:
        model = LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16))
        keys = list(model.state_dict())
        counter = CompileCounter()
        compile_cell(model, TrainConfig(compile_ddp_split=split), backend=counter)
        assert torch._dynamo.config.optimize_ddp is split
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
        assert counter.frame_count == 1
        assert list(model.state_dict()) == keys
    finally:
        torch._dynamo.config.optimize_ddp = before
        torch._dynamo.reset()
