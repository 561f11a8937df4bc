"""The benchmark harness runs on CPU (CI has no GPU) and reports numbers that agree with independent oracles:
MAC and parameter counts done by hand from the layer shapes, a callable of known cost (a sleep), and timings
scripted or measured outside the harness."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_inference

from ldeq_core.config import ModelConfig, get_preset
from ldeq_core.profiling import model_cost


def _hand_cost(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(stem params, cell params, stem MACs, cell MACs) counted from the layer shapes of spec §1.3-1.5.

    A conv of k x k, c_in -> c_out, on an output of h x h: k*k*c_in*c_out + c_out parameters (with bias) and
    h*h*c_out*k*k*c_in MACs. Every norm (BN in the stem, GN in the cell) has 2 parameters per channel; the head
    has no norm. Stem: 7x7/2 3 -> W/4 at S/2, 3x3 W/4 -> W/2 at S/2, max-pool, 3x3 W/2 -> W at S/4 = H.
    Cell at H: 1x1 inject (z + W) -> w0; hourglass level l (width w_l = w0 + l*i, side H / 2^l): 3x3 w_l -> w_l
    at H_l, 3x3 w_l -> w_{l+1} at H_{l+1}, bottleneck 3x3 w_4 -> w_4 at H_4; decoder stage l: 3x3 w_{l+1} -> w_l
    at H_{l+1}, 1x1 2w_l -> w_l at H_l, 5x5 w_l -> w_l at H_l; 1x1 head w0 -> z at H.
    """
    s, h, w_inj, z = cfg.image_size, cfg.heatmap_size, cfg.injection_width, cfg.z_width
    q, half = w_inj // 4, w_inj // 2

    def conv(k: int, c_in: int, c_out: int, side: int, norm: bool = True) -> tuple[int, int]:
        return k * k * c_in * c_out + c_out + (2 * c_out if norm else 0), side * side * c_out * k * k * c_in

    stem = [conv(7, 3, q, s // 2), conv(3, q, half, s // 2), conv(3, half, w_inj, s // 4)]
    w = [cfg.cell_base_width + level * cfg.cell_width_increment for level in range(5)]
    r = [h >> level for level in range(5)]
    cell = [conv(1, z + w_inj, w[0], h), conv(1, w[0], z, h, norm=False), conv(3, w[4], w[4], r[4])]
    for level in range(4):
        cell += [
            conv(3, w[level], w[level], r[level]),  # same
            conv(3, w[level], w[level + 1], r[level + 1]),  # upchan (after the 2x2 average pool)
            conv(3, w[level + 1], w[level], r[level + 1]),  # decoder reduce (before the 2x upsample)
            conv(1, 2 * w[level], w[level], r[level]),  # decoder merge of [skip, up]
            conv(5, w[level], w[level], r[level]),  # decoder refine
        ]
    return (
        sum(p for p, _ in stem),
        sum(p for p, _ in cell),
        sum(m for _, m in stem),
        sum(m for _, m in cell),
    )


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(
            n_landmarks=5, image_size=64, heatmap_size=16, injection_width=8, cell_base_width=6, cell_width_increment=2
        ),
        get_preset("tiny"),
        get_preset("paper"),
    ],
    ids=["toy", "tiny", "paper"],
)
def test_model_cost_matches_a_hand_count(cfg: ModelConfig) -> None:
    params_stem, params_cell, macs_stem, macs_cell = _hand_cost(cfg)
    cost = model_cost(cfg)
    assert (cost.params_stem, cost.params_cell) == (params_stem, params_cell)
    assert (cost.macs_stem, cost.macs_cell) == (macs_stem, macs_cell)
    assert cost.macs_per_frame(3) == macs_stem + 3 * macs_cell


def test_paper_preset_cost_is_the_documented_one() -> None:
    """ldeq_core/config.py documents the paper preset as 16.53 M parameters and ~12.4 GMAC per cell evaluation."""
    params_stem, params_cell, _, macs_cell = _hand_cost(get_preset("paper"))
    assert round((params_stem + params_cell) / 1e6, 2) == 16.53
    assert round(macs_cell / 1e9, 1) == 12.4


def test_timed_measures_a_known_sleep() -> None:
    calls = 0
    sleep_s = 0.02

    def nap() -> None:
        nonlocal calls
        calls += 1
        time.sleep(sleep_s)

    sec = bench_inference.timed(nap, torch.device("cpu"), min_time=0.1, warmup=2)
    assert sleep_s <= sec < sleep_s + 0.5  # a sleep never returns early; a loaded machine may add a lot
    assert calls >= 2 + 3  # warm-up calls, then at least 3 timed ones


