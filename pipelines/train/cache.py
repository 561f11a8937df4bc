"""The training split held in each worker's memory (still encoded), shuffled globally every epoch.

With ``train.worker_cache`` every worker reads the whole train split once, before the first epoch, and puts the rows
in a canonical order (source id, frame index, landmarks). Each epoch it then takes its share of one permutation of
all rows, drawn from (seed, epoch) and therefore identical on every rank, the way
``torch.utils.data.DistributedSampler`` partitions an epoch: ranks get disjoint rows, each rank ``n // world`` of
them, and a row can move between ranks from one epoch to the next.

Epochs then start without a Ray Data iterator, whose start-up was the largest per-epoch cost that does not shrink
with more GPUs (BENCHMARKS.md 13f), and because the order of the next epoch is known in advance, the prefetch thread
can prepare its first batches while the current epoch validates (:func:`cached_batches`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.shards import decode_batch

MIB = 1 << 20


@dataclass(frozen=True)
class TrainCache:
    """Encoded images and landmarks of the train split, in canonical order (see the module docstring)."""

    images: np.ndarray  # (N,) object: encoded image bytes
    landmarks: np.ndarray  # (N, 2L) float32: crop pixels, (x, y) row-major as in the shards
    digest: str  # sha256 of the canonical row keys: the same on every rank that read the same split

    @classmethod
    def read(cls, batches: Iterable[Mapping[str, Any]], *, max_mb: float, where: str) -> TrainCache:
        """Collect shard batches (``image``, ``landmarks``, ``source_id``, ``frame_index`` columns) into a cache.

        Raises ``ValueError`` naming ``where`` when the encoded images pass ``max_mb`` MiB (the split does not fit
        the per-worker budget: set ``train.worker_cache: false`` to stream it every epoch), or when it has no row.
        """
        images: list[bytes] = []
        lms: list[np.ndarray] = []
        keys: list[tuple[str, int, bytes]] = []
        nbytes = 0
        for batch in batches:
            flat = decode_batch({"landmarks": batch["landmarks"]})["landmarks"].reshape(len(batch["image"]), -1)
            for i, data in enumerate(batch["image"]):
                blob = bytes(data)
                nbytes += len(blob)
                if nbytes > max_mb * MIB:
                    raise ValueError(
                        f"{where}: the train split's encoded images exceed train.worker_cache_max_mb "
                        f"({max_mb:g} MiB) after {len(images) + 1} rows; raise the limit or set "
                        "train.worker_cache: false to stream the split from Ray Data every epoch"
                    )
                images.append(blob)
                lms.append(flat[i].astype(np.float32))
                keys.append((str(batch["source_id"][i]), int(batch["frame_index"][i]), flat[i].tobytes()))
        if not images:
            raise ValueError(f"{where}: the train split has no rows to cache")
        order = sorted(range(len(keys)), key=keys.__getitem__)
        h = hashlib.sha256()
        for j in order:
            source, frame, points = keys[j]
            h.update(f"{source}\0{frame}\0".encode() + points)
        image_col = np.empty(len(images), dtype=object)
        image_col[:] = [images[j] for j in order]
        return cls(image_col, np.stack([lms[j] for j in order]), h.hexdigest())

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return int(sum(len(b) for b in self.images) + self.landmarks.nbytes)

    def epoch_rows(self, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
        """Row indices of ``rank`` in ``epoch``: every ``world``-th entry of the epoch's global permutation,
        ``len(self) // world`` of them (the remainder rows sit this epoch out, like ``drop_last`` sampling)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        perm = np.random.default_rng([seed, epoch]).permutation(len(self))
        return perm[rank::world][: len(self) // world]

    def steps_per_epoch(self, world: int, batch_size: int) -> int:
        return (len(self) // world) // batch_size

    def epoch_batches(
        self, seed: int, epoch: int, rank: int, world: int, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Shard-like batches (``image``, ``landmarks`` columns) of this rank's rows in ``epoch``; full batches
        only."""
        rows = self.epoch_rows(seed, epoch, rank, world)
        for s in range(len(rows) // batch_size):
            idx = rows[s * batch_size : (s + 1) * batch_size]
            yield {"image": self.images[idx], "landmarks": self.landmarks[idx]}
