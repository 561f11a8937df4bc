"""``ldeq export --format onnx`` end to end, and ``ldeq track --runtime onnx`` against ``--runtime torch``.

Real onnxruntime sessions, no mocks. The checkpoint is a random tiny 68-point model at 64 px made contractive like a
trained DEQ (the state's input weights scaled by 0.03): a random cell expands differences, which would make any two
runtimes drift apart over frames. Limit: the spec's 0.1 px at 256 px, i.e. 0.025 crop px at 64 px, x1.125 frame px
per crop px for these boxes (crop side 1.2 x 60 px), plus the CSV's 3-decimal rounding (5e-4 per value).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ldeq_cli.main import app
from ldeq_cli.track import read_track_csv
from ldeq_core.checkpoints import file_sha256, save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_core.onnx_export import read_metadata
from ldeq_core.onnx_runtime import cached_export_path
from ldeq_shared.video_io import write_video

N_FRAMES = 8
LIMIT_FRAME_PX = 0.1 * 64 / 256 * 1.2 * 60 / 64 + 2 * 5e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """``ldeq export --format onnx --out m.onnx`` run in a folder whose models/model.pt is the test checkpoint."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = get_preset("tiny", image_size=64, heatmap_size=16, n_landmarks=68).replace(solver={"tol": 0.02})
    model = LandmarkDEQ(cfg).eval()  # tol 0.02: the first frame's solve stops early (the masks are exercised)
    with torch.no_grad():
        model.cell.inject.conv.weight[:, :68] *= 0.03
    save_checkpoint(root / "models/model.pt", model)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        code, out = _invoke("export", "--format", "onnx", "--out", "onnx/m.onnx")
    assert code == 0, out
    yield root / "models/model.pt", root / "onnx/m.onnx", out


def test_export_defaults_to_models_model_pt_and_checks_parity(exported: tuple[Path, Path, str]) -> None:
    ckpt, onnx_file, out = exported
    solve = onnx_file.with_name("m.solve.onnx")
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["m.onnx", "m.solve.onnx"]  # no temp files left
    flat = " ".join(out.split())
    assert "rwr graph, 2 NFE, 68 points, 64 px input" in flat and "solve graph, 8 NFE" in flat
    assert "parity with torch (onnxruntime, CPU): max landmark difference rwr" in flat
    for path, kind, nfe in ((onnx_file, "rwr", "2"), (solve, "solve", "8")):
        meta = read_metadata(path)
        assert (meta["kind"], meta["nfe"], meta["source"]) == (kind, nfe, "models/model.pt")
        assert meta["checkpoint_sha256"] == file_sha256(ckpt)


def test_export_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _invoke("export", "--out", "m.onnx")
    assert code == 2 and "models/model.pt: checkpoint not found" in out and "make demo" in out and "--model" in out
    code, out = _invoke("export", "--out", "m.onnx", "--checkpoint", "nope.pt")
    assert code == 2 and "nope.pt: checkpoint not found" in out
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    code, out = _invoke("export", "--out", "m.onnx", "--checkpoint", "junk.pt")
    assert code == 2 and "junk.pt: not a safe ldeq checkpoint" in out
    code, out = _invoke("export", "--out", "m.onnx", "--checkpoint", "junk.pt", "--model", "x")
    assert code == 2 and "not both" in out
    code, out = _invoke("export", "--out", "m.onnx", "--format", "tflite", "--checkpoint", "junk.pt")
    assert code == 2 and "only onnx" in out
    code, out = _invoke("export", "--out", "m.onnx", "--model", "no-such-model")
    assert code == 2 and "no-such-model" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]


def _video(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (9, 9), 3)
    write_video(tmp_path / "clip.mp4", np.stack([np.roll(base, t, axis=1) for t in range(N_FRAMES)]), fps=25.0)
    np.save(tmp_path / "clip.npy", np.array([[40.0 + t, 30.0, 100.0 + t, 90.0] for t in range(N_FRAMES)]))
    return tmp_path / "clip.mp4", tmp_path / "clip.npy"


def _track(video: Path, boxes: Path, out: Path, ckpt: Path, *extra: str) -> np.ndarray:
    code, text = _invoke("track", "--quiet", str(video), "--out", str(out), "--model", str(ckpt), "--boxes",
                         str(boxes), "--no-overlay", *extra)  # fmt: skip
    assert code == 0, text
    return read_track_csv(out / "clip.csv")[1]


def test_track_runtime_onnx_matches_torch(
    tmp_path: Path, exported: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, onnx_file, _ = exported
    video, boxes = _video(tmp_path)
    torch_rows = _track(video, boxes, tmp_path / "torch", ckpt, "--runtime", "torch")
    onnx_rows = _track(video, boxes, tmp_path / "onnx", ckpt, "--runtime", "onnx", "--onnx-file", str(onnx_file))
    assert onnx_rows.shape == torch_rows.shape == (N_FRAMES, 10 + 2 * 68)
    assert onnx_rows[:, 7].tolist() == torch_rows[:, 7].tolist()  # nfe: the solve stopped at the same step
    assert torch_rows[0, 7] < 8 and torch_rows[1:, 7].tolist() == [2] * (N_FRAMES - 1)
    assert np.abs(onnx_rows[:, 10:] - torch_rows[:, 10:]).max() < LIMIT_FRAME_PX
    # without --onnx-file: exported once into the cache (keyed by the checkpoint hash and budgets), then reused
    monkeypatch.setenv("LDEQ_CACHE_DIR", str(tmp_path / "cache"))
    cached = _track(video, boxes, tmp_path / "cached", ckpt, "--runtime", "onnx")
    path = cached_export_path(file_sha256(ckpt), 2, 8)
    assert path.parent == tmp_path / "cache/onnx" and path.is_file() and path.with_suffix(".solve.onnx").is_file()
    np.testing.assert_array_equal(cached, onnx_rows)
    stamp = path.stat().st_mtime_ns
    shutil.rmtree(tmp_path / "cached")
    np.testing.assert_array_equal(_track(video, boxes, tmp_path / "cached", ckpt, "--runtime", "onnx"), onnx_rows)
    assert path.stat().st_mtime_ns == stamp


def test_track_runtime_usage_errors(tmp_path: Path, exported: tuple[Path, Path, str]) -> None:
    ckpt, onnx_file, _ = exported
    args = ("track", "--quiet", str(tmp_path), "--model", str(ckpt))
    code, out = _invoke(*args, "--runtime", "tflite")
    assert code == 2 and "--runtime must be torch or onnx" in out
    code, out = _invoke(*args, "--onnx-file", str(onnx_file))
    assert code == 2 and "--onnx-file needs --runtime onnx" in out
    code, out = _invoke(*args, "--runtime", "onnx", "--device", "cuda")
    assert code == 2 and "runs on the CPU" in out
    code, out = _invoke(*args, "--runtime", "onnx", "--gamma", "0.5", "--onnx-file", str(onnx_file))
    assert code == 2 and "gamma" in out
    code, out = _invoke(*args, "--runtime", "onnx", "--budget-nfe", "3", "--onnx-file", str(onnx_file))
    assert code == 2 and "m.onnx: exported for a 2-NFE RwR step, but the budget is 3 NFE" in " ".join(out.split())
    code, out = _invoke(*args, "--runtime", "onnx", "--onnx-file", str(tmp_path / "none.onnx"))
    assert code == 2 and "none.onnx: ONNX file not found" in " ".join(out.split())