def test_quick_cpu_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick run with scripted step timings (``timed`` returns 10, 20, 30 ... ms): every derived number follows
    from those timings and the hand-counted MACs of the tiny preset."""
    scripted: list[float] = []

    def fake_timed(fn: Any, device: torch.device, min_time: float = 0.4, warmup: int = 3) -> float:
        fn()  # the variant still runs once
        scripted.append(0.01 * (len(scripted) + 1))
        return scripted[-1]

    monkeypatch.setattr(bench_inference, "timed", fake_timed)
    out = tmp_path / "bench.json"
    result = bench_inference.main(["--device", "cpu", "--quick", "--out", str(out)])
    assert json.loads(out.read_text())["device"] == "cpu"
    assert not [r for r in result["rwr"] if "error" in r]
    rows = {r["variant"]: r for r in result["rwr"]}
    # --quick: the tiny preset at batch 2, nfe 2; on a CPU no CUDA-graph variant and no compiled one runs
    assert list(rows) == ["fp32", "tf32", "bf16", "fp16", "default"]
    assert rows["fp32"]["speedup_vs_fp32_eager"] == 1.0 and rows["fp32"]["max_landmark_diff_px"] == 0.0
    _, _, macs_stem, macs_cell = _hand_cost(get_preset("tiny"))
    batch, nfe = 2, 2
    timed_rows = result["rwr"] + result["full_solve"]
    assert len(scripted) == len(timed_rows) == 5 + 2
    fp32_sec = scripted[0]
    for r, sec in zip(result["rwr"], scripted, strict=False):
        assert (r["batch"], r["nfe"]) == (batch, nfe)
        assert r["ms_per_batch"] == pytest.approx(1e3 * sec)
        assert r["ms_per_frame"] == pytest.approx(1e3 * sec / batch)
        assert r["frames_per_s"] == pytest.approx(batch / sec)
        assert r["tflops"] == pytest.approx(2 * (macs_stem + nfe * macs_cell) * batch / sec / 1e12)
        assert r["speedup_vs_fp32_eager"] == pytest.approx(fp32_sec / sec)
        assert r["max_landmark_diff_px"] == pytest.approx(r["max_landmark_diff_px_at_256"])  # a 256 px preset
        assert r["parity_ok"] == (r["max_landmark_diff_px_at_256"] <= bench_inference.PARITY_PX_AT_256)
    for r, sec in zip(result["full_solve"], scripted[5:], strict=True):
        assert r["ms_per_frame"] == pytest.approx(1e3 * sec / batch)
        assert r["frames_per_s"] == pytest.approx(batch / sec)
    assert [r["variant"] for r in result["full_solve"]] == ["full_solve_ours", "full_solve_upstream"]
    # the default inference path (what evaluation and serving run) passes parity; on a CPU it is fp32 eager
    assert rows["default"]["parity_ok"] and rows["default"]["policy"] == "cpu: fp32, contiguous, eager"
    assert rows["default"]["max_landmark_diff_px"] == 0.0
    modes = {(r["grad"], r["forward_nfe"]) for r in result["training_memory"]}
    assert modes == {("implicit", 2), ("unrolled", 2)}


def test_train_step_bench_times_the_trainer_step_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trainer step is made to cost at least a known sleep and is timed from outside the harness: the
    reported step time must agree with those outside timings and cannot be below the sleep."""
    import bench_train_step

    sleep_s = 0.05
    real_step = bench_train_step._train_step
    durations: list[float] = []

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        time.sleep(sleep_s)
        out = real_step(*args, **kwargs)
        durations.append(time.perf_counter() - t0)
        return out

    monkeypatch.setattr(bench_train_step, "_train_step", slow_step)
    result = bench_train_step.main(["--device", "cpu", "--quick"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["fp32", "bf16", "bf16+cl"]  # compile is skipped in --quick
    warmup, steps, batch = 3, 2, 4  # --quick: batch 4, 2 timed steps after 3 warm-up steps
    assert len(durations) == len(rows) * (warmup + steps)
    for i, r in enumerate(result["rows"]):
        calls = durations[i * (warmup + steps) : (i + 1) * (warmup + steps)]
        step_s = sum(calls[warmup:]) / steps
        assert r["batch"] == batch
        assert r["step_ms"] >= 1e3 * sleep_s and r["warmup_s"] >= warmup * sleep_s
        # the harness's clock brackets exactly the timed calls: only loop overhead separates the two measurements
        assert r["step_ms"] == pytest.approx(1e3 * step_s, rel=0.1, abs=5.0)
        assert r["images_per_s"] == pytest.approx(batch / step_s, rel=0.1)
        assert r["warmup_s"] == pytest.approx(sum(calls[:warmup]), rel=0.1, abs=0.005)
    # bf16 autocast is GPU-only in the trainer: on a CPU the first two variants run the same arithmetic
    assert rows["fp32"]["loss_first"] == rows["bf16"]["loss_first"]
