"""What a video's header says: the one type both the decoder and the readers use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: ``duration_s`` is ``frame_count / fps``."""

    frame_count: int
    fps: float
    width: int
    height: int
    duration_s: float
    format: str
