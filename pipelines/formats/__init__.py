"""Dataset formats: WFLW (precropped), WFLW-V (videos + per-frame annotations), iBUG 300-W stills."""

from ldeq_shared.errors import BadItem, DataError
from ldeq_shared.video_io import (
    VideoInfo,
    iter_frames,
    probe_video,
    read_frames,
    verify_video,
    write_video,
)
from ldeq_shared.wflw_v import (
    VideoClip,
    list_wflw_v,
    load_wflw_v_clip,
    read_download_ranges,
    read_id_list,
    scan_wflw_v,
    write_video_clip,
)
from pipelines.formats.w300 import W300Item, list_300w, read_pts, scan_300w, write_pts
from pipelines.formats.wflw import WflwItem, list_wflw_splits, read_wflw, scan_wflw, write_wflw

__all__ = [
    "BadItem",
    "DataError",
    "VideoClip",
    "VideoInfo",
    "W300Item",
    "WflwItem",
    "iter_frames",
    "list_300w",
    "list_wflw_splits",
    "list_wflw_v",
    "load_wflw_v_clip",
    "probe_video",
    "read_download_ranges",
    "read_frames",
    "read_id_list",
    "read_pts",
    "read_wflw",
    "scan_300w",
    "scan_wflw",
    "scan_wflw_v",
    "verify_video",
    "write_pts",
    "write_video",
    "write_video_clip",
    "write_wflw",
]
