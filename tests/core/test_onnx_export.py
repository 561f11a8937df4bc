"""ONNX export (ldeq_core.onnx_export) run for real with onnxruntime: parity with torch, metadata, errors.

Tolerances. The landmark limit is the spec's 0.1 px at 256 px (0.05 px at 128 px). Through soft-argmax,
x = sum_i p_i x_i with p_i = h_i / sum h, a relative error d on every heatmap value moves a landmark by at most
2 d S (S = image size): 0.1 px at 256 px allows d = 2e-4, about 3,000 fp32 unit roundoffs (u = 6e-8) of
reassociation error between onnxruntime's and torch's kernels; the RwR step's state is held to the same d as a
relative L2 norm. The solve's stopping decisions are compared exactly: its tolerance is put midway in a gap of
> 0.5 % between per-sample residuals, 25x the residual difference allowed (1e-3 relative; measured < 1e-4), so no
sample sits on the threshold. Measured here: landmarks 2e-4 px, states 1.6e-5, residuals 1.2e-4 (relative);
the trained zoo model ~1e-4 px, also over tracked frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ldeq_core.checkpoints import LoadedCheckpoint, file_sha256, save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_core.onnx_export import (
    ONNX_FORMAT,
    ExportedGraph,
    check_parity,
    export_checkpoint,
    export_model,
    parity_inputs,
    read_metadata,
    solve_path_for,
)
from ldeq_core.onnx_runtime import OnnxEngine, OnnxGraph
from ldeq_core.pretrained import load_pretrained
from ldeq_core.rwr import RwRConfig, RwRTracker

ZOO = "ldeq68-small-w300-128px"
SIZE = 256
LIMIT_PX = 0.1 * SIZE / 256
BATCH = 4
SOLVE_NFE = 6
STATE_RTOL = 2e-4  # relative L2 norm of the state difference: the d of the landmark limit
RESIDUAL_RTOL = 1e-3

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _model_with_split_stops(method: str, size: int = SIZE) -> LandmarkDEQ:
    """A random tiny model, made contractive like a trained DEQ (the state's input weights scaled by 0.1; at random
    initialisation the cell expands differences, 0.05-1 px after 6 steps from a 1e-6 start), whose solver
    tolerance makes the samples of the parity batch stop after different numbers of steps (exercising the
    per-sample masks of the solve graph)."""
    torch.manual_seed(0)
    cfg = get_preset("tiny", n_landmarks=68, image_size=size, heatmap_size=size // 4)
    model = LandmarkDEQ(cfg.replace(solver={"method": method, "max_nfe": SOLVE_NFE, "tol": 0.0})).eval()
    with torch.no_grad():
        model.cell.inject.conv.weight[:, : cfg.z_width] *= 0.1
    with torch.no_grad():
        trace = model(parity_inputs(model, BATCH)[0], trace=True).stats.trace
    assert trace is not None
    crit = np.sort(trace[SOLVE_NFE // 2].numpy())  # residuals after half the budget
    gap = int(np.argmax(np.diff(crit)))
    assert crit[gap + 1] - crit[gap] > 5e-3 * crit[gap + 1], "no clear gap between per-sample residuals"
    model.cfg = model.cfg.replace(solver={"tol": float(crit[gap] + crit[gap + 1]) / 2})
    return model


@pytest.fixture(scope="module")
def anderson(tmp_path_factory: pytest.TempPathFactory) -> tuple[LandmarkDEQ, list[ExportedGraph]]:
    model = _model_with_split_stops("anderson")
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return model, export_model(model, out, mode="both", nfe=2, checkpoint_sha256="ab" * 32, source="tiny-test")


def _rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    """The largest per-sample ||got - want|| / ||want||."""
    diff = np.linalg.norm((got - want).reshape(len(want), -1), axis=1)
    return float((diff / np.linalg.norm(want.reshape(len(want), -1), axis=1)).max())


def _graph(graphs: list[ExportedGraph], kind: str) -> OnnxGraph:
    return OnnxGraph(next(g.path for g in graphs if g.kind == kind))


def test_rwr_step_from_a_previous_state_matches_torch_at_256px(anderson) -> None:
    model, graphs = anderson
    first, second = parity_inputs(model, BATCH)
    step = _graph(graphs, "rwr")
    with torch.no_grad():
        prev = model(first).z_star
        coords, z, rel = model.forward_fixed(second, prev, 2)
    for n in (1, BATCH):  # the batch axis is dynamic
        got = step.run(image=second[:n].numpy(), state=prev[:n].numpy())
        assert got["landmarks"].shape == (n, 68, 2) and got["state_out"].shape == (n, 68, 64, 64)
        assert np.abs(got["landmarks"] - coords[:n].numpy() * SIZE).max() < LIMIT_PX
        assert _rel_l2(got["state_out"], z[:n].numpy()) < STATE_RTOL
        np.testing.assert_allclose(got["rel_residual"], rel[:n].numpy(), rtol=RESIDUAL_RTOL)


@pytest.mark.parametrize("method", ["anderson", "fpi"])
def test_solve_graph_is_the_models_solver_with_per_sample_stops(method: str, anderson, tmp_path: Path) -> None:
    """Anderson (the presets' solver) at 256 px; fixed-point iteration at 64 px (the same masks, 16x cheaper)."""
    if method == "anderson":
        model, graphs = anderson
        solve = _graph(graphs, "solve")
    else:
        model = _model_with_split_stops("fpi", 64)
        (g,) = export_model(model, tmp_path / "fpi.onnx", mode="solve")
        assert g.kind == "solve" and g.nfe == SOLVE_NFE and g.path == tmp_path / "fpi.onnx"
        solve = OnnxGraph(g.path)
    image = parity_inputs(model, BATCH)[0]
    with torch.no_grad():
        ref = model(image)  # the torch solver, stopping each sample early at the model's tolerance
    assert len(set(ref.stats.nfe.tolist())) > 1, "the test needs samples that stop at different steps"
    got = solve.run(image=image.numpy())
    assert got["nfe"].tolist() == ref.stats.nfe.tolist()
    size = model.cfg.image_size
    assert np.abs(got["landmarks"] - ref.coords.numpy() * size).max() < 0.1 * size / 256
    np.testing.assert_allclose(got["rel_residual"], ref.stats.rel_residual.numpy(), rtol=RESIDUAL_RTOL)
    assert _rel_l2(got["state_out"], ref.z_star.numpy()) < STATE_RTOL


def test_metadata_checker_and_dynamic_batch(anderson) -> None:
    graphs = anderson[1]
    assert [g.kind for g in graphs] == ["rwr", "solve"] and graphs[1].path == solve_path_for(graphs[0].path)
    assert graphs[1].path.name == "tiny.solve.onnx"
    for g in graphs:
        proto = onnx.load(str(g.path))
        onnx.checker.check_model(proto, full_check=True)
        meta = read_metadata(g.path)
        assert meta["ldeq_format"] == ONNX_FORMAT and meta["kind"] == g.kind and meta["nfe"] == str(g.nfe)
        assert (meta["n_landmarks"], meta["image_size"], meta["heatmap_size"]) == ("68", "256", "64")
        assert meta["checkpoint_sha256"] == "ab" * 32 and meta["source"] == "tiny-test"
        assert "solver" in meta if g.kind == "solve" else "solver" not in meta
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert read_metadata(graphs[1].path)["nfe"] == str(SOLVE_NFE)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedCheckpoint, list[ExportedGraph]]:
    out = tmp_path_factory.mktemp("zoo") / "zoo.onnx"
    return load_pretrained(ZOO), export_checkpoint(ZOO, out)


