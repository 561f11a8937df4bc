"""The per-worker training loop for Ray Train v2 (``TorchTrainer``): DDP, validation, checkpoints, MLflow.

``train_loop_per_worker(config)`` expects ``config = {"train": TrainConfig.to_dict(), "steps_per_epoch": int,
"mlflow_run_id": str | None, "verbose": bool}`` (in tests, also the fault plan of :mod:`pipelines.train.faults`).
Rank 0 prints one line per epoch; Ray's per-report logs are quiet unless ``verbose``. Every rank calls
``ray.train.report`` once per epoch with the same metrics; rank 0 attaches a checkpoint every ``checkpoint_every``
epochs and at the last epoch. A checkpoint folder holds ``state.pt`` (model, optimiser, scheduler, epochs done,
torch/python RNG states, best NME, history; plain tensors and builtins, loadable with ``weights_only=True``) and
``best.pt`` (the best model so far, in our checkpoint format). Returns (rank 0) a summary dict: ``history``,
``best_epoch``, ``best_val_nme``, ``start_epoch``, ``world_size``, ``worker_node_ids`` (the Ray node id of each
rank, gathered once) and ``mlflow_run_id``.

``train_loop_per_worker`` is a short sequence of named steps over two small dataclasses (``_Worker``: settings,
rank, device; ``_Training``: model, optimiser, schedule, history, best epoch): start the worker, build the model,
wrap it and build its optimiser, resume from a checkpoint, open the data, then per epoch train + validate, record,
log and report (with a checkpoint), and finish.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from ldeq_core.checkpoints import load_checkpoint, save_checkpoint
from ldeq_core.config import ModelConfig
from ldeq_core.metrics import fr_auc, nme
from ldeq_core.model import LandmarkDEQ
from pipelines.train import faults
from pipelines.train.cache import MIB, TrainCache
from pipelines.train.comm import set_grad_allreduce
from pipelines.train.config import TrainConfig
from pipelines.train.data import DataPool, Prefetcher, pinned, prepare_arrays, to_tensors
from pipelines.train.objectives import (
    WarmupCosine,
    coordinate_loss,
    heatmap_loss,
    reachable_targets,
)
from pipelines.train.reporting import epoch_line, flatten, quiet_ray_train_worker_logs

if TYPE_CHECKING:
    from pipelines.train.tracking import RunLogger

STATE_FILE = "state.pt"
Batch = tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]  # (N, S, S, 3) uint8 images, (N, L, 2)
BEST_FILE = "best.pt"


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on conv weights only (not on biases, norm parameters or 0-d parameters)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def compile_cell(model: LandmarkDEQ, cfg: TrainConfig, backend: Any = "inductor") -> None:
    """torch.compile the DEQ cell in place (state-dict keys, checkpoints and DDP buckets unchanged).

    ``cfg.compile_ddp_split`` sets torch's DDP graph splitting (``optimize_ddp``) before the first trace: off, the
    cell is one graph and its gradients are all-reduced after its backward (BENCHMARKS.md section 15b).
    """
    torch._dynamo.config.optimize_ddp = cfg.compile_ddp_split
    model.cell.compile(backend=backend)


def _distributed() -> bool:
    """A process group of more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(obj: Any) -> list[Any]:
    """All ranks' ``obj`` (a list with one entry per rank); ``[obj]`` without a process group."""
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _barrier() -> float:
    """Wait for every rank (no-op without a process group); returns the seconds waited."""
    t0 = time.perf_counter()
    if _distributed():
        dist.barrier()
    return time.perf_counter() - t0


def _sync_buffers(module: torch.nn.Module) -> None:
    """Broadcast rank 0's buffers (BN running stats) so every rank evaluates the same model."""
    if _distributed():
        for buf in module.buffers():
            dist.broadcast(buf, 0)


