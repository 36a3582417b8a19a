"""Video files to exactly sampled RGB frames: opening captures, probing and reading.

Frames are never reached by seeking: OpenCV's seek lands near a keyframe, not on the frame
asked for. The readers grab every frame in order, decode only the wanted ones and stop
after the last of them, and record each frame's own timestamp so that variable frame rate
files map index to time correctly.
"""

from __future__ import annotations

import logging
import math
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from captioner.media import MediaError
from captioner.video.intake import (
    DEFAULT_VIDEO_LIMITS,
    SUPPORTED_VIDEO,
    VideoLimits,
    VideoSource,
    _check_path,
    local_video,
    restrict_ffmpeg_protocols,
)
from captioner.video.sampling import segment_indices, uniform_indices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: ``duration_s`` is ``frame_count / fps``."""

    frame_count: int
    fps: float
    width: int
    height: int
    duration_s: float
    format: str


@dataclass
class Clip:
    """Sampled frames of one video: ``frames`` is (T, H, W, 3) uint8 RGB.

    ``timestamps`` are each frame's time in seconds; ``indices`` the frame indices asked for.
    """

    frames: np.ndarray
    timestamps: list[float]
    info: VideoInfo
    indices: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------- capture


def _not_decodable(path: Path) -> MediaError:
    return MediaError(
        f"could not decode {path}: the file is corrupt or not a supported video ({SUPPORTED_VIDEO})"
    )


def _open(path: str | os.PathLike, limits: VideoLimits) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Check ``path``, open it with FFmpeg restricted to local files, check the header."""
    checked, fmt = _check_path(path, limits)
    restrict_ffmpeg_protocols()
    try:
        cap = cv2.VideoCapture(str(checked), cv2.CAP_FFMPEG)
    except cv2.error:
        raise _not_decodable(checked) from None
    try:
        if not cap.isOpened():
            raise _not_decodable(checked)
        info = _header(cap, fmt, checked)
        _check_info(info, limits, checked)
    except BaseException:
        cap.release()
        raise
    return cap, info


def _header(cap: cv2.VideoCapture, fmt: str, path: Path) -> VideoInfo:
    try:
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = cap.get(cv2.CAP_PROP_FPS)
        width = cap.get(cv2.CAP_PROP_FRAME_WIDTH)
        height = cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    except cv2.error:
        raise _not_decodable(path) from None
    if not all(math.isfinite(v) for v in (count, fps, width, height)) or count < 1:
        raise _not_decodable(path)
    if fps <= 0 or width < 1 or height < 1:
        raise _not_decodable(path)
    frames = int(round(count))
    return VideoInfo(
        frame_count=frames,
        fps=float(fps),
        width=int(width),
        height=int(height),
        duration_s=frames / float(fps),
        format=fmt,
    )


def _check_info(info: VideoInfo, limits: VideoLimits, path: Path) -> None:
    _check_frame_size(info.width, info.height, limits, path)
    if info.duration_s > limits.max_seconds:
        raise MediaError(
            f"{path} lasts {info.duration_s:.1f} s, above the {limits.max_seconds:g}-second "
            "limit; cut it into shorter parts first"
        )
    if info.frame_count > limits.max_frames:
        raise MediaError(
            f"{path} has {info.frame_count} frames, above the {limits.max_frames}-frame "
            "limit; cut it or lower its frame rate first"
        )


def _check_frame_size(width: int, height: int, limits: VideoLimits, path: Path) -> None:
    if width > limits.max_width or height > limits.max_height:
        raise MediaError(
            f"{path} is {width}x{height}, above the {limits.max_width}x{limits.max_height} "
            "limit; downscale the video first"
        )


