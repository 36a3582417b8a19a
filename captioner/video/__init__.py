"""Video files to exactly sampled RGB frames: the only place captioner decodes video.

:mod:`~captioner.video.intake` decides what may reach OpenCV (content sniffing, refusals,
local files, the FFmpeg protocol restriction); :mod:`~captioner.video.readers` opens
captures, probes and reads frames, with :mod:`~captioner.video.decode` doing the grabbing,
verified seeking and decode-work planning underneath; :mod:`~captioner.video.sampling` is
the index arithmetic that says which frames to take. On decoded frames:
:mod:`~captioner.video.motion` measures camera and residual motion between frames,
:mod:`~captioner.video.shots` finds shot cuts, and :mod:`~captioner.video.geometry` is the
no-learning rule that names camera and object motion from them (its conventions live there).
Every public name is re-exported here, so ``from captioner.video import ...`` is the way
to use them.
"""

from captioner.video.decode import DecodeCancelled
from captioner.video.geometry import (
    CAMERA_MOTIONS,
    OBJECT_MOTIONS,
    GeometryLabels,
    camera_label,
    geometry_labels,
    object_label,
)
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
from captioner.video.motion import (
    FIELD,
    MOTION_DIM,
    MOTION_FIELDS,
    CameraMotion,
    MovingRegion,
    PairMotion,
    clip_motion,
    pair_motion,
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
from captioner.video.shots import cut_times, find_cuts, shot_spans, split_windows

__all__ = [
    "CAMERA_MOTIONS",
    "DEFAULT_VIDEO_LIMITS",
    "FFMPEG_OPTIONS_ENV",
    "FIELD",
    "MOTION_DIM",
    "MOTION_FIELDS",
    "OBJECT_MOTIONS",
    "SUPPORTED_VIDEO",
    "VIDEO_SUFFIXES",
    "CameraMotion",
    "Clip",
    "DecodeCancelled",
    "GeometryLabels",
    "MovingRegion",
    "PairMotion",
    "VideoInfo",
    "VideoLimits",
    "VideoSource",
    "camera_label",
    "clip_motion",
    "cut_times",
    "decode_clip",
    "find_cuts",
    "geometry_labels",
    "iter_frames",
    "local_video",
    "multi_clip_indices",
    "object_label",
    "pair_motion",
    "probe_video",
    "read_frames",
    "read_frames_seek",
    "restrict_ffmpeg_protocols",
    "segment_indices",
    "shot_spans",
    "sliding_windows",
    "sniff_video_format",
    "split_windows",
    "uniform_indices",
]