def _rng_state() -> dict[str, Any]:
    """Global torch and python RNG states as tensors and builtins (``weights_only``-loadable). numpy randomness
    (augmentation) comes from generators derived from (seed, epoch, rank, step, sample), so it needs no state."""
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [py_version, list(py_state), py_gauss]}


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`_rng_state`."""
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if cfg.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def streamed_batches(
    iterator: Any, cfg: TrainConfig, epoch: int, rank: int, pool: DataPool | None = None, *, pin: bool = False
) -> Iterator[Batch]:
    """This rank's prepared training batches of ``epoch`` from its Ray Data shard (local shuffle buffer, full
    batches only); sample i of step s is augmented from (seed, epoch, rank, s, i) on ``pool``. ``pin``: as
    page-locked tensors (CUDA), for an asynchronous copy to the GPU."""
    mcfg = cfg.model_config()
    batches = iterator.iter_batches(
        batch_size=cfg.batch_size,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=4 * cfg.batch_size,
        local_shuffle_seed=cfg.seed * 100003 + epoch * 1009 + rank,
    )
    for step, batch in enumerate(batches):
        yield _prepare_training_batch(batch, cfg, mcfg, (cfg.seed, epoch, rank, step), pool, pin)


def cached_batches(
    cache: TrainCache,
    cfg: TrainConfig,
    epochs: range,
    rank: int,
    world: int,
    pool: DataPool | None = None,
    *,
    pin: bool = False,
) -> Iterator[Batch]:
    """This rank's prepared training batches of every epoch in ``epochs``, one epoch after the other, from the
    worker cache: behind a :class:`Prefetcher` the next epoch's first batches are prepared during validation."""
    mcfg = cfg.model_config()
    for epoch in epochs:
        for step, batch in enumerate(cache.epoch_batches(cfg.seed, epoch, rank, world, cfg.batch_size)):
            yield _prepare_training_batch(batch, cfg, mcfg, (cfg.seed, epoch, rank, step), pool, pin)


def _prepare_training_batch(
    batch: Any, cfg: TrainConfig, mcfg: ModelConfig, key: tuple[int, int, int, int], pool: DataPool | None, pin: bool
) -> Batch:
    """Decode + augment one shard batch with the per-sample key (seed, epoch, rank, step); page-locked if ``pin``."""
    arrays = prepare_arrays(batch, mcfg.image_size, n_landmarks=mcfg.n_landmarks, seed=key, aug=cfg.augment, pool=pool)
    return pinned(*arrays) if pin else arrays


def read_cache(iterator: Any, cfg: TrainConfig, rank: int) -> TrainCache:
    """The whole train split in this worker's memory; every rank must hold the same rows (checked)."""
    cache = TrainCache.read(
        iterator.iter_batches(batch_size=256, batch_format="numpy"),
        max_mb=cfg.worker_cache_max_mb,
        where=f"train split {cfg.train_split!r} (rank {rank})",
    )
    digests = _gather(cache.digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"ranks read different train splits (row-key digests {sorted(set(digests))})")
    return cache


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterator[Batch],
    cfg: TrainConfig,
    epoch: int,
    rank: int,
    world: int,
    device: torch.device,
    *,
    steps: int | None = None,
) -> dict[str, float]:
    """Train on ``steps`` prepared batches of ``batches`` (None: until it ends); returns the loss and
    training-NFE sums, the local image count, and where the host's time went (``first_batch_s``: from the call to
    the first batch; ``data_wait_s``: all waiting for batches, the first included; ``compute_s``: issuing the
    training steps plus the wait for the GPU at the end of the epoch).

    ``batches`` is :func:`streamed_batches` or :func:`cached_batches`, usually behind a :class:`Prefetcher`. The
    loss and NFE stay on the device until the end of the epoch: no per-step host synchronisation of our own.
    """
    mcfg = cfg.model_config()
    model.train()
    budget_rng = random.Random(cfg.seed * 1_000_003 + epoch)  # identical on every rank
    losses: list[torch.Tensor] = []
    nfes: list[torch.Tensor] = []
    images, clock = 0, _EpochClock()
    for step in itertools.count():
        batch = _next_batch(batches, step, steps, epoch)
        if batch is None:
            break
        imgs, lms = batch
        got = clock.got_batch(first=step == 0)
        if step == 0:
            faults.maybe_fail(epoch, rank, world)  # tests only; a no-op unless a test armed it
        x, target = to_tensors(imgs, lms, device, channels_last=cfg.channels_last)
        budget = _step_budget(cfg, budget_rng)
        loss, nfe = _train_step(model, optimizer, scheduler, x, target, cfg, mcfg.heatmap_size, budget, device)
        losses.append(loss)
        nfes.append(nfe)
        images += len(imgs)
        clock.step_issued(got)
    return _epoch_totals(losses, nfes, images, clock)