def probe_video(path: str | os.PathLike, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> VideoInfo:
    """Read a video's header (frame count, frame rate, size, duration) and check its limits.

    Raises:
        MediaError: the file is missing, not a supported video, corrupt or over a limit.
    """
    cap, info = _open(path, limits)
    cap.release()
    return info


class _Reader:
    """Sequential grab/retrieve over an open capture, with limits and timestamps."""

    def __init__(self, cap: cv2.VideoCapture, info: VideoInfo, limits: VideoLimits, path: Path):
        self.cap, self.info, self.limits, self.path = cap, info, limits, path
        self.position = -1  # index of the last grabbed frame
        self.timestamp = 0.0

    def grab(self) -> bool:
        """Advance one frame; False at the end of the stream or on a broken one."""
        try:
            ok = bool(self.cap.grab())
            msec = self.cap.get(cv2.CAP_PROP_POS_MSEC) if ok else math.nan
        except cv2.error:
            return False
        if not ok:
            return False
        self.position += 1
        if self.position >= self.limits.max_frames:
            raise MediaError(
                f"{self.path} has more than {self.limits.max_frames} frames (its header "
                f"said {self.info.frame_count}); cut it or lower its frame rate first"
            )
        if math.isfinite(msec) and msec >= 0:
            self.timestamp = msec / 1000.0
        else:  # no usable pts: fall back on the nominal rate
            self.timestamp = self.position / self.info.fps
        if self.timestamp > self.limits.max_seconds:
            raise MediaError(
                f"{self.path} runs past {self.limits.max_seconds:g} s (its header said "
                f"{self.info.duration_s:.1f} s); cut it into shorter parts first"
            )
        return True

    def retrieve(self, size: int | None) -> np.ndarray | None:
        """Decode the grabbed frame to RGB (resized to size x size); None if it fails."""
        try:
            ok, frame = self.cap.retrieve()
        except cv2.error:
            return None
        if not ok or frame is None or frame.size == 0:
            return None
        _check_frame_size(frame.shape[1], frame.shape[0], self.limits, self.path)
        return _to_rgb(frame, size)

    def seek(self, index: int) -> None:
        try:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, float(index))
        except cv2.error:
            pass
        self.position = index - 1


def _to_rgb(frame: np.ndarray, size: int | None) -> np.ndarray:
    if frame.ndim == 2:
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if size is not None:
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return rgb


def _check_indices(indices: Sequence[int], limits: VideoLimits) -> list[int]:
    try:
        wanted = [operator.index(i) for i in indices]
    except TypeError:
        raise ValueError(f"indices must be ints, got {list(indices)!r}") from None
    if not wanted:
        raise ValueError("indices is empty; ask for at least one frame")
    bad = [i for i in wanted if i < 0 or i >= limits.max_frames]
    if bad:
        raise ValueError(
            f"frame indices must be in [0, {limits.max_frames}), got {bad[:5]}; "
            "use probe_video() to learn the frame count"
        )
    return wanted


def _check_size(size: int | None) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    return size


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: int | None = None,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
) -> tuple[np.ndarray, list[float]]:
    """Decode exactly the frames at ``indices`` (any order, repeats allowed).

    Reads sequentially, never seeks, and stops after the last wanted frame. Returns a
    (T, H, W, 3) uint8 RGB array in the order of ``indices`` (resized to ``size`` x ``size``
    with area interpolation when ``size`` is given) and each frame's timestamp in seconds
    from the stream. Frames past the end of the stream, or that fail to decode, are filled
    with the nearest good frame before them (a warning is logged).

    Raises:
        MediaError: the file cannot be decoded or no wanted frame could be read.
        ValueError: ``indices`` or ``size`` are invalid.
    """
    wanted = _check_indices(indices, limits)
    size = _check_size(size)
    cap, info = _open(path, limits)
    try:
        return _read_sequential(_Reader(cap, info, limits, Path(path)), wanted, size)
    finally:
        cap.release()


def _read_sequential(
    reader: _Reader, wanted: list[int], size: int | None
) -> tuple[np.ndarray, list[float]]:
    targets = set(wanted)
    last = max(targets)
    got: dict[int, tuple[np.ndarray, float]] = {}
    while reader.position < last and reader.grab():
        if reader.position in targets:
            frame = reader.retrieve(size)
            if frame is not None:
                got[reader.position] = (frame, reader.timestamp)
    return _assemble(wanted, got, reader.path)


