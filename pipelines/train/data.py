"""From shard batches (``pipelines.shards``) to model tensors: decode, augment or resize, normalise.

Decoding and augmentation run per sample on a :class:`DataPool` of threads (OpenCV and numpy release the GIL);
sample ``i`` of a batch draws from its own generator (:func:`pipelines.train.augment.sample_rng`), so a batch comes
out bit-identical whatever the number of threads. :class:`Prefetcher` prepares the next batches in a background
thread while the current one trains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import cv2
import numpy as np
import torch

from ldeq_core.geometry import to_model_input
from ldeq_core.layouts import get_layout
from pipelines.shards import decode_batch, decode_image
from pipelines.train.augment import AugmentConfig, augment, resize_image, resize_points, sample_rng

T = TypeVar("T")

_CV2_LOCK = threading.Lock()
_cv2_pools = 0  # open DataPools; OpenCV runs single-threaded while there is one
_cv2_saved_threads = 0


class DataPool:
    """``threads`` threads that prepare the samples of a batch in parallel; close it (or use ``with``) when done.

    While any pool is open, OpenCV's own parallelism is off (``cv2.setNumThreads(1)``, a process-wide setting,
    restored when the last pool closes): the pool is the parallelism, and the two together would oversubscribe
    the worker's CPUs.
    """

    def __init__(self, threads: int) -> None:
        global _cv2_pools, _cv2_saved_threads
        if threads < 1:
            raise ValueError(f"DataPool needs >= 1 thread, got {threads}")
        self.threads = int(threads)
        with _CV2_LOCK:
            if _cv2_pools == 0:
                _cv2_saved_threads = cv2.getNumThreads()
                cv2.setNumThreads(1)
            _cv2_pools += 1
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(self.threads, thread_name_prefix="ldeq-data")

    def run(self, fn: Callable[[int], None], n: int) -> None:
        """``fn(0)``, ..., ``fn(n - 1)`` on the pool; returns when all are done, raising the first exception."""
        if self._executor is None:
            raise RuntimeError("DataPool is closed")
        futures = [self._executor.submit(fn, i) for i in range(n)]
        try:
            for f in futures:
                f.result()
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        global _cv2_pools
        if self._executor is None:
            return
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None
        with _CV2_LOCK:
            _cv2_pools -= 1
            if _cv2_pools == 0:
                cv2.setNumThreads(_cv2_saved_threads)

    def __enter__(self) -> DataPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def flip_perm_for(n_landmarks: int) -> np.ndarray | None:
    """The layout's flip permutation (98: WFLW, 68: 300-W), or None for an unknown layout (no flips)."""
    try:
        return get_layout(n_landmarks).flip_perm
    except ValueError:
        return None


def prepare_arrays(
    batch: Mapping[str, Any],
    out_size: int,
    *,
    n_landmarks: int,
    seed: Sequence[int] | None = None,
    aug: AugmentConfig | None = None,
    pool: DataPool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a shard batch; augment each sample (when ``seed`` and ``aug`` are given) or just resize it.

    ``seed`` is the batch key, e.g. (seed, epoch, rank, step): sample ``i`` draws from ``sample_rng(seed, i)``.
    ``pool`` spreads the samples over its threads (None: one after the other here); the result is the same.
    Returns ((N, out, out, 3) uint8 RGB, (N, L, 2) float32 landmarks in pixels of the ``out_size`` image).
    """
    images = batch["image"]
    lms = decode_batch({"landmarks": batch["landmarks"]})["landmarks"]
    if len(images) != len(lms):
        raise ValueError(f"shard batch has {len(images)} images and {len(lms)} landmark rows")
    if lms.shape[1] != n_landmarks:
        raise ValueError(f"shard batch has {lms.shape[1]} landmarks per face, the model predicts {n_landmarks}")
    perm = flip_perm_for(n_landmarks)
    augmenting = seed is not None and aug is not None and aug.enabled
    out_img = np.empty((len(images), out_size, out_size, 3), np.uint8)
    out_lm = np.empty((len(images), n_landmarks, 2), np.float32)

    def one(i: int) -> None:
        img = decode_image(bytes(images[i]), where=f"batch row {i}")
        if augmenting:
            a_img, a_lm = augment(img, lms[i], sample_rng(tuple(seed), i), aug, out_size, perm)
        else:
            a_img, a_lm = resize_image(img, out_size), resize_points(lms[i], img.shape[0], out_size)
        out_img[i], out_lm[i] = a_img, a_lm

    if pool is None:
        for i in range(len(images)):
            one(i)
    else:
        pool.run(one, len(images))
    return out_img, out_lm


_ITEM, _END, _ERROR = range(3)


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, up to ``depth`` items ahead of the consumer (0: no thread,
    ``source`` is iterated on demand). Items come in order; an exception raised by ``source`` is re-raised by
    ``next`` (the same object: type, message and traceback). Use it as a context manager, or call :meth:`close`:
    the thread stops after the item it is working on and ``source`` is closed there.
    """

    def __init__(self, source: Iterable[T], depth: int) -> None:
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self.depth = int(depth)
        self._it: Iterator[T] = iter(source)
        self._done = False
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max(1, self.depth))
        self._thread: threading.Thread | None = None
        if self.depth > 0:
            self._thread = threading.Thread(target=self._produce, name="ldeq-prefetch", daemon=True)
            self._thread.start()

    def _put(self, entry: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._it:
                if not self._put((_ITEM, item)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # handed to the consumer
            self._put((_ERROR, exc))
        finally:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        if self._thread is None:
            try:
                return next(self._it)
            except BaseException:
                self._done = True
                raise
        while True:
            try:
                kind, value = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._done = True
                    raise RuntimeError("the prefetch thread stopped without a result") from None
        if kind == _ITEM:
            return value
        self.close()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread (it finishes the item in progress), wait for it and drop what it had prepared."""
        self._done = True
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                self._drain()
                self._thread.join(timeout=0.05)
            self._drain()
        else:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pinned(images: np.ndarray, landmarks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared batch as page-locked host tensors (CUDA only), so that :func:`to_tensors` copies it to the GPU
    asynchronously; called in the prefetch thread, off the training thread."""
    img = torch.from_numpy(np.ascontiguousarray(images)).pin_memory()
    lms = torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)).pin_memory()
    return img, lms


def to_tensors(
    images: np.ndarray | torch.Tensor,
    landmarks: np.ndarray | torch.Tensor,
    device: torch.device,
    *,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-normalised (N, 3, S, S) input and (N, L, 2) targets in normalised crop units (pixels / S).

    numpy arrays, or (pinned, see :func:`pinned`) host tensors, which are copied without blocking the host.
    """
    x = to_model_input(images, device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    size = images.shape[1]
    lms = landmarks if isinstance(landmarks, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(landmarks))
    y = lms.to(device, dtype=torch.float32, non_blocking=True) / size
    return x, y
