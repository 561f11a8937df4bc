"""The training data path: per-sample seeding, the decode/augment thread pool and background prefetch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from pipelines.shards import decode_image, read_split_table
from pipelines.train.augment import AugmentConfig, augment, sample_rng
from pipelines.train.config import TrainConfig, load_train_config
from pipelines.train.data import DataPool, Prefetcher, flip_perm_for, prepare_arrays
from pipelines.train.trainer import ray_run_name
from tests.pipelines.train_helpers import tiny_config, write_tiny_shards

REPO = Path(__file__).resolve().parents[2]
OUT = 64
BATCH = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("data_shards"), n_train=24, n_val=8)


def numpy_batches(table: pa.Table, size: int = BATCH) -> list[dict[str, np.ndarray]]:
    """Batches as Ray Data's ``iter_batches(batch_format="numpy")`` hands them over (object columns)."""
    return [
        {k: table.slice(s, size).column(k).to_numpy(zero_copy_only=False) for k in ("image", "landmarks")}
        for s in range(0, table.num_rows - size + 1, size)
    ]


def prepare_all(batches, threads: int | None, prefetch: int, aug: AugmentConfig | None) -> list:
    """Every batch prepared with key (seed 7, epoch 1, rank 0, step) on ``threads`` threads (None: no pool)."""

    def run(pool: DataPool | None) -> list:
        source = (
            prepare_arrays(b, OUT, n_landmarks=98, seed=(7, 1, 0, step), aug=aug, pool=pool)
            for step, b in enumerate(batches)
        )
        with Prefetcher(source, prefetch) as ready:
            return list(ready)

    if threads is None:
        return run(None)
    with DataPool(threads) as pool:
        return run(pool)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ldeq-prefetch"]


def test_prepared_batches_are_identical_for_any_thread_count_and_prefetch(shards: Path) -> None:
    batches = numpy_batches(read_split_table(shards, "train"))
    assert len(batches) == 3
    aug = AugmentConfig(flip_prob=0.5, rotate_prob=1, blur_prob=0.5, occlude_prob=0.5, color_prob=1)
    runs = {
        "inline": prepare_all(batches, None, 0, aug),
        "1 thread": prepare_all(batches, 1, 0, aug),
        "4 threads": prepare_all(batches, 4, 0, aug),
        "1 thread + prefetch": prepare_all(batches, 1, 2, aug),
        "4 threads + prefetch": prepare_all(batches, 4, 2, aug),
    }
    ref = runs["inline"]
    for name, run in runs.items():
        assert len(run) == len(batches), name
        for (img, lm), (ref_img, ref_lm) in zip(run, ref, strict=True):
            assert np.array_equal(img, ref_img) and np.array_equal(lm, ref_lm), name
    # the contract: sample i of step s is augment(decode(row), sample_rng((seed, epoch, rank, s), i))
    perm = flip_perm_for(98)
    for step, batch in enumerate(batches):
        for i in range(BATCH):
            img = decode_image(bytes(batch["image"][i]))
            lm = np.asarray(batch["landmarks"][i], np.float32).reshape(-1, 2)
            want_img, want_lm = augment(img, lm, sample_rng((7, 1, 0, step), i), aug, OUT, perm)
            assert np.array_equal(ref[step][0][i], want_img)
            assert np.array_equal(ref[step][1][i], want_lm.astype(np.float32))
    # the samples really are augmented, each differently
    plain = prepare_all(batches, 4, 2, None)
    assert not np.array_equal(plain[0][0], ref[0][0])
    assert not np.allclose(plain[0][1], ref[0][1])
    moves = ref[0][1] - plain[0][1]
    assert len({round(float(m), 3) for m in moves[:, 0, 0]}) == BATCH


def test_data_pool_keeps_opencv_single_threaded_while_open() -> None:
    before = cv2.getNumThreads()
    with DataPool(2) as a, DataPool(3) as b:
        assert cv2.getNumThreads() == 1
        a.close()
        assert cv2.getNumThreads() == 1  # b is still open
        assert b.threads == 3
    assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError, match="closed"):
        a.run(lambda i: None, 1)
    with pytest.raises(ValueError, match=">= 1 thread"):
        DataPool(0)


def test_a_failing_sample_surfaces_through_pool_and_prefetch_with_its_message(shards: Path) -> None:
    table = read_split_table(shards, "train")
    images = table.column("image").to_pylist()
    images[13] = b"\xff\xd8\xffnot a jpeg"  # row 5 of the second batch
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    batches = numpy_batches(table)
    got = []
    with DataPool(4) as pool:
        source = (
            prepare_arrays(b, OUT, n_landmarks=98, seed=(0, 0, 0, s), aug=AugmentConfig(), pool=pool)
            for s, b in enumerate(batches)
        )
        with (
            pytest.raises(ValueError, match=r"batch row 5: image bytes cannot be decoded"),
            Prefetcher(source, 2) as it,
        ):
            for item in it:
                got.append(item)
    assert len(got) == 1  # the first batch arrived, the second raised, nothing after it
    assert not prefetch_threads()


