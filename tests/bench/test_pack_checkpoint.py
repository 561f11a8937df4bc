"""bench/pack_checkpoint.py: parts join back to the same bytes; --half gives the fp16-rounded model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pack_checkpoint

from ldeq_core.checkpoints import file_sha256, load_checkpoint, save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ


def test_pack_unpack_roundtrip_and_half(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16))
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, {"epoch": 3})
    pack_checkpoint.main(["pack", str(ckpt), str(tmp_path / "p"), "--part-mb", "0.5"])
    parts = sorted((tmp_path / "p").glob("m.pt.part*"))
    assert len(parts) == -(-ckpt.stat().st_size // int(0.5 * 2**20)) and len(parts) > 1
    out = pack_checkpoint.main(["unpack", str(tmp_path / "p"), str(tmp_path / "back.pt")])
    assert file_sha256(out) == file_sha256(ckpt)
    parts[0].write_bytes(parts[0].read_bytes()[:-1] + b"\0")  # a corrupt part is caught
    with pytest.raises(ValueError, match="sha256"):
        pack_checkpoint.unpack(tmp_path / "p", tmp_path / "bad.pt")

    pack_checkpoint.main(["pack", str(ckpt), str(tmp_path / "h"), "--half"])
    half = pack_checkpoint.unpack(tmp_path / "h", tmp_path / "half.pt")
    loaded = load_checkpoint(half)
    assert loaded.metadata == {"epoch": 3, "weights_stored_as": "float16"}
    for (k, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert b.dtype == a.dtype, k  # loaded back as float32
        assert torch.equal(b, a.half().to(a.dtype)) if a.is_floating_point() else torch.equal(a, b)