def test_the_zoo_model_at_128px_within_the_limit(zoo) -> None:
    loaded, graphs = zoo
    meta = read_metadata(graphs[0].path)
    assert meta["source"] == ZOO and meta["image_size"] == "128" and meta["checkpoint_sha256"] == loaded.sha256
    diffs = check_parity(loaded.model, graphs)
    assert set(diffs) == {"rwr", "solve"} and max(diffs.values()) < 0.1 * 128 / 256


def test_rwr_tracker_on_onnx_matches_torch_on_a_face_with_the_state_warp(zoo) -> None:
    """Two streams of a rendered face with moving boxes: a fresh frame (the solve graph, stopping early at the
    model's tolerance), then warm frames (state warp in torch + the RwR step graph), on both runtimes."""
    from pipelines.synthetic.generate import item_rng, render_still

    loaded, graphs = zoo
    model = loaded.model.eval()
    engine = OnnxEngine(model, graphs[0].path, graphs[1].path, checkpoint_sha256=loaded.sha256)
    assert engine.describe() == "cpu: onnxruntime (rwr 2 NFE, solve 8 NFE)"
    img, lm = render_still(item_rng(0, "test", 0))
    frame = np.ascontiguousarray(img[..., ::-1])
    box = np.concatenate([lm.min(0), lm.max(0)])
    cfg = RwRConfig(budget_nfe=2, crop_size=128, warp_state=True)
    trackers = [RwRTracker(model, cfg), RwRTracker(model, cfg, engine=engine)]
    for t in range(4):
        boxes = np.stack([box + np.array([2 * t, -t, 2 * t, -t]), box * 0.9 + np.array([t, 3, t, 3])])
        ref, got = (tr.step([frame, frame], boxes, ["a", "b"]) for tr in trackers)
        assert got.nfe.tolist() == ref.nfe.tolist() and got.full_solve.tolist() == [t == 0, t == 0]
        assert np.abs(got.coords - ref.coords).max() < 0.1 * 128 / 256  # crop pixels
        if t == 0:
            assert ref.nfe.min() < 8  # the solve stopped early at the tolerance: the masks were exercised
    with pytest.raises(ValueError, match="3 requested"):
        engine.fixed_steps(torch.zeros(1, 3, 128, 128), model.initial_state(1), 3)
    with pytest.raises(ValueError, match="torch runtime"):
        engine.full_solve(torch.zeros(1, 3, 128, 128), gamma=0.5)
    with pytest.raises(ValueError, match="not the model's"):
        OnnxEngine(model, graphs[0].path, None, checkpoint_sha256="cd" * 32)