@dataclass
class _EpochClock:
    """Where the host's time goes in one epoch: waiting for batches vs issuing the training steps."""

    t0: float = field(default_factory=time.perf_counter)
    first_batch_s: float = 0.0
    data_wait_s: float = 0.0
    compute_s: float = 0.0
    waited_from: float = math.nan  # when this thread last started waiting for a batch (t0 at first)

    def __post_init__(self) -> None:
        """Start waiting for the first batch at ``t0``."""
        self.waited_from = self.t0

    def got_batch(self, *, first: bool) -> float:
        """A batch arrived: count the wait for it; returns the arrival time."""
        got = time.perf_counter()
        self.data_wait_s += got - self.waited_from
        if first:
            self.first_batch_s = got - self.t0  # streamed: the iterator's start-up + the first decode/augment
        return got

    def step_issued(self, got: float) -> None:
        """The step of the batch that arrived at ``got`` is issued (the solver's stopping checks synchronise)."""
        self.waited_from = time.perf_counter()
        self.compute_s += self.waited_from - got


def _next_batch(batches: Iterator[Batch], step: int, steps: int | None, epoch: int) -> Batch | None:
    """The batch of ``step``, or None once ``steps`` are done or (``steps`` None) the batches have ended."""
    if steps is not None and step == steps:
        return None
    try:
        return next(batches)
    except StopIteration:
        if steps is not None:
            raise RuntimeError(f"epoch {epoch + 1}: the batches ended after {step} of {steps} steps") from None
        return None


def _step_budget(cfg: TrainConfig, budget_rng: random.Random) -> int:
    """The forward NFE budget of one training step (drawn from 1..budget with ``stochastic_budget``)."""
    budget = cfg.effective_train_nfe
    if cfg.stochastic_budget:
        budget = budget_rng.randint(1, budget)
    return budget


