"""``ldeq models list`` and ``ldeq models info`` against a temporary zoo ($LDEQ_ZOO_DIR)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ldeq_cli.main import app
from ldeq_core.checkpoints import save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_core.pretrained import make_card, register_pretrained

runner = CliRunner()


def _add(zoo: Path, name: str, nme_pct: float, seed: int) -> None:
    torch.manual_seed(seed)
    model = LandmarkDEQ(get_preset("tiny", n_landmarks=68, image_size=64, heatmap_size=16, injection_width=8)).eval()
    ckpt = zoo.parent / f"{name}.pt"
    save_checkpoint(ckpt, model)
    card = make_card(
        model.cfg,
        training_data="synthetic faces",
        recipe="recipes/ldeq68-small-w300-128px.yaml",
        command="ldeq train --params x.yaml",
        git_commit="f" * 40,
        metrics={"val_nme_pct": nme_pct, "val_fr_pct": 3.0, "val_auc": 0.61, "val_images": 200},
        cpu_frames_per_s=87.5,
        cpu_benchmark="bench machine, 4 threads",
        notes="for the CLI test",
    )
    register_pretrained(ckpt, name, card, zoo_dir=zoo)


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "zoo"
    _add(folder, "cli68-a", 8.25, seed=0)
    _add(folder, "cli68-b", 6.5, seed=1)
    monkeypatch.setenv("LDEQ_ZOO_DIR", str(folder))
    monkeypatch.setenv("COLUMNS", "160")
    return folder


def test_models_list(zoo: Path) -> None:
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    lines = {name: next(line for line in res.output.splitlines() if name in line) for name in ("cli68-a", "cli68-b")}
    assert "(default)" in lines["cli68-b"] and "(default)" not in lines["cli68-a"]
    for cell in ("68", "64px", "87.5", "8.25"):
        assert cell in lines["cli68-a"]
    assert "6.50" in lines["cli68-b"]
    none = runner.invoke(app, ["models", "list", "--points", "98"])
    assert none.exit_code == 0 and "no pretrained models with 98 points" in none.output


def test_models_info(zoo: Path) -> None:
    res = runner.invoke(app, ["models", "info", "cli68-a"])
    assert res.exit_code == 0, res.output
    for text in (
        "68-point iBUG 300-W",
        "cli68-a-",
        "val_nme_pct 8.25",
        "val_images 200",
        "recipes/ldeq68-small-w300-128px.yaml",
        "ldeq train --params x.yaml",
        "f" * 40,
        "non-commercial",
        "tight bounding box of the 68 landmarks",
        "budget_nfe=2",
        "for the CLI test",
        "bench machine, 4 threads",
    ):
        assert text in res.output, text


def test_models_info_unknown_name(zoo: Path) -> None:
    res = runner.invoke(app, ["models", "info", "nope"])
    assert res.exit_code == 2
    assert "unknown pretrained model 'nope'" in res.output and "cli68-a, cli68-b" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_models_list_empty_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LDEQ_ZOO_DIR", str(tmp_path / "empty"))
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "no pretrained models" in res.output
