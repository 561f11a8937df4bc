"""bench/make_crops.py: parity inputs are the shard images, resized to the model's input size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

import make_crops
from train_helpers import write_tiny_shards

from pipelines.shards import decode_batch, read_split_table
from pipelines.train.augment import resize_image


def test_crops_are_the_first_shard_images_resized(tmp_path: Path) -> None:
    shards = write_tiny_shards(tmp_path / "shards", n_train=4, n_val=6)
    out = make_crops.main(
        ["--shards", str(shards), "--split", "val", "--size", "64", "--n", "4", "--out", str(tmp_path / "c.npz")]
    )
    crops = np.load(out)["crops"]
    originals = decode_batch(read_split_table(shards, "val"))["image"][:4]
    assert crops.shape == (4, 64, 64, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops, np.stack([resize_image(im, 64) for im in originals]))
    same = make_crops.make_crops(shards, "val", 256, 2)  # already 256 px: passed through unchanged
    assert np.array_equal(same, np.stack(originals[:2]))
    with pytest.raises(ValueError, match="no rows"):
        make_crops.make_crops(shards, "val", 64, 0)
