"""Helpers for the data-stage tests: tiny params and a tiny prepared synthetic dataset."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

TINY_SYNTH = {"n_train": 16, "n_test": 4, "n_videos": 2, "n_frames": 10, "image_format": "png", "workers": 1}


def tiny_params(out: Path, shards: Path, **synthetic: Any) -> dict[str, Any]:
    """params.yaml content for a tiny synthetic prepare + a PNG preprocess into ``out`` / ``shards``."""
    return {
        "data": {
            "source": "synthetic",
            "out": str(out),
            "seed": 0,
            "synthetic": {**copy.deepcopy(TINY_SYNTH), **synthetic},
        },
        "preprocess": {
            "out": str(shards),
            "image_codec": "png",
            "rows_per_shard": 8,
            "row_group_size": 4,
            "stills_per_task": 6,
            "progress": False,
        },
    }
