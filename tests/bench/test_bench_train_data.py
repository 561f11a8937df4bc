"""The training data-path benchmark runs on a small shard set and reports identical output for every thread count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_train_data

from tests.pipelines.train_helpers import write_tiny_shards


def test_threads_give_identical_batches(tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path / "shards", n_train=16, n_val=4)
    out = tmp_path / "bench.json"
    argv = ["--shards", str(shards), "--threads", "1,2", "--image-size", "64", "--batch-size", "8", "--repeats", "1"]
    result = bench_train_data.main([*argv, "--step-ms", "1", "--out", str(out)])
    assert json.loads(out.read_text())["identical"] is True
    assert [r["threads"] for r in result["rows"]] == [1, 2]
    assert all(r["images"] == 16 and r["images_per_s"] > 0 for r in result["rows"])
    assert result["rows"][0]["speedup_vs_first"] == 1.0 and result["n_landmarks"] == 98
    assert set(result["rows"][0]["with_step_images_per_s"]) == {"prefetch_0", "prefetch_2"}
