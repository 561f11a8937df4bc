"""The benchmark harness runs on CPU (CI has no GPU) and reports internally consistent numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_inference


def test_quick_cpu_run(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = bench_inference.main(["--device", "cpu", "--quick", "--out", str(out)])
    assert json.loads(out.read_text())["device"] == "cpu"
    rows = {r["variant"]: r for r in result["rwr"]}
    assert rows["fp32"]["speedup_vs_fp32_eager"] == 1.0 and rows["fp32"]["max_landmark_diff_px"] == 0.0
    for r in result["rwr"]:
        assert abs(r["frames_per_s"] * r["ms_per_frame"] - 1000.0) < 1e-6 * 1000
        assert r["parity_ok"] == (r["max_landmark_diff_px_at_256"] <= bench_inference.PARITY_PX_AT_256)
    # the default inference path (what evaluation and serving run) passes parity; on a CPU it is fp32 eager
    assert rows["default"]["parity_ok"] and rows["default"]["policy"] == "cpu: fp32, contiguous, eager"
    assert rows["default"]["max_landmark_diff_px"] == 0.0
    modes = {(r["grad"], r["forward_nfe"]) for r in result["training_memory"]}
    assert modes == {("implicit", 2), ("unrolled", 2)}


def test_train_step_bench_runs_the_trainer_step_on_cpu() -> None:
    import bench_train_step

    result = bench_train_step.main(["--device", "cpu", "--quick"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"fp32", "bf16", "bf16+cl"}  # compile is skipped in --quick
    for r in rows.values():
        assert abs(r["images_per_s"] * r["step_ms"] - 1000.0 * r["batch"]) < 1e-6 * 1000 * r["batch"]
    # bf16 autocast is GPU-only in the trainer: on a CPU the first two variants run the same arithmetic
    assert rows["fp32"]["loss_first"] == rows["bf16"]["loss_first"]
