"""The per-worker train cache: canonical order, per-epoch global partition, limits, and training from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from ldeq_core.model import LandmarkDEQ
from pipelines.shards import read_split_table
from pipelines.train.cache import TrainCache
from pipelines.train.data import DataPool, Prefetcher
from pipelines.train.loop import cached_batches, parameter_groups, train_one_epoch
from tests.pipelines.train_helpers import tiny_config, write_tiny_shards

COLUMNS = ("image", "landmarks", "source_id", "frame_index")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    root = write_tiny_shards(tmp_path_factory.mktemp("cache_shards"), n_train=24, n_val=4)
    return read_split_table(root, "train")


def batches(table: pa.Table, size: int) -> list[dict[str, np.ndarray]]:
    """As Ray Data's ``iter_batches(batch_format="numpy")`` hands them over; the last batch may be short."""
    return [
        {k: table.slice(s, size).column(k).to_numpy(zero_copy_only=False) for k in COLUMNS}
        for s in range(0, table.num_rows, size)
    ]


def landmarks_by_image(table: pa.Table) -> dict[bytes, np.ndarray]:
    images = table.column("image").to_pylist()
    lms = table.column("landmarks").to_pylist()
    return {img: np.asarray(lm, np.float32) for img, lm in zip(images, lms, strict=True)}


def test_the_cache_order_and_digest_do_not_depend_on_how_the_rows_arrived(table: pa.Table) -> None:
    a = TrainCache.read(batches(table, 5), max_mb=64, where="a")
    reversed_rows = table.take(pa.array(np.arange(table.num_rows)[::-1]))
    b = TrainCache.read(batches(reversed_rows, 7), max_mb=64, where="b")
    assert len(a) == len(b) == table.num_rows
    assert a.digest == b.digest
    assert list(a.images) == list(b.images)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    truth = landmarks_by_image(table)  # each image keeps its own landmarks through the sort
    for img, lm in zip(a.images, a.landmarks, strict=True):
        np.testing.assert_array_equal(lm, truth[img])
    ids = table.column("source_id").to_pylist()
    assert [truth[i].tobytes() for i in a.images] == [  # canonical order = sorted source ids (all distinct here)
        truth[table.column("image")[ids.index(s)].as_py()].tobytes() for s in sorted(ids)
    ]
    other = TrainCache.read(batches(table.slice(1), 5), max_mb=64, where="c")
    assert other.digest != a.digest


def test_each_epoch_partitions_the_rows_disjointly_and_reshuffles_across_ranks(table: pa.Table) -> None:
    cache = TrainCache.read(batches(table, 8), max_mb=64, where="t")
    world, n = 5, len(cache)
    shares = {e: [cache.epoch_rows(3, e, r, world) for r in range(world)] for e in range(4)}
    for rows in shares.values():
        assert all(len(r) == n // world for r in rows)  # 24 // 5 = 4 each; 4 rows sit the epoch out
        joined = np.concatenate(rows)
        assert len(set(joined.tolist())) == len(joined) and joined.min() >= 0 and joined.max() < n
    np.testing.assert_array_equal(cache.epoch_rows(3, 2, 1, world), shares[2][1])  # deterministic
    assert len({tuple(shares[e][0]) for e in shares}) > 1  # rank 0's rows change with the epoch
    assert not np.array_equal(cache.epoch_rows(4, 0, 0, world), shares[0][0])  # and with the seed
    owner = {e: {int(i): r for r, rows in enumerate(shares[e]) for i in rows} for e in shares}
    moved = [i for i in owner[0] if i in owner[1] and owner[0][i] != owner[1][i]]
    assert moved  # rows move between ranks from one epoch to the next (global, not per-rank, shuffling)
    with pytest.raises(ValueError, match="rank 5 is not in a world of 5"):
        cache.epoch_rows(3, 0, 5, world)


def test_epoch_batches_are_full_and_keep_image_landmark_pairs(table: pa.Table) -> None:
    cache = TrainCache.read(batches(table, 8), max_mb=64, where="t")
    truth = landmarks_by_image(table)
    got = list(cache.epoch_batches(0, 1, 1, 2, 5))  # 12 rows for rank 1 of 2 -> 2 full batches of 5
    assert cache.steps_per_epoch(2, 5) == len(got) == 2
    assert all(len(b["image"]) == len(b["landmarks"]) == 5 for b in got)
    rows = cache.epoch_rows(0, 1, 1, 2)[:10]
    assert [img for b in got for img in b["image"]] == list(cache.images[rows])
    for b in got:
        for img, lm in zip(b["image"], b["landmarks"], strict=True):
            np.testing.assert_array_equal(lm, truth[img])


def test_an_oversized_or_empty_split_is_refused_with_the_setting_to_change(table: pa.Table) -> None:
    one_image_mb = len(table.column("image")[0].as_py()) / (1 << 20)
    with pytest.raises(ValueError, match=r"shards/train: .*worker_cache_max_mb .*after 2 rows.*worker_cache: false"):
        TrainCache.read(batches(table, 8), max_mb=one_image_mb * 1.5, where="shards/train")
    with pytest.raises(ValueError, match="shards/train: the train split has no rows"):
        TrainCache.read([], max_mb=64, where="shards/train")


def test_training_epochs_take_exactly_their_steps_from_one_cached_stream(table: pa.Table) -> None:
    """Two epochs from one persistent stream: 3 steps each, the same losses on 1 thread inline and on 3 threads
    with prefetch, and a stream that runs dry mid-epoch is an error, not a short epoch."""
    cache = TrainCache.read(batches(table, 8), max_mb=64, where="t")
    base = tiny_config(Path("/unused"), batch_size=8, epochs=2)

    def run(threads: int, prefetch: int) -> list[dict[str, float]]:
        cfg = base.with_overrides([f"data_threads={threads}", f"prefetch_batches={prefetch}"])
        torch.manual_seed(0)
        model = LandmarkDEQ(cfg.model_config())
        opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        steps = cache.steps_per_epoch(1, cfg.batch_size)
        with (
            DataPool(threads) as pool,
            Prefetcher(cached_batches(cache, cfg, range(2), 0, 1, pool), prefetch) as stream,
        ):
            out = [
                train_one_epoch(model, opt, sched, stream, cfg, e, 0, 1, torch.device("cpu"), steps=steps)
                for e in range(2)
            ]
            with pytest.raises(RuntimeError, match="epoch 3: the batches ended after 0 of 3 steps"):
                train_one_epoch(model, opt, sched, stream, cfg, 2, 0, 1, torch.device("cpu"), steps=steps)
        return out

    inline, threaded = run(1, 0), run(3, 2)
    assert [r["steps"] for r in inline] == [3, 3] and [r["images"] for r in inline] == [24, 24]
    assert [r["loss_sum"] for r in inline] == [r["loss_sum"] for r in threaded]
    assert inline[0]["loss_sum"] != inline[1]["loss_sum"]
    for r in inline:
        assert 0 < r["first_batch_s"] <= r["data_wait_s"] < r["seconds"] and 0 < r["compute_s"] < r["seconds"]