def test_bad_inputs_give_clear_errors_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.pt"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "a.onnx")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: not a safe ldeq checkpoint"):
        export_checkpoint(tmp_path / "junk.pt", tmp_path / "a.onnx")
    model = LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16).replace(solver={"upstream": True}))
    with pytest.raises(ValueError, match="upstream mode"):
        export_model(model, tmp_path / "a.onnx", mode="both")
    (tmp_path / "junk.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(ValueError, match=r"junk\.onnx"):
        OnnxGraph(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match=r"nothing\.onnx"):
        read_metadata(tmp_path / "nothing.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "junk.pt"]  # no partial or temp files


def test_export_checkpoint_records_the_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16)))
    (g,) = export_checkpoint(path, tmp_path / "m.onnx", mode="rwr", nfe=1)
    meta = read_metadata(g.path)
    assert meta["checkpoint_sha256"] == file_sha256(path) and meta["nfe"] == "1" and meta["kind"] == "rwr"


def test_the_dynamo_exporter_gives_the_same_graph(tmp_path: Path) -> None:
    """``--exporter dynamo`` (torch.export + onnxscript): a 1-NFE step at 64 px, the smallest graph (slow exporter)."""
    model = _model_with_split_stops("fpi", 64)
    (g,) = export_model(model, tmp_path / "d.onnx", mode="rwr", nfe=1, exporter="dynamo")
    assert read_metadata(g.path)["exporter"] == "dynamo"
    assert check_parity(model, [g], batch=3)["rwr"] < 0.1 * 64 / 256
