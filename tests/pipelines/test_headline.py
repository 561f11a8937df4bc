"""The headline metrics (``metrics/headline.json``): at most 40 numbers, each one copied from the detailed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.headline import MAX_METHODS, MAX_NUMBERS, build_headline, count_numbers, headline_methods, main

# the 13 methods of the default evaluate settings (params.yaml), in eval.json's order
METHODS = [
    "per_frame",
    "rwr_nfe1",
    "rwr_nfe2",
    "rwr_nfe4",
    "rwr_upstream",
    "rwr_nfe2_gamma1",
    "rwr_nfe1_warp",
    "rwr_nfe2_warp",
    "rwr_nfe4_warp",
    "rwr_nfe2_gamma1_warp",
    "per_frame+ema",
    "per_frame+one_euro",
    "per_frame+kalman",
]


def _detailed(methods: list[str] = METHODS) -> tuple[dict[str, Any], dict[str, Any]]:
    """A train.json and an eval.json laid out as the stages write them (distinct value per key)."""
    train = {"best_epoch": 3, "val_nme": 0.0441234567, "val_fr": 0.004739, "val_auc": 0.5613, "epochs": 4}
    train.update(train_images_per_s=137.81234, world_size=2, final={"val_nme": 0.05})
    ev: dict[str, Any] = {}
    for split in ("video_easy", "video_hard", "overall"):
        ev[f"video.{split}.videos"] = 4
        for i, m in enumerate(methods):
            for metric in ("nme_io", "nme_io_fw", "nme_face", "nmf", "nmf_sqrt2", "nfe"):
                ev[f"video.{split}.{m}.{metric}"] = 1.0 + i + 0.01 * len(metric) + (split == "overall")
    for name in ("test", "test_hard"):
        ev.update({f"still.{name}.nme_pct": 4.89145, f"still.{name}.fr_pct": 1.33, f"still.{name}.auc": 0.5125})
        ev[f"still.{name}.images"] = 300
    for vs in ("rwr_vs_per_frame", "rwr_vs_best_filter"):
        for metric in ("nme_io_pct", "nme_face_pct", "nmf_pct", "nmf_fw_pct"):
            ev[f"compare.overall.{vs}.{metric}"] = -len(vs) - 0.1 * len(metric)
    ev.update({"throughput.frames_per_s": 218.2261, "info.rwr_method": "rwr_nfe2_warp"})
    ev["info.best_filter"] = "per_frame+kalman"
    return train, ev


def test_headline_values_come_from_the_detailed_files() -> None:
    train, ev = _detailed()
    h = build_headline(train, ev)
    assert count_numbers(h) <= MAX_NUMBERS <= 40 - 8  # serve_smoke.json adds 8 values under `metrics:`
    assert h["val"] == {"nme_pct": pytest.approx(4.41235), "fr_pct": pytest.approx(0.4739), "auc": 0.5613}
    assert h["still"] == {"nme_pct": 4.89145, "fr_pct": 1.33, "auc": 0.5125}  # split "test", not "test_hard"
    for m, v in h["video_nme"].items():
        assert v == pytest.approx(ev[f"video.overall.{m}.nme_io"], rel=1e-6)
        assert h["video_nmf"][m] == pytest.approx(ev[f"video.overall.{m}.nmf"], rel=1e-6)
    assert h["rwr_vs_best_filter"] == {
        "nme_pct": pytest.approx(ev["compare.overall.rwr_vs_best_filter.nme_io_pct"]),
        "nmf_pct": pytest.approx(ev["compare.overall.rwr_vs_best_filter.nmf_pct"]),
    }
    assert h["throughput"] == {"train_images_per_s": 137.812, "eval_frames_per_s": 218.226}
    assert h["methods"] == {"rwr": "rwr_nfe2_warp", "best_filter": "per_frame+kalman"}


def test_methods_shown_are_the_primary_family_and_bounded() -> None:
    shown = headline_methods(METHODS, "rwr_nfe2_warp", "per_frame+kalman")
    assert shown == [m for m in METHODS if not (m.startswith("rwr_nfe") and not m.endswith("_warp"))]
    plain = headline_methods(METHODS, "rwr_nfe2", None)
    assert "rwr_nfe2" in plain and "rwr_nfe2_warp" not in plain and "per_frame+ema" in plain
    many = [f"per_frame+f{i}" for i in range(30)]
    kept = headline_methods(["per_frame", *many, "rwr_nfe2"], "rwr_nfe2", "per_frame+f29")
    assert len(kept) == MAX_METHODS and {"per_frame", "rwr_nfe2", "per_frame+f29"} <= set(kept)
    train, ev = _detailed(["per_frame", *many, "rwr_nfe2"])
    assert count_numbers(build_headline(train, {**ev, "info.rwr_method": "rwr_nfe2"})) <= MAX_NUMBERS


def test_missing_parts_are_left_out_and_the_module_writes_the_file(tmp_path: Path) -> None:
    assert build_headline(None, None) == {}
    train, _ = _detailed()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text(json.dumps(train))
    main(["--root", str(tmp_path)])
    written = json.loads((tmp_path / "metrics" / "headline.json").read_text())
    assert set(written) == {"val", "throughput"} and written["throughput"] == {"train_images_per_s": 137.812}
