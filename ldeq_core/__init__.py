"""ldeq_core: the Landmark DEQ, its solvers and gradients, RwR video inference, metrics and filters.

Imports only torch, numpy, scipy and OpenCV.
"""

from ldeq_core.checkpoints import load_checkpoint, save_checkpoint
from ldeq_core.config import GradConfig, ModelConfig, SolverConfig, get_preset
from ldeq_core.model import LandmarkDEQ, LDEQOutput
from ldeq_core.rwr import RwRConfig, RwRTracker, track_videos

__all__ = [
    "GradConfig",
    "LDEQOutput",
    "LandmarkDEQ",
    "ModelConfig",
    "RwRConfig",
    "RwRTracker",
    "SolverConfig",
    "get_preset",
    "load_checkpoint",
    "save_checkpoint",
    "track_videos",
]
