"""ldeq_core: the Landmark DEQ, its solvers and gradients, RwR video inference, metrics and filters.

Imports only torch, numpy, scipy and OpenCV.
"""

from ldeq_core.checkpoints import load_checkpoint, save_checkpoint
from ldeq_core.config import GradConfig, ModelConfig, SolverConfig, get_preset
from ldeq_core.model import LandmarkDEQ, LDEQOutput
from ldeq_core.pretrained import default_pretrained, get_pretrained, list_pretrained, load_pretrained
from ldeq_core.rwr import RwRConfig, RwRTracker, track_videos
from ldeq_core.streams import FrameInput, FrameSyncRunner, VideoInput

__all__ = [
    "FrameInput",
    "FrameSyncRunner",
    "GradConfig",
    "LDEQOutput",
    "LandmarkDEQ",
    "ModelConfig",
    "RwRConfig",
    "RwRTracker",
    "SolverConfig",
    "VideoInput",
    "default_pretrained",
    "get_preset",
    "get_pretrained",
    "list_pretrained",
    "load_checkpoint",
    "load_pretrained",
    "save_checkpoint",
    "track_videos",
]