def test_prefetcher_yields_in_order_stays_bounded_and_stops() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    with Prefetcher(source(), 2) as it:
        for i in it:
            time.sleep(0.002)
            assert len(produced) - len(seen) <= 4  # queue (2) + the one being handed over + the one being made
            seen.append(i)
        assert seen == list(range(20))
        with pytest.raises(StopIteration):
            next(it)
    assert not prefetch_threads()
    assert list(Prefetcher(iter(range(5)), 0)) == list(range(5))  # depth 0: no thread, same items
    with pytest.raises(ValueError, match=">= 0"):
        Prefetcher([], -1)


def test_prefetcher_closed_early_stops_its_thread_and_closes_the_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with Prefetcher(endless(), 3) as it:
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert closed.is_set()
    assert not prefetch_threads()
    with pytest.raises(StopIteration):
        next(it)


def test_prefetcher_reraises_the_source_exception_after_the_good_items() -> None:
    def failing() -> Iterator[int]:
        yield from range(3)
        raise KeyError("shard 7 vanished")

    it = Prefetcher(failing(), 2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="shard 7 vanished") as info:
        next(it)
    assert any(frame.name == "failing" for frame in info.traceback)  # the producer's traceback is kept
    assert not prefetch_threads()
    with pytest.raises(StopIteration):
        next(it)


def test_data_threads_and_prefetch_settings(tmp_path: Path) -> None:
    cfg = load_train_config(REPO / "params.yaml")
    assert (cfg.data_threads, cfg.prefetch_batches) == (None, 2)
    assert cfg.effective_data_threads == 1  # cpus_per_worker 0.5
    assert TrainConfig(cpus_per_worker=2).effective_data_threads == 2
    assert TrainConfig(cpus_per_worker=8).effective_data_threads == 2  # auto is capped (GIL contention)
    assert TrainConfig(cpus_per_worker=8, data_threads=0).effective_data_threads == 2
    assert TrainConfig(cpus_per_worker=0.5, data_threads=3).effective_data_threads == 3  # explicit: as asked
    with pytest.raises(ValueError, match="data_threads"):
        TrainConfig(data_threads=-1)
    with pytest.raises(ValueError, match="prefetch_batches"):
        TrainConfig().with_overrides(["prefetch_batches=-1"])
    # the prepared data does not depend on them, so neither does the run fingerprint (a resume may change them)
    base = tiny_config(tmp_path)
    tuned = base.with_overrides(["data_threads=4", "train.prefetch_batches=0"])
    assert ray_run_name(tuned, "d") == ray_run_name(base, "d")


@pytest.mark.slow
def test_train_and_validate_on_a_ray_iterator_match_across_thread_settings(ray_local: str, shards: Path) -> None:
    """train_one_epoch / validate on a real Ray Data iterator: the same losses on 1 thread inline and on 3 threads
    with prefetch; a corrupt image makes train_one_epoch raise its decode error and leaves no thread behind."""
    import ray
    import torch

    from ldeq_core.model import LandmarkDEQ
    from pipelines.train.loop import parameter_groups, streamed_batches, train_one_epoch, validate

    train_ds = ray.data.from_arrow(read_split_table(shards, "train")).materialize()
    val_ds = ray.data.from_arrow(read_split_table(shards, "val")).materialize()

    def epoch(cfg: TrainConfig, ds: ray.data.Dataset) -> tuple[dict, dict]:
        torch.manual_seed(0)
        model = LandmarkDEQ(cfg.model_config())
        opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        with DataPool(cfg.effective_data_threads) as pool:
            with Prefetcher(streamed_batches(ds.iterator(), cfg, 0, 0, pool), cfg.prefetch_batches) as ready:
                tr = train_one_epoch(model, opt, sched, ready, cfg, 0, 0, 1, torch.device("cpu"))
            va = validate(model, val_ds.iterator(), cfg, 0, 1, torch.device("cpu"), pool)
        return tr, va

    base = tiny_config(Path("/unused"), batch_size=BATCH, val_batch_size=BATCH)
    tr1, va1 = epoch(base.with_overrides(["data_threads=1", "prefetch_batches=0"]), train_ds)
    tr3, va3 = epoch(base.with_overrides(["data_threads=3", "prefetch_batches=2"]), train_ds)
    assert tr1["steps"] == tr3["steps"] == 3 and tr1["images"] == 24
    assert tr1["loss_sum"] == tr3["loss_sum"]
    assert va1["count"] == va3["count"] == 8
    np.testing.assert_array_equal(va1["pred"], va3["pred"])

    table = read_split_table(shards, "train")
    images = table.column("image").to_pylist()
    images[2] = b"broken"
    bad = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    with pytest.raises(ValueError, match=r"batch row \d+: image bytes cannot be decoded"):
        epoch(base.with_overrides(["data_threads=2", "prefetch_batches=2"]), ray.data.from_arrow(bad))
    assert not prefetch_threads()
    assert not [t for t in threading.enumerate() if t.name.startswith("ldeq-data")]
