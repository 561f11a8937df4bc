"""CPU throughput of the training data path: decode + augment of shard batches on N threads (images/s).

What each Ray Train worker runs per batch (``pipelines.train.data.prepare_arrays`` on a ``DataPool``), on real
shards as written by ``ldeq data preprocess``:

    python bench/bench_train_data.py --shards /tmp/w300/shards --split train --threads 1,2 --image-size 256 \
        --out bench/results/cpu_train_data.json

The split is read once into memory and cut into numpy batches (what Ray Data hands the worker), so only decoding,
augmentation and resizing are timed. Every thread count must give bit-identical arrays (``identical`` in the
output). ``--step-ms`` adds a simulated accelerator step (a sleep, which holds no CPU and no GIL) after each batch
and times the loop with and without background prefetch (``--prefetch`` batches ahead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines.shards import read_split_table
from pipelines.train.augment import AugmentConfig
from pipelines.train.data import DataPool, Prefetcher, prepare_arrays


def load_batches(shards: Path, split: str, batch_size: int, max_images: int | None) -> list[dict[str, np.ndarray]]:
    """The split as numpy batches of ``batch_size`` rows (the last partial batch dropped, like training)."""
    table = read_split_table(shards, split, columns=["image", "landmarks"])
    n = table.num_rows if max_images is None else min(table.num_rows, max_images)
    batches = []
    for start in range(0, n - batch_size + 1, batch_size):
        part = table.slice(start, batch_size)
        batches.append({k: part.column(k).to_numpy(zero_copy_only=False) for k in ("image", "landmarks")})
    if not batches:
        raise SystemExit(f"{shards}/{split}: {n} rows, fewer than one batch of {batch_size}")
    return batches


def run_pass(
    batches: list[dict[str, np.ndarray]],
    pool: DataPool,
    image_size: int,
    n_landmarks: int,
    aug: AugmentConfig | None,
    *,
    prefetch: int = 0,
    step_s: float = 0.0,
    digest: Any = None,
) -> float:
    """Seconds to prepare every batch (and to 'train' on it for ``step_s`` when > 0)."""
    t0 = time.perf_counter()
    prepared = (
        prepare_arrays(b, image_size, n_landmarks=n_landmarks, seed=(0, 0, 0, step), aug=aug, pool=pool)
        for step, b in enumerate(batches)
    )
    with Prefetcher(prepared, prefetch) as ready:
        for imgs, lms in ready:
            if step_s > 0:
                time.sleep(step_s)
            if digest is not None:
                digest.update(imgs.tobytes())
                digest.update(lms.tobytes())
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=Path, required=True, help="shards folder (<shards>/<split>/part-*.parquet)")
    p.add_argument("--split", default="train")
    p.add_argument("--threads", default="1,2", help="comma-separated DataPool sizes")
    p.add_argument("--image-size", type=int, default=256, help="model input size (output of the augmentation)")
    p.add_argument("--batch-size", type=int, default=16, help="per-worker batch size (train.batch_size)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N rows of the split")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per thread count (the median is reported)")
    p.add_argument("--no-augment", action="store_true", help="decode + resize only (the validation path)")
    p.add_argument("--step-ms", type=float, default=0.0, help="simulated accelerator step per batch (0: none)")
    p.add_argument("--prefetch", type=int, default=2, help="prefetch depth for the --step-ms comparison")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    batches = load_batches(args.shards, args.split, args.batch_size, args.max_images)
    n_images = sum(len(b["image"]) for b in batches)
    n_landmarks = len(batches[0]["landmarks"][0]) // 2
    aug = None if args.no_augment else AugmentConfig()
    rows, digests = [], {}
    for t in threads:
        with DataPool(t) as pool:
            digest = hashlib.sha256()
            run_pass(batches[:1], pool, args.image_size, n_landmarks, aug)  # warm-up
            secs = [
                run_pass(batches, pool, args.image_size, n_landmarks, aug, digest=digest if r == 0 else None)
                for r in range(args.repeats)
            ]
            row: dict[str, Any] = {
                "threads": t,
                "images": n_images,
                "seconds": [round(s, 4) for s in secs],
                "images_per_s": n_images / statistics.median(secs),
            }
            if args.step_ms > 0:
                step_s = args.step_ms / 1000
                serial = run_pass(batches, pool, args.image_size, n_landmarks, aug, prefetch=0, step_s=step_s)
                overlap = run_pass(
                    batches, pool, args.image_size, n_landmarks, aug, prefetch=args.prefetch, step_s=step_s
                )
                row["with_step_images_per_s"] = {
                    "prefetch_0": n_images / serial,
                    f"prefetch_{args.prefetch}": n_images / overlap,
                }
        digests[t] = digest.hexdigest()
        row["sha256"] = digests[t]
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["images_per_s"]
    for row in rows:
        row["speedup_vs_first"] = row["images_per_s"] / base
    result = {
        "benchmark": "train data path: decode + augment (pipelines.train.data.prepare_arrays on a DataPool)",
        "shards": str(args.shards),
        "split": args.split,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "n_landmarks": n_landmarks,
        "augment": aug is not None,
        "step_ms": args.step_ms,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "processor": platform.processor() or platform.machine(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "identical": len(set(digests.values())) == 1,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
