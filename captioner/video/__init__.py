"""Video files to exactly sampled RGB frames: the only place captioner decodes video.

:mod:`~captioner.video.intake` decides what may reach OpenCV (content sniffing, refusals,
local files, the FFmpeg protocol restriction); :mod:`~captioner.video.readers` opens
captures, probes and reads frames, with :mod:`~captioner.video.decode` doing the grabbing,
verified seeking and decode-work planning underneath; :mod:`~captioner.video.sampling` is
the index arithmetic that says which frames to take.
Every public name is re-exported here, so ``from captioner.video import ...`` is the way
to use them.
"""

from captioner.video.decode import DecodeCancelled
from captioner.video.info import VideoInfo
from captioner.video.intake import (
    DEFAULT_VIDEO_LIMITS,
    FFMPEG_OPTIONS_ENV,
    SUPPORTED_VIDEO,
    VIDEO_SUFFIXES,
    VideoLimits,
    VideoSource,
    local_video,
    restrict_ffmpeg_protocols,
    sniff_video_format,
)
from captioner.video.readers import (
    Clip,
    decode_clip,
    iter_frames,
    probe_video,
    read_frames,
    read_frames_seek,
)
from captioner.video.sampling import (
    multi_clip_indices,
    segment_indices,
    sliding_windows,
    uniform_indices,
)

__all__ = [
    "DEFAULT_VIDEO_LIMITS",
    "FFMPEG_OPTIONS_ENV",
    "SUPPORTED_VIDEO",
    "VIDEO_SUFFIXES",
    "Clip",
    "DecodeCancelled",
    "VideoInfo",
    "VideoLimits",
    "VideoSource",
    "decode_clip",
    "iter_frames",
    "local_video",
    "multi_clip_indices",
    "probe_video",
    "read_frames",
    "read_frames_seek",
    "restrict_ffmpeg_protocols",
    "segment_indices",
    "sliding_windows",
    "sniff_video_format",
    "uniform_indices",
]
