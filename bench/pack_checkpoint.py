"""Move a checkpoint through a channel with a per-file size limit (the GPU machine returns files of <= 16 MiB).

    python bench/pack_checkpoint.py pack model.pt OUT_DIR [--half] [--part-mb 15]
    python bench/pack_checkpoint.py unpack OUT_DIR model.pt

``pack --half`` first stores the weights as float16 (half the bytes; loading casts them back to float32, so the
result is the fp16-rounded model; use that same file everywhere for consistent numbers). Parts are
``<name>.partNN`` plus ``<name>.manifest.json`` with the sha256 that ``unpack`` verifies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from ldeq_core.checkpoints import file_sha256, load_checkpoint, save_checkpoint


def pack(checkpoint: Path, out_dir: Path, *, half: bool = False, part_mb: float = 15.0) -> Path:
    """Write ``out_dir/<name>.partNN`` and a manifest; returns the manifest path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = checkpoint
    if half:
        loaded = load_checkpoint(checkpoint)
        src = out_dir / f"{checkpoint.stem}.fp16.pt"
        save_checkpoint(src, loaded.model.half(), {**loaded.metadata, "weights_stored_as": "float16"})
    data = src.read_bytes()
    size = int(part_mb * 2**20)
    parts = []
    for i in range(0, len(data), size):
        part = out_dir / f"{src.name}.part{i // size:02d}"
        part.write_bytes(data[i : i + size])
        parts.append(part.name)
    manifest = out_dir / f"{src.name}.manifest.json"
    manifest.write_text(json.dumps({"file": src.name, "sha256": hashlib.sha256(data).hexdigest(), "parts": parts}))
    return manifest


def unpack(parts_dir: Path, out: Path) -> Path:
    """Join the parts named by the one manifest in ``parts_dir`` into ``out`` and verify its sha256."""
    manifests = sorted(parts_dir.glob("*.manifest.json"))
    if len(manifests) != 1:
        raise ValueError(f"{parts_dir}: expected one *.manifest.json, found {len(manifests)}")
    man = json.loads(manifests[0].read_text())
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        for name in man["parts"]:
            fh.write((parts_dir / name).read_bytes())
    if file_sha256(tmp) != man["sha256"]:
        tmp.unlink()
        raise ValueError(f"{parts_dir}: joined parts do not match the manifest's sha256 (missing or corrupt part)")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("checkpoint", type=Path)
    a.add_argument("out_dir", type=Path)
    a.add_argument("--half", action="store_true")
    a.add_argument("--part-mb", type=float, default=15.0)
    b = sub.add_parser("unpack")
    b.add_argument("parts_dir", type=Path)
    b.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        return pack(args.checkpoint, args.out_dir, half=args.half, part_mb=args.part_mb)
    return unpack(args.parts_dir, args.out)


if __name__ == "__main__":
    print(main())