def _epoch_totals(
    losses: list[torch.Tensor], nfes: list[torch.Tensor], images: int, clock: _EpochClock
) -> dict[str, float]:
    """Read the epoch's loss and NFE sums off the device (waits for the last step) and add the timings."""
    t_sync = time.perf_counter()
    loss_sum = float(torch.stack(losses).sum()) if losses else 0.0  # waits for the last step
    nfe_sum = float(torch.stack(nfes).sum()) if nfes else 0.0
    clock.compute_s += time.perf_counter() - t_sync
    return {
        "loss_sum": loss_sum,
        "steps": len(losses),
        "nfe_sum": nfe_sum,
        "images": images,
        "seconds": time.perf_counter() - clock.t0,
        "first_batch_s": clock.first_batch_s,
        "data_wait_s": clock.data_wait_s,
        "compute_s": clock.compute_s,
    }


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    target: torch.Tensor,
    cfg: TrainConfig,
    heatmap_size: int,
    budget: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step with forward budget ``budget``; returns (loss, mean training NFE) as detached 0-d tensors
    on the device (reading them synchronises with the GPU: callers do that once per epoch)."""
    with _autocast(cfg, device):
        out = model(x, max_nfe=budget)
    target = reachable_targets(target, heatmap_size)
    loss = coordinate_loss(out.coords, target, cfg.loss, wing_w=cfg.wing_w, wing_eps=cfg.wing_eps)
    if cfg.heatmap_loss_weight > 0:
        loss = loss + cfg.heatmap_loss_weight * heatmap_loss(out.heatmaps, target, cfg.heatmap_sigma)
    if cfg.jac_reg_weight > 0 and out.jac_loss is not None:
        loss = loss + cfg.jac_reg_weight * out.jac_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach().float(), out.stats.nfe.float().mean()


@torch.no_grad()
def validate(
    model: LandmarkDEQ,
    iterator: Any,
    cfg: TrainConfig,
    rank: int,
    world: int,
    device: torch.device,
    pool: DataPool | None = None,
) -> dict[str, Any]:
    """This rank's share (every world-th batch) of the val split with the model's inference solver settings.

    Batches are decoded and resized on ``pool`` (no augmentation), prefetched like the training batches.
    """
    mcfg = model.cfg
    model.eval()
    preds, gts, nfe, res, losses = [], [], [], [], []
    mine = (
        prepare_arrays(batch, mcfg.image_size, n_landmarks=mcfg.n_landmarks, pool=pool)
        for j, batch in enumerate(iterator.iter_batches(batch_size=cfg.val_batch_size, batch_format="numpy"))
        if j % world == rank
    )
    with Prefetcher(mine, cfg.prefetch_batches) as ready:
        for imgs, lms in ready:
            x, target = to_tensors(imgs, lms, device, channels_last=cfg.channels_last)
            with _autocast(cfg, device):
                out = model(x)
            tgt = reachable_targets(target, mcfg.heatmap_size)
            loss = coordinate_loss(out.coords, tgt, cfg.loss, wing_w=cfg.wing_w, wing_eps=cfg.wing_eps)
            losses.append((float(loss) * len(imgs), len(imgs)))
            preds.append(out.coords.float().cpu().numpy() * mcfg.image_size)
            gts.append(lms)
            nfe.append(out.stats.nfe.float().cpu().numpy())
            res.append(out.stats.rel_residual.float().cpu().numpy())
    lmk = (0, mcfg.n_landmarks, 2)
    return {
        "pred": _concat(preds, lmk),
        "gt": _concat(gts, lmk),
        "nfe": _concat(nfe, (0,)),
        "residual": _concat(res, (0,)),
        "loss_sum": float(sum(v for v, _ in losses)),
        "count": int(sum(n for _, n in losses)),
    }


def _concat(parts: list[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape)


def summarise_validation(parts: list[dict[str, Any]], norm: str) -> dict[str, float]:
    """NME / FR@0.1 / AUC@0.1 (fractions), val loss and solver statistics over all ranks' parts."""
    pred = np.concatenate([p["pred"] for p in parts])
    gt = np.concatenate([p["gt"] for p in parts])
    if len(gt) == 0:
        raise ValueError("validation split produced no samples")
    if norm == "inter_ocular" and gt.shape[1] not in (98, 68):
        norm = "face"
    per_image = nme(pred, gt, norm=norm)
    fr, auc = fr_auc(per_image, threshold=0.1)
    count = sum(p["count"] for p in parts)
    return {
        "val_nme": float(per_image.mean()),
        "val_fr": fr,
        "val_auc": auc,
        "val_loss": sum(p["loss_sum"] for p in parts) / count,
        "val_nfe_mean": float(np.concatenate([p["nfe"] for p in parts]).mean()),
        "val_residual_mean": float(np.concatenate([p["residual"] for p in parts]).mean()),
        "val_images": len(gt),
    }


def _best_model(raw: LandmarkDEQ, best_state: dict[str, torch.Tensor] | None) -> LandmarkDEQ:
    """The model with the best weights so far (a CPU copy), or ``raw`` itself when no best state is kept."""
    if best_state is None:
        return raw
    best_model = copy.deepcopy(raw).cpu()
    best_model.load_state_dict(best_state)
    return best_model


def _save_state(
    folder: Path,
    raw: LandmarkDEQ,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs_done: int,
    best: dict[str, Any],
    history: list[dict[str, float]],
    cfg: TrainConfig,
) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epochs_done": epochs_done,
        "rng": _rng_state(),
        "best": best,
        "history": history,
    }
    torch.save(state, folder / STATE_FILE)
    save_checkpoint(
        folder / BEST_FILE,
        _best_model(raw, best_state),
        {
            "epoch": int(best.get("epoch", epochs_done)),
            "val_nme": float(best.get("val_nme", math.nan)),
            "run_name": cfg.run_name,
            "source": "ldeq train",
        },
    )


@dataclass
class _Worker:
    """This worker's fixed context: the settings, its place in the worker group and its device."""

    cfg: TrainConfig
    steps_per_epoch: int
    rank: int
    world: int
    device: torch.device
    mlflow_run_id: str | None


