"""Checkpoints: our weights-only format, and the upstream converter (explicit trust, strict loading)."""

from __future__ import annotations

import argparse

import pytest
import torch

from ldeq_core.checkpoints import (
    config_from_upstream_args,
    convert_upstream,
    load_checkpoint,
    map_upstream_key,
    save_checkpoint,
)
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ

SMALL = {"image_size": 64, "heatmap_size": 16}


def test_round_trip_reproduces_outputs(tmp_path) -> None:
    model = LandmarkDEQ(get_preset("tiny", n_landmarks=68, learn_beta=True, **SMALL)).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"epoch": 3, "val_nme": 0.05})
    loaded = load_checkpoint(path)
    assert loaded.metadata == {"epoch": 3, "val_nme": 0.05}
    assert loaded.model.cfg == model.cfg and len(loaded.sha256) == 64
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(img).coords, loaded.model.eval()(img).coords)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # the atomic write left no temp file


def test_unsafe_or_wrong_files_are_rejected_with_the_file_name(tmp_path) -> None:
    bad = tmp_path / "pickled.pt"
    torch.save({"args": argparse.Namespace(a=1), "state_dict": {}}, bad)
    with pytest.raises(ValueError, match=r"pickled\.pt: not a safe ldeq checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt: not an ldeq-checkpoint/1"):
        load_checkpoint(foreign)
    model = LandmarkDEQ(get_preset("tiny", **SMALL))
    path = tmp_path / "short.pt"
    save_checkpoint(path, model)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["cell.head.conv.bias"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"missing \['cell.head.conv.bias'\]"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_upstream_key_names_map_to_ours() -> None:
    cases = {
        "tail.0.conv.weight": "stem.conv1.conv.weight",
        "tail.3.norm.running_mean": "stem.conv3.norm.running_mean",
        "module.deq_layer.cell.tail.norm.weight": "cell.inject.norm.weight",
        "deq_layer.cell.hourglass.same3.conv.bias": "cell.hourglass.same.2.conv.bias",
        "deq_layer.cell.hourglass.upchan1.norm.bias": "cell.hourglass.upchan.0.norm.bias",
        "deq_layer.cell.hourglass.bottlneck.conv.weight": "cell.hourglass.bottleneck.conv.weight",
        "deq_layer.cell.hourglass.downchan1.conv.weight": "cell.hourglass.up.0.reduce.conv.weight",
        "deq_layer.cell.hourglass.downchan4.conv.weight": "cell.hourglass.up.1.merge.conv.weight",
        "deq_layer.cell.hourglass.same8.norm.weight": "cell.hourglass.up.3.refine.norm.weight",
        "deq_layer.cell.head.conv.weight": "cell.head.conv.weight",
    }
    for upstream, ours in cases.items():
        assert map_upstream_key(upstream) == ours
    assert map_upstream_key("deq_layer.cell.hourglass.something.weight") is None


def _upstream_args(**kw) -> argparse.Namespace:
    base = dict(
        cell_name="Cell0",
        injection_width=32,
        cell_base_width=32,
        cell_width_increment=8,
        cell_gn_groups=1,
        cell_use_bn_for_explicit=False,
        model_mode="implicit",
        cell_norm="softargmax",
        cell_softargmax_beta=1.0,
        cell_learn_softargmax_beta=True,
        n_keypoints=98,
        heatmap_size=16,
        im_size=64,
        cell_extra_latent_width=0,
        solver="fpi",
        max_iters=5,
        stop_mode="rel",
        rel_diff_target=5e-3,
        abs_diff_target=1e-3,
        anderson_m=6,
        anderson_lam=1e-4,
        anderson_beta=1.0,
        JFB=False,
        take_one_less_inference_step=False,
    )
    base.update(kw)
    return argparse.Namespace(**base)


# Upstream module prefixes written out by hand from the structure of spec §1.3-1.5 -> our prefixes.
UPSTREAM_PREFIXES = {
    "tail.0": "stem.conv1",
    "tail.1": "stem.conv2",
    "tail.3": "stem.conv3",
    "deq_layer.cell.tail": "cell.inject",
    "deq_layer.cell.head": "cell.head",
    "deq_layer.cell.hourglass.bottlneck": "cell.hourglass.bottleneck",
    **{f"deq_layer.cell.hourglass.same{i}": f"cell.hourglass.same.{i - 1}" for i in range(1, 5)},
    **{f"deq_layer.cell.hourglass.upchan{i}": f"cell.hourglass.upchan.{i - 1}" for i in range(1, 5)},
    **{f"deq_layer.cell.hourglass.downchan{2 * s + 1}": f"cell.hourglass.up.{s}.reduce" for s in range(4)},
    **{f"deq_layer.cell.hourglass.downchan{2 * s + 2}": f"cell.hourglass.up.{s}.merge" for s in range(4)},
    **{f"deq_layer.cell.hourglass.same{s + 5}": f"cell.hourglass.up.{s}.refine" for s in range(4)},
}


def _upstream_state(model: LandmarkDEQ) -> dict[str, torch.Tensor]:
    ours = model.state_dict()
    return {
        f"{up}.{key[len(mine) + 1 :]}": torch.randn(value.shape).to(value.dtype)
        for up, mine in UPSTREAM_PREFIXES.items()
        for key, value in ours.items()
        if key.startswith(mine + ".")
    }


def test_convert_upstream_requires_trust_and_loads_strictly(tmp_path) -> None:
    args = _upstream_args()
    cfg = config_from_upstream_args(args)
    assert cfg.beta == pytest.approx(1.3133, abs=1e-4)  # softplus(1.0), upstream's effective beta
    assert cfg.solver.upstream and cfg.solver.method == "fpi" and cfg.solver.upstream_max_iters == 5
    reference = LandmarkDEQ(cfg)
    state = _upstream_state(reference)
    assert len(state) == len(reference.state_dict())
    src = tmp_path / "final.pth.tar"
    torch.save({"args": args, "state_dict": state}, src)
    with pytest.raises(PermissionError, match="trust"):
        convert_upstream(src, tmp_path / "out.pt")
    report = convert_upstream(src, tmp_path / "out.pt", trust_pickle=True)
    assert report.ok and report.mapped == len(state)
    loaded = load_checkpoint(tmp_path / "out.pt").model
    assert torch.equal(
        loaded.state_dict()["cell.hourglass.up.2.merge.conv.weight"],
        state["deq_layer.cell.hourglass.downchan6.conv.weight"],
    )

    del state["deq_layer.cell.hourglass.same5.conv.bias"]
    state["deq_layer.cell.extra.weight"] = torch.zeros(1)
    torch.save({"args": args, "state_dict": state}, src)
    with pytest.raises(ValueError) as err:
        convert_upstream(src, trust_pickle=True)
    assert "cell.hourglass.up.0.refine.conv.bias" in str(err.value)
    assert "deq_layer.cell.extra.weight" in str(err.value)
