"""Deprecated shim: video reading, checking and writing live in :mod:`ldeq_shared.video_io`.

Kept only while ``ldeq_cli/track.py`` and ``tests/cli/test_export_cli.py`` still import this path; import
:mod:`ldeq_shared.video_io` instead.
"""

from ldeq_shared.video_io import VideoInfo, iter_frames, probe_video, read_frames, verify_video, write_video

__all__ = ["VideoInfo", "iter_frames", "probe_video", "read_frames", "verify_video", "write_video"]