def read_frames_seek(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: int | None = None,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
) -> tuple[np.ndarray, list[float]]:
    """Like :func:`read_frames`, but seeking to each frame with ``CAP_PROP_POS_FRAMES``.

    Inexact: OpenCV's seek may land on a nearby keyframe, so a returned frame can be a
    different one from the frame asked for. Kept only so benchmarks can compare its speed
    with :func:`read_frames`; do not use it for training or inference.
    """
    wanted = _check_indices(indices, limits)
    size = _check_size(size)
    cap, info = _open(path, limits)
    reader = _Reader(cap, info, limits, Path(path))
    got: dict[int, tuple[np.ndarray, float]] = {}
    try:
        for index in sorted(set(wanted)):
            if reader.position != index - 1:
                reader.seek(index)
            if not reader.grab():
                break
            frame = reader.retrieve(size)
            if frame is not None:
                got[index] = (frame, reader.timestamp)
    finally:
        cap.release()
    return _assemble(wanted, got, Path(path))


def _assemble(
    wanted: list[int], got: dict[int, tuple[np.ndarray, float]], path: Path
) -> tuple[np.ndarray, list[float]]:
    if not got:
        raise MediaError(
            f"could not decode any frame of {path}: the file is corrupt or not a supported "
            f"video ({SUPPORTED_VIDEO})"
        )
    good = sorted(got)
    missing = sorted({i for i in wanted if i not in got})
    if missing:
        logger.warning(
            "%s: %d wanted frame(s) past the end of the stream or undecodable (first %d); "
            "repeating the nearest earlier good frame",
            path,
            len(missing),
            missing[0],
        )
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    for index in wanted:
        source = _nearest_good(index, good)
        frame, stamp = got[source]
        frames.append(frame)
        stamps.append(stamp)
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):  # the stream changed resolution midway
        frames = [
            f if f.shape == shape else cv2.resize(f, shape[1::-1], interpolation=cv2.INTER_AREA)
            for f in frames
        ]
    return np.stack(frames), stamps


def _nearest_good(index: int, good: list[int]) -> int:
    """The good index at or before ``index``, else the first good one after it."""
    pos = int(np.searchsorted(good, index, side="right"))
    return good[pos - 1] if pos > 0 else good[0]


def iter_frames(
    path: str | os.PathLike,
    stride: int = 1,
    size: int | None = None,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(index, timestamp_s, rgb_frame)`` for every ``stride``-th frame, in order.

    Meant for long videos scanned window by window without holding them in memory. Frames
    that fail to decode are skipped with a warning; the capture is released when the
    iterator is exhausted or closed.

    Raises:
        ValueError: ``stride`` or ``size`` is invalid (at the call).
        MediaError: the file cannot be decoded, or it runs past ``limits`` (while iterating).
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    # Arguments are checked now; the file is opened on the first next().
    return _iterate(path, stride, _check_size(size), limits)


def _iterate(
    path: str | os.PathLike, stride: int, size: int | None, limits: VideoLimits
) -> Iterator[tuple[int, float, np.ndarray]]:
    cap, info = _open(path, limits)
    reader = _Reader(cap, info, limits, Path(path))
    skipped = 0
    try:
        while reader.grab():
            if reader.position % stride:
                continue
            frame = reader.retrieve(size)
            if frame is None:
                skipped += 1
                continue
            yield reader.position, reader.timestamp, frame
    finally:
        cap.release()
        if skipped:
            logger.warning("%s: skipped %d frame(s) that failed to decode", path, skipped)


def decode_clip(
    source: VideoSource,
    num_frames: int,
    size: int | None = None,
    mode: Literal["uniform", "segments"] = "uniform",
    rng: np.random.Generator | None = None,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
) -> Clip:
    """Sample ``num_frames`` frames from a video path, bytes or stream.

    ``mode="uniform"`` takes segment centres; ``mode="segments"`` is TSN sampling, random
    within each segment when ``rng`` is given. Short videos are padded with their last frame.

    Raises:
        MediaError: the input is not a readable video within ``limits``.
        ValueError: an argument is invalid.
    """
    if mode not in ("uniform", "segments"):
        raise ValueError(f"mode must be 'uniform' or 'segments', got {mode!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames <= 0:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    size = _check_size(size)
    with local_video(source, limits) as path:
        cap, info = _open(path, limits)
        try:
            if mode == "uniform":
                indices = uniform_indices(info.frame_count, num_frames)
            else:
                indices = segment_indices(info.frame_count, num_frames, rng)
            frames, stamps = _read_sequential(_Reader(cap, info, limits, path), indices, size)
        finally:
            cap.release()
    return Clip(frames=frames, timestamps=stamps, info=info, indices=indices)
