"""Real face crops for the parity check of ``bench_inference.py --checkpoint``: decode a shard split to an npz.

python bench/make_crops.py --shards data/shards --split val --size 256 --n 256 --out crops256.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipelines.shards import decode_batch, read_split_table
from pipelines.train.augment import resize_image


def make_crops(shards: Path, split: str, size: int, n: int) -> np.ndarray:
    """The first ``n`` images of ``split`` as (n, size, size, 3) uint8 RGB (resized when the shards differ)."""
    table = read_split_table(shards, split).slice(0, n)
    if table.num_rows == 0:
        raise ValueError(f"{shards}: split {split!r} has no rows")
    images = decode_batch(table)["image"]
    return np.stack([im if im.shape[0] == size else resize_image(im, size) for im in images]).astype(np.uint8)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    crops = make_crops(args.shards, args.split, args.size, args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, crops=crops)
    print(f"{args.out}: {crops.shape[0]} crops of {crops.shape[1]} px from {args.shards}/{args.split}")
    return args.out


if __name__ == "__main__":
    main()