@dataclass
class _Saved:
    """A checkpoint to resume from: the contents of ``state.pt`` and (rank 0 only) the best weights so far."""

    state: dict[str, Any]
    best_state: dict[str, torch.Tensor] | None


@dataclass
class _Training:
    """The model in training and what changes as it trains: optimiser, schedule, history, best epoch."""

    model: torch.nn.Module  # what the training steps call (DDP-wrapped with more than one rank)
    raw: LandmarkDEQ  # the unwrapped model: validation and checkpoints
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    scheduler: torch.optim.lr_scheduler.LambdaLR
    node_ids: list[str]  # the Ray node id of each rank
    best_state: dict[str, torch.Tensor] | None  # rank 0: a CPU copy of the best weights so far (None: none yet)
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_nme": math.inf, "epoch": 0})
    start_epoch: int = 0


@dataclass
class _Data:
    """This worker's data: the train and val shards, the decode/augment pool and (worker cache) the batch stream."""

    train_it: Any
    val_it: Any
    pool: DataPool
    pin: bool  # batches as page-locked tensors: the copy to the GPU does not block this thread
    stream: Iterator[Batch] | None  # the cached batches of all remaining epochs; None: streamed epoch by epoch
    cache_info: dict[str, float]  # rows, MiB and read seconds of the worker cache; empty when streamed


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train entry point (see the module docstring for ``config``)."""
    w = _start_worker(config)
    raw, saved = _build_model(w)
    t = _build_training(w, raw, saved)
    if saved is not None:
        _resume(t, saved)
    logger = _start_mlflow(w, t)
    with contextlib.ExitStack() as stack:  # closes the data pool and the cached batch stream
        data = _open_data(w, t.start_epoch, stack)
        for epoch in range(t.start_epoch, w.cfg.epochs):
            row = _run_epoch(w, t, data, epoch)
            _record_epoch(w, t, row)
            _log_epoch(w, t, row, logger)
            _report_epoch(w, t, row)
    return _finish(w, t, data, logger)


def _start_worker(config: dict[str, Any]) -> _Worker:
    """Read the loop config, arm the test fault plan, pick the device and seed the RNGs."""
    import ray.train
    import ray.train.torch

    cfg = TrainConfig.from_dict(config["train"])
    if not config.get("verbose"):  # the console gets one line per epoch from rank 0 (_log_epoch)
        quiet_ray_train_worker_logs()
    steps_per_epoch = int(config["steps_per_epoch"])
    faults.arm(config.get(faults.CONFIG_KEY))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # one intra-op thread per reserved CPU: avoids oversubscribing shared nodes
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    random.seed(cfg.seed + rank)
    return _Worker(cfg, steps_per_epoch, rank, world, device, config.get("mlflow_run_id"))


def _build_model(w: _Worker) -> tuple[LandmarkDEQ, _Saved | None]:
    """The model with its seeded initial weights, or the checkpoint's weights when Ray Train resumes the run."""
    raw = LandmarkDEQ(w.cfg.model_config())
    saved = _read_checkpoint(w.rank)
    if saved is not None:
        raw.load_state_dict(saved.state["model"])
    return raw, saved


