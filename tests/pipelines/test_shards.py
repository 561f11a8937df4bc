"""Shard schema, deterministic writer and readers (decode_batch, collate_torch, iter_video_sequences, load_split)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.shards import (
    SCHEMA,
    SCHEMA_VERSION,
    ShardWriter,
    check_table,
    collate_torch,
    decode_batch,
    decode_image,
    encode_image,
    image_codec_of,
    iter_video_sequences,
    list_splits,
    load_split,
    make_row,
    rows_to_table,
    split_files,
    torch_collate_fn,
)


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 256, dtype=np.float64)
    img = base[None, :, None] * 0.5 + base[:, None, None] * 0.3 + rng.integers(0, 6, (256, 256, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _row(
    source: str, frame: int, seed: int, *, split: str = "video_easy", codec: str = "png", n_landmarks: int = 5
) -> dict:
    lm = np.random.default_rng(seed).uniform(0, 256, (n_landmarks, 2))
    affine = np.array([[2.0, 0.0, -10.0 - seed], [0.0, 2.0, -20.0]])
    box = np.array([5.0, 10.0, 5.0 + 106.0, 10.0 + 106.0 + seed])
    return make_row(
        encode_image(_image(seed), codec),
        lm,
        affine,
        box,
        source_id=source,
        frame_index=frame,
        split=split,
        dataset="toy",
    )


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_png_round_trip_is_exact_and_jpeg_is_close() -> None:
    img = _image(1)
    png, jpg = encode_image(img, "png"), encode_image(img, "jpeg")
    assert image_codec_of(png) == "png" and image_codec_of(jpg) == "jpeg" and image_codec_of(b"GIF89a") is None
    np.testing.assert_array_equal(decode_image(png), img)
    err = np.abs(decode_image(jpg).astype(int) - img.astype(int))
    assert err.mean() < 2.0 and err.max() > 0  # JPEG-95: close, not exact
    # a lower quality gives a smaller file that decodes less exactly (and the default is quality 95)
    jpg60 = encode_image(img, "jpeg", quality=60)
    assert encode_image(img, "jpeg", quality=95) == jpg and len(jpg60) < len(jpg)
    assert np.abs(decode_image(jpg60).astype(int) - img.astype(int)).mean() > err.mean()
    with pytest.raises(ValueError, match="codec"):
        encode_image(img, "webp")
    with pytest.raises(ValueError, match="256"):
        encode_image(img[:128], "png")
    with pytest.raises(ValueError, match="row 7"):
        decode_image(b"not an image", where="row 7")


def test_make_row_layout_and_validation() -> None:
    lm = np.array([[1.5, 2.25], [3.0, 4.0]])
    row = make_row(
        b"x",
        lm,
        np.array([[1, 0, 2], [0, 1, 3]]),
        np.array([0, 1, 2, 3]),
        source_id="a",
        frame_index=-1,
        split="train",
        dataset="d",
    )
    assert row["landmarks"] == [1.5, 2.25, 3.0, 4.0] and row["affine"] == [1, 0, 2, 0, 1, 3]
    assert row["n_landmarks"] == 2 and row["schema_version"] == SCHEMA_VERSION
    assert rows_to_table([row]).schema.equals(SCHEMA)
    bad = lm.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="landmarks"):
        make_row(b"x", bad, np.eye(2, 3), np.zeros(4), source_id="a", frame_index=0, split="t", dataset="d")
    with pytest.raises(ValueError, match="box"):
        make_row(
            b"x", lm, np.eye(2, 3), np.array([0, 1, np.inf, 3]), source_id="a", frame_index=0, split="t", dataset="d"
        )


def test_writer_rolls_over_stills_and_keeps_videos_whole(tmp_path) -> None:
    stills = rows_to_table([_row(f"s{i:02d}", -1, i, split="train") for i in range(10)])
    w = ShardWriter(tmp_path / "train", rows_per_shard=4, row_group_size=3)
    w.write(stills)
    assert [f.rows for f in w.close()] == [4, 4, 2]
    assert pq.ParquetFile(tmp_path / "train" / "part-00000.parquet").metadata.num_row_groups == 2  # 3 + 1

    rows = [_row(v, t, 10 * k + t) for k, v in enumerate("ABC") for t in range(3)]
    w = ShardWriter(tmp_path / "video_easy", rows_per_shard=4, keep_sources_together=True)
    for r in rows:  # row by row: file boundaries must not depend on how rows arrive
        w.write(rows_to_table([r]))
    files = w.close()
    assert [(f.rows, f.sources) for f in files] == [(6, 2), (3, 1)]
    assert list_splits(tmp_path) == ["train", "video_easy"]

    w2 = ShardWriter(tmp_path / "again", rows_per_shard=4, keep_sources_together=True)
    w2.write(rows_to_table(rows))
    assert [_sha(f.path) for f in w2.close()] == [_sha(f.path) for f in files]


def test_decode_batch_from_numpy_dict_and_table() -> None:
    rows = [_row("v", t, t) for t in range(3)]
    table = rows_to_table(rows)
    as_numpy = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    for batch in (as_numpy, table):
        out = decode_batch(batch)
        assert out["image"].shape == (3, 256, 256, 3) and out["image"].dtype == np.uint8
        np.testing.assert_array_equal(out["image"][2], _image(2))
        assert out["landmarks"].shape == (3, 5, 2) and out["landmarks"].dtype == np.float32
        np.testing.assert_array_equal(out["landmarks"][1].reshape(-1), np.float32(rows[1]["landmarks"]))
        np.testing.assert_array_equal(out["affine"][1], [[2.0, 0.0, -11.0], [0.0, 2.0, -20.0]])
        np.testing.assert_array_equal(out["box"][2], [5.0, 10.0, 111.0, 118.0])
        assert out["frame_index"].tolist() == [0, 1, 2] and out["source_id"].tolist() == ["v"] * 3
    partial = decode_batch({"landmarks": as_numpy["landmarks"]})
    assert set(partial) == {"landmarks"}
    tensors = collate_torch(as_numpy)
    assert tensors["image"].dtype == torch.uint8 and tensors["landmarks"].dtype == torch.float32
    assert "source_id" not in tensors and tuple(tensors["affine"].shape) == (3, 2, 3)
    ragged = {"landmarks": np.array([np.zeros(4), np.zeros(6)], dtype=object)}
    with pytest.raises(ValueError, match="mixes row lengths"):
        decode_batch(ragged)


def test_iter_video_sequences_sorts_frames_and_checks_layout(tmp_path) -> None:
    order = [("B", 2), ("B", 0), ("B", 1), ("B", 3), ("A", 1), ("A", 0)]
    rows = [_row(v, t, 10 * (v == "B") + t) for v, t in order]
    w = ShardWriter(tmp_path / "video_easy", rows_per_shard=2, keep_sources_together=True)
    w.write(rows_to_table(rows))
    assert len(w.close()) == 2
    seqs = list(iter_video_sequences(tmp_path, "video_easy"))
    assert [(s.source_id, len(s)) for s in seqs] == [("B", 4), ("A", 2)]
    b = seqs[0]
    assert b.frame_indices.tolist() == [0, 1, 2, 3] and b.frames.shape == (4, 256, 256, 3)
    for i in range(4):  # frame i of B was made from seed 10 + i
        np.testing.assert_array_equal(b.frames[i], _image(10 + i))
        np.testing.assert_array_equal(b.boxes[i], [5.0, 10.0, 111.0, 116.0 + 10 + i])
    assert b.affines.shape == (4, 2, 3) and b.landmarks.shape == (4, 5, 2)
    no_img = next(iter_video_sequences(tmp_path, "video_easy", decode_images=False))
    assert no_img.frames is None and no_img.frame_indices.tolist() == [0, 1, 2, 3]

    w = ShardWriter(tmp_path / "video_split", rows_per_shard=2)  # a video across files is rejected
    w.write(rows_to_table([_row("C", t, t, split="video_split") for t in range(3)]))
    w.close()
    with pytest.raises(ValueError, match="earlier shard file"):
        list(iter_video_sequences(tmp_path, "video_split"))
    with pytest.raises(ValueError, match="no shard files"):
        split_files(tmp_path, "video_hard")


def test_check_table_rejects_other_schema_versions() -> None:
    table = rows_to_table([_row("v", 0, 0)])
    check_table(table, "ok.parquet")
    old = table.set_column(
        table.column_names.index("schema_version"), "schema_version", pa.array([SCHEMA_VERSION + 1], pa.int16())
    )
    with pytest.raises(ValueError, match="schema version"):
        check_table(old, "old.parquet")
    with pytest.raises(ValueError, match="missing columns"):
        check_table(table.drop(["box"]), "x.parquet")


@pytest.mark.slow
def test_load_split_feeds_decode_batch_through_ray(tmp_path, ray_local) -> None:
    rows = [_row(f"s{i}", -1, i, split="train", codec="jpeg") for i in range(6)]
    w = ShardWriter(tmp_path / "train", rows_per_shard=4)
    w.write(rows_to_table(rows))
    w.close()
    ds = load_split(tmp_path, "train")
    assert ds.count() == 6
    got = [decode_batch(b) for b in ds.iter_batches(batch_size=4, batch_format="numpy")]
    lms = np.concatenate([g["landmarks"] for g in got])
    ids = np.concatenate([g["source_id"] for g in got])
    expect = {r["source_id"]: np.float32(r["landmarks"]).reshape(5, 2) for r in rows}
    for sid, lm in zip(ids, lms, strict=True):
        np.testing.assert_array_equal(lm, expect[sid])
    assert all(g["image"].dtype == np.uint8 and g["image"].shape[1:] == (256, 256, 3) for g in got)
    batch = next(iter(ds.iter_torch_batches(batch_size=3, collate_fn=torch_collate_fn())))
    assert tuple(batch["landmarks"].shape) == (3, 5, 2)
