"""Distributed training of the Landmark DEQ: Ray Train (DDP), MLflow tracking and registry, Ray Tune sweeps.

Modules: ``config`` (TrainConfig from params.yaml), ``augment`` (our augmentation), ``data`` (shard batches to
tensors), ``objectives`` (losses, LR schedule), ``loop`` (the per-worker loop), ``trainer`` (``run_training``, the
DVC ``train`` stage), ``tracking`` (MLflow runs and registry, ``load_registered_model``), ``sweep`` (``ldeq
sweep``), ``reporting`` (curves and metrics files).

Design choices. The upstream training recipe is unknown (spec §7); everything here is ours.

- **Loss.** The decoder's docstring suggests a coordinate loss on the soft-argmax output (spec §7), so the loss
  is on coordinates, not heatmaps: ``l1`` (default) or ``wing`` (Feng et al. 2018, w = 10, eps = 2), both in
  pixels of a 256-px crop whatever the model's input size. L1 is the default because with a soft-argmax
  decoder it is the standard integral-regression loss, it is robust to the occasional unreachable or mislabelled
  point, and it needs no scale parameters; wing puts more weight on small errors and is the option to try
  for the last fraction of NME. Targets are clipped to the soft-argmax's reachable range [0, (H - 1) / H].
  An optional MSE term to Gaussian target heatmaps (``heatmap_loss_weight``, off by default) can speed up early
  training. With ``jac_reg_weight > 0`` the Hutchinson estimate of ||J||_F^2 from ``ldeq_core.deq`` is added.
- **DEQ gradients.** Training solves the forward fixed point with ``train_max_nfe`` cell evaluations (optionally
  a random budget per step, the same on every rank) and back-propagates with ``grad_mode`` (implicit adjoint,
  one-step phantom gradient or unrolled). Validation uses the model's own inference solver settings.
- **Augmentation ("ours").** Loosely after the HIH reference recipe (spec §7): flip with the layout permutation
  (p 0.5), rotation +-30 deg (p 0.5), scale 0.9-1.1 (p 0.5), translation +-12 % (p 0.5), all composed into one
  exact affine; then area resize to the model size; then Gaussian blur sigma <= 3 px @256 (p 0.3), one random
  single-colour occluder up to 40 % x 40 % (p 0.3), colour jitter +-25 % brightness/contrast/saturation (p 0.5).
  Landmarks move exactly with the pixels (tested with rendered dots). Each batch draws from a generator seeded by
  (seed, epoch, rank, step): runs are reproducible and a resumed run draws what the original would have.
- **Optimiser and schedule.** AdamW (weight decay on conv weights only), gradient-norm clipping at 1, linear
  warm-up over ``warmup_epochs`` then cosine decay to ``min_lr_ratio`` x lr, stepped per optimiser step.
  ``batch_size`` is per worker, so the global batch is ``batch_size x num_workers``.
- **Distribution.** ``TorchTrainer`` with one process per worker (gloo on CPU, NCCL on GPU) and fractional CPUs
  per worker (0.5 by default, so Ray Data tasks still run on 2-core machines). Training rows are split across
  workers (equal split); every worker sees the validation split and evaluates every world-th batch, and the
  per-image results are gathered, so NME / FR@0.1 / AUC@0.1 are exact over the whole split. Every rank reports
  once per epoch; rank 0 attaches checkpoints and logs to MLflow.
- **Fault tolerance and resume.** Checkpoints hold model, optimiser, scheduler step, epoch, RNG states, history
  and the best model; ``FailureConfig(max_failures)`` restarts the worker group from the latest checkpoint. A Ray
  run is named ``<run_name>-<hash of the training settings and shard files>``: re-running the same settings and
  data resumes it (a finished run only rewrites the outputs), any change starts a new run.
- **Tracking.** One MLflow run per training run (the resumed Ray run keeps its MLflow run). Params are the whole
  resolved config; metrics per epoch: train loss, val loss/NME/FR/AUC, solver NFE and residuals, lr, images/s.
  Artifacts: ``model/best.pt`` (registered), ``checkpoints/last.pt``, configs, curves (CSV + PNG). The registry
  version is an MLflow Model (pyfunc LoggedModel ``ldeq-pyfunc`` of the run, holding ``model/best.pt`` as
  ``artifacts/best.pt``; :mod:`ldeq_shared.mlflow_model`) with aliases ``newest`` and, when its val NME is the
  best so far, ``champion`` (MLflow reserves ``latest``).
"""

from pipelines.train.augment import AugmentConfig
from pipelines.train.config import TrainConfig, load_train_config

__all__ = ["AugmentConfig", "TrainConfig", "load_train_config"]