def _read_checkpoint(rank: int) -> _Saved | None:
    """The checkpoint Ray Train restores this run from (rank 0 also reads the best weights), or None."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    best_state = None
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        if rank == 0:
            best_state = load_checkpoint(Path(folder) / BEST_FILE).model.state_dict()
    return _Saved(state, best_state)


def _build_training(w: _Worker, raw: LandmarkDEQ, saved: _Saved | None) -> _Training:
    """Wrap the model for DDP and build its optimiser and learning-rate schedule."""
    model, raw, node_ids = _prepare_model(w, raw)
    optimizer = torch.optim.AdamW(parameter_groups(raw, w.cfg.weight_decay), lr=w.cfg.lr)
    total_steps = w.steps_per_epoch * w.cfg.epochs
    warmup_steps = round(w.cfg.warmup_epochs * w.steps_per_epoch)
    schedule = WarmupCosine(warmup_steps, total_steps, w.cfg.min_lr_ratio, w.cfg.cosine)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    best_state = saved.best_state if saved is not None else None
    return _Training(model, raw, optimizer, schedule, scheduler, node_ids, best_state)


def _prepare_model(w: _Worker, raw: LandmarkDEQ) -> tuple[torch.nn.Module, LandmarkDEQ, list[str]]:
    """(the model for training steps, the unwrapped model, each rank's Ray node id): memory format, compile, DDP."""
    import ray
    import ray.train.torch

    if w.cfg.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    if w.cfg.compile:
        compile_cell(raw, w.cfg)
    model = ray.train.torch.prepare_model(raw)
    set_grad_allreduce(model, w.cfg.grad_allreduce)
    raw = model.module if hasattr(model, "module") else model
    node_ids = [str(n) for n in _gather(ray.get_runtime_context().get_node_id())]  # placement, one per rank
    return model, raw, node_ids


def _resume(t: _Training, saved: _Saved) -> None:
    """Restore the optimiser, the schedule's step count, the RNG states, the history and the best epoch."""
    state = saved.state
    t.optimizer.load_state_dict(state["optimizer"])
    # the schedule object is rebuilt from this config (a resumed run may have new epochs); keep its step count
    sched_state = dict(state["scheduler"])
    sched_state["lr_lambdas"] = [None] * len(t.optimizer.param_groups)
    t.scheduler.load_state_dict(sched_state)
    for group, base in zip(t.optimizer.param_groups, t.scheduler.base_lrs, strict=True):
        group["lr"] = base * t.schedule(t.scheduler.last_epoch)
    _set_rng_state(state["rng"])
    t.history, t.best, t.start_epoch = list(state["history"]), dict(state["best"]), int(state["epochs_done"])


def _start_mlflow(w: _Worker, t: _Training) -> RunLogger | None:
    """Rank 0 with an MLflow run: a logger for it, with the run's parameters (and resume epoch) logged."""
    if w.rank != 0 or not w.mlflow_run_id:
        return None
    from pipelines.train.tracking import RunLogger

    cfg = w.cfg
    logger = RunLogger(cfg.mlflow_uri, w.mlflow_run_id)
    params = flatten({"train": {k: v for k, v in cfg.to_dict().items() if k != "model"}})
    params.update(flatten({"model": cfg.model_config().to_dict()}))
    params.update({"model.preset": cfg.model.preset, "world_size": w.world, "steps_per_epoch": w.steps_per_epoch})
    logger.log_params(params)
    if t.start_epoch:
        logger.set_tags({"ldeq.resumed_from_epoch": t.start_epoch})
    return logger


def _open_data(w: _Worker, start_epoch: int, stack: contextlib.ExitStack) -> _Data:
    """The train and val shards and a data pool; with the worker cache, the train split read into memory and its
    batch stream of all remaining epochs (the pool and the stream's :class:`Prefetcher` are entered on ``stack``)."""
    import ray.train

    cfg = w.cfg
    train_it = ray.train.get_dataset_shard("train")
    val_it = ray.train.get_dataset_shard("val")
    pin = w.device.type == "cuda"
    # decode + augment threads of this worker; with the cache, one prefetch thread runs through all epochs
    pool = stack.enter_context(DataPool(cfg.effective_data_threads))
    if not cfg.worker_cache:
        return _Data(train_it, val_it, pool, pin, None, {})
    t_read = time.perf_counter()
    cache = read_cache(train_it, cfg, w.rank)
    if cache.steps_per_epoch(w.world, cfg.batch_size) != w.steps_per_epoch:
        raise RuntimeError(
            f"the cached train split gives {cache.steps_per_epoch(w.world, cfg.batch_size)} steps per epoch, "
            f"the run was planned with {w.steps_per_epoch} (did the shards change?)"
        )
    cache_info = {"rows": len(cache), "mib": cache.nbytes / MIB, "read_s": time.perf_counter() - t_read}
    epochs = range(start_epoch, cfg.epochs)
    stream = stack.enter_context(
        Prefetcher(cached_batches(cache, cfg, epochs, w.rank, w.world, pool, pin=pin), cfg.prefetch_batches)
    )
    return _Data(train_it, val_it, pool, pin, stream, cache_info)


def _run_epoch(w: _Worker, t: _Training, data: _Data, epoch: int) -> dict[str, float]:
    """Train and validate one epoch; returns its metrics row (the same on every rank)."""
    lr = t.optimizer.param_groups[0]["lr"]
    tr = _train_epoch(w, t, data, epoch)
    val = _validate_epoch(w, t, data)
    return _epoch_row(epoch, lr, tr, val)


def _train_epoch(w: _Worker, t: _Training, data: _Data, epoch: int) -> list[dict[str, float]]:
    """Every rank's training sums and timings of one epoch (after a barrier, reported as ``sync_s``)."""
    # Ranks leave the previous epoch at different times (rank 0 writes the checkpoint, validation shares
    # differ); without this the early ranks would wait inside their first all-reduce and that wait would be
    # counted as training time. It is reported separately as epoch_sync_s.
    sync_s = _barrier()
    model, optimizer, scheduler, cfg = t.model, t.optimizer, t.scheduler, w.cfg
    if data.stream is not None:
        mine = train_one_epoch(
            model, optimizer, scheduler, data.stream, cfg, epoch, w.rank, w.world, w.device, steps=w.steps_per_epoch
        )
    else:
        streamed = streamed_batches(data.train_it, cfg, epoch, w.rank, data.pool, pin=data.pin)
        with Prefetcher(streamed, cfg.prefetch_batches) as ready:
            mine = train_one_epoch(model, optimizer, scheduler, ready, cfg, epoch, w.rank, w.world, w.device)
    return _gather({**mine, "sync_s": sync_s})


def _validate_epoch(w: _Worker, t: _Training, data: _Data) -> dict[str, float]:
    """Validation metrics over all ranks' shares of the val split, with rank 0's BN statistics."""
    _sync_buffers(t.raw)
    part = validate(t.raw, data.val_it, w.cfg, w.rank, w.world, w.device, data.pool)
    return summarise_validation(_gather(part), w.cfg.nme_norm)


def _epoch_row(epoch: int, lr: float, tr: list[dict[str, float]], val: dict[str, float]) -> dict[str, float]:
    """One epoch's metrics row from every rank's training sums and timings and the validation metrics."""
    steps = sum(t["steps"] for t in tr)
    seconds = max(t["seconds"] for t in tr)
    return {
        "epoch": epoch + 1,
        "train_loss": sum(t["loss_sum"] for t in tr) / max(1, steps),
        "train_nfe_mean": sum(t["nfe_sum"] for t in tr) / max(1, steps),
        "lr": lr,
        "images_per_s": sum(t["images"] for t in tr) / max(seconds, 1e-9),
        "epoch_train_s": seconds,
        # where an epoch's training time goes (slowest rank): what limits multi-GPU scaling on small sets
        "epoch_first_batch_s": max(t["first_batch_s"] for t in tr),
        "epoch_data_wait_s": max(t["data_wait_s"] for t in tr),
        "epoch_compute_s": max(t["compute_s"] for t in tr),
        # waiting for the other ranks before the epoch (checkpoint writing, unequal validation shares)
        "epoch_sync_s": max(t["sync_s"] for t in tr),
        **val,
    }


def _record_epoch(w: _Worker, t: _Training, row: dict[str, float]) -> None:
    """Append the row to the history and keep the best epoch (rank 0: a CPU copy of its weights)."""
    t.history.append(row)
    if row["val_nme"] < t.best["val_nme"]:
        t.best = {"val_nme": row["val_nme"], "epoch": row["epoch"]}
        t.best.update(val_fr=row["val_fr"], val_auc=row["val_auc"])
        if w.rank == 0:
            t.best_state = {k: v.detach().cpu().clone() for k, v in t.raw.state_dict().items()}


def _log_epoch(w: _Worker, t: _Training, row: dict[str, float], logger: RunLogger | None) -> None:
    """The row's metrics to MLflow and rank 0's line on the console."""
    if logger is not None:
        logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
    if w.rank == 0:  # the process's own stdout: Ray Train's print patch would also copy it to a logger
        print(epoch_line(row, w.cfg.epochs, t.best["val_nme"], t.best["epoch"]), file=sys.__stdout__, flush=True)


def _report_epoch(w: _Worker, t: _Training, row: dict[str, float]) -> None:
    """``ray.train.report`` of the row on every rank, with rank 0's checkpoint when one is due."""
    import ray.train

    ckpt = _checkpoint(w, t, int(row["epoch"]))
    # The report is a barrier across ranks; with an asynchronous upload rank 0 copies the checkpoint to the
    # run storage in a background thread instead of holding the other ranks up at the next all-reduce
    # (BENCHMARKS.md 14). The last upload finishes before the run ends.
    mode = ray.train.CheckpointUploadMode.ASYNC if w.cfg.async_checkpoint else ray.train.CheckpointUploadMode.SYNC
    ray.train.report(
        {**row, "best_val_nme": t.best["val_nme"]},
        checkpoint=ckpt,
        checkpoint_upload_mode=mode,
        delete_local_checkpoint_after_upload=ckpt is not None,
    )


def _checkpoint(w: _Worker, t: _Training, epochs_done: int) -> Any:
    """Rank 0, every ``checkpoint_every`` epochs and at the last: a ``ray.train.Checkpoint`` of the state; else None."""
    import ray.train

    last = epochs_done == w.cfg.epochs
    if w.rank != 0 or not (epochs_done % w.cfg.checkpoint_every == 0 or last):
        return None
    folder = Path(tempfile.mkdtemp(prefix="ldeq-checkpoint-"))  # Ray deletes it once uploaded
    _save_state(folder, t.raw, t.best_state, t.optimizer, t.scheduler, epochs_done, t.best, t.history, w.cfg)
    return ray.train.Checkpoint.from_directory(folder)


def _finish(w: _Worker, t: _Training, data: _Data, logger: RunLogger | None) -> dict[str, Any] | None:
    """Rank 0: log the final artifacts to MLflow and return the run's summary; other ranks: None."""
    summary = {
        "history": t.history,
        "best_epoch": int(t.best["epoch"]),
        "best_val_nme": float(t.best["val_nme"]),
        "start_epoch": t.start_epoch,
        "world_size": w.world,
        "worker_node_ids": t.node_ids,
        "mlflow_run_id": w.mlflow_run_id,
        "worker_cache": data.cache_info,  # rows, MiB and read seconds of rank 0's cache; empty when streamed
    }
    if w.rank != 0:
        return None
    if logger is not None:
        _log_final_artifacts(logger, t.raw, t.best_state, t.best, t.history, w.cfg)
    return summary


def _log_final_artifacts(
    logger: Any,
    raw: LandmarkDEQ,
    best_state: dict[str, torch.Tensor] | None,
    best: dict[str, Any],
    history: list[dict[str, float]],
    cfg: TrainConfig,
) -> None:
    """Best + last checkpoints (our format), the resolved config, and the training curves (CSV + PNG)."""
    import yaml

    from pipelines.train.reporting import plot_curves, write_curves_csv
    from pipelines.train.tracking import BEST_FILE as REG_BEST
    from pipelines.train.tracking import LAST_FILE, MODEL_ARTIFACT_DIR

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        meta = {"run_name": cfg.run_name, "epochs": len(history), "source": "ldeq train"}
        save_checkpoint(d / LAST_FILE, raw, {**meta, "epoch": len(history), "val_nme": history[-1]["val_nme"]})
        save_checkpoint(
            d / REG_BEST, _best_model(raw, best_state), {**meta, "epoch": best["epoch"], "val_nme": best["val_nme"]}
        )
        (d / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        (d / "model_config.yaml").write_text(yaml.safe_dump(cfg.model_config().to_dict(), sort_keys=False))
        write_curves_csv(d / "train_curves.csv", history)
        plot_curves(d / "train_curves.png", history, title=cfg.run_name)
        logger.log_artifact(d / REG_BEST, MODEL_ARTIFACT_DIR)
        logger.log_artifact(d / LAST_FILE, "checkpoints")
        logger.log_artifact(d / "train_config.yaml", "config")
        logger.log_artifact(d / "model_config.yaml", "config")
        logger.log_artifact(d / "train_curves.csv", "plots")
        logger.log_artifact(d / "train_curves.png", "plots")
    logger.set_tags({"best_epoch": best["epoch"], "best_val_nme": f"{best['val_nme']:.6g}"})
    logger.finish()
