"""Training throughput, per-epoch time breakdown and DDP scaling efficiency of `ldeq train` runs.

Reads each run's last Ray Train checkpoint (``state.pt``: the per-epoch history) and prints one line per run:
images/s (mean of the epochs after the first, as ``metrics/train.json``), per GPU, efficiency against the
1-GPU run with the same extra settings, and where an epoch's time went on the slowest rank.

Usage: python3 bench/gpu/scaling_report.py OUT.json LABEL:WORLD:STORAGE_DIR ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PARTS = ("epoch_train_s", "epoch_first_batch_s", "epoch_data_wait_s", "epoch_compute_s", "epoch_sync_s")


def last_history(storage: Path) -> list[dict[str, float]]:
    """The history of the checkpoint with the most epochs done under ``storage`` (empty when none)."""
    best: tuple[int, list[dict[str, float]]] = (-1, [])
    for path in storage.glob("*/checkpoint_*/state.pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if int(state["epochs_done"]) > best[0]:
            best = (int(state["epochs_done"]), list(state["history"]))
    return best[1]


def summarise(label: str, world: int, history: list[dict[str, float]]) -> dict[str, object]:
    steady = history[1:] or history
    out: dict[str, object] = {"label": label, "world": world, "epochs": len(history)}
    if not steady:
        return out
    ips = sum(r["images_per_s"] for r in steady) / len(steady)
    out.update(images_per_s=ips, per_gpu=ips / world, val_nme_last=history[-1].get("val_nme"))
    for k in PARTS:
        if all(k in r for r in steady):
            out[k] = sum(r[k] for r in steady) / len(steady)
    out["history"] = history
    return out


def main(out_path: str, specs: list[str]) -> None:
    rows = []
    for spec in specs:
        label, world, storage = spec.rsplit(":", 2)
        rows.append(summarise(label, int(world), last_history(Path(storage))))
    for r in rows:
        # the 1-GPU run with the same extra settings ("4:data_threads=2" -> "1:data_threads=2")
        settings = str(r["label"]).partition(":")[2]
        base = next((b for b in rows if b["world"] == 1 and str(b["label"]).partition(":")[2] == settings), None)
        if base is not None and "per_gpu" in r and "per_gpu" in base:
            r["efficiency"] = r["per_gpu"] / base["per_gpu"]
        parts = " ".join(f"{k.removeprefix('epoch_')}={r[k]:.3f}" for k in PARTS if k in r)
        eff = f"eff {r['efficiency']:.1%}" if "efficiency" in r else ""
        ips = f"{r['images_per_s']:.1f} img/s ({r['per_gpu']:.1f}/GPU)" if "per_gpu" in r else "no history"
        print(f"{r['label']}: {r['world']} GPU {ips} {eff} epochs={r['epochs']} {parts}")
    Path(out_path).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
