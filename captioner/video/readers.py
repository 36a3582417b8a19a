"""Video files to exactly sampled RGB frames: opening captures, probing and reading.

Each read decodes exactly the frames asked for and records each frame's own timestamp, so
that variable frame rate files map index to time correctly. Frames are reached by reading
forward, or, when they are few and far apart, by verified seeks (see
:mod:`captioner.video.decode`); either way the decoding work is checked against
``VideoLimits.max_decode_pixels`` before it starts, and ``should_stop`` can end it early.
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

from captioner.intake import MediaError
from captioner.video.decode import (
    Reader,
    SeekMissed,
    StopCheck,
    check_decode_work,
    check_frame_size,
    forward_plan,
    plan_read,
    read_planned,
)
from captioner.video.info import VideoInfo
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


@dataclass
class _Opened:
    """An open capture and what is known of it; ``name`` is how messages call the file."""

    cap: cv2.VideoCapture
    info: VideoInfo
    path: Path
    name: str

    def reader(self, limits: VideoLimits, should_stop: StopCheck = None) -> Reader:
        return Reader(self.cap, self.info, limits, self.name, should_stop)


def _not_decodable(name: str) -> MediaError:
    return MediaError(
        f"could not decode {name}: the file is corrupt or not a supported video ({SUPPORTED_VIDEO})"
    )


def _open(path: str | os.PathLike, limits: VideoLimits) -> _Opened:
    """Check ``path``, open it with FFmpeg restricted to local files, check the header."""
    checked, fmt, name = _check_path(path, limits)
    restrict_ffmpeg_protocols()
    try:
        cap = cv2.VideoCapture(str(checked), cv2.CAP_FFMPEG)
    except cv2.error:
        raise _not_decodable(name) from None
    try:
        if not cap.isOpened():
            raise _not_decodable(name)
        info = _header(cap, fmt, name)
        _check_info(info, limits, name)
    except BaseException:
        cap.release()
        raise
    return _Opened(cap, info, checked, name)


def _header(cap: cv2.VideoCapture, fmt: str, name: str) -> VideoInfo:
    try:
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = cap.get(cv2.CAP_PROP_FPS)
        width = cap.get(cv2.CAP_PROP_FRAME_WIDTH)
        height = cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    except cv2.error:
        raise _not_decodable(name) from None
    if not all(math.isfinite(v) for v in (count, fps, width, height)) or count < 1:
        raise _not_decodable(name)
    if fps <= 0 or width < 1 or height < 1:
        raise _not_decodable(name)
    frames = round(count)
    return VideoInfo(
        frame_count=frames,
        fps=float(fps),
        width=int(width),
        height=int(height),
        duration_s=frames / float(fps),
        format=fmt,
    )


def _check_info(info: VideoInfo, limits: VideoLimits, name: str) -> None:
    check_frame_size(info.width, info.height, limits, name)
    if info.duration_s > limits.max_seconds:
        raise MediaError(
            f"{name} lasts {info.duration_s:.1f} s, above the {limits.max_seconds:g}-second "
            "limit; cut it into shorter parts first"
        )
    if info.frame_count > limits.max_frames:
        raise MediaError(
            f"{name} has {info.frame_count} frames, above the {limits.max_frames}-frame "
            "limit; cut it or lower its frame rate first"
        )


def probe_video(path: str | os.PathLike, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> VideoInfo:
    """Read a video's header (frame count, frame rate, size, duration) and check its limits.

    Raises:
        MediaError: the file is missing, not a supported video, corrupt or over a limit.
    """
    opened = _open(path, limits)
    opened.cap.release()
    return opened.info


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
    should_stop: StopCheck = None,
) -> tuple[np.ndarray, list[float]]:
    """Decode exactly the frames at ``indices`` (any order, repeats allowed).

    Reads forward and stops after the last wanted frame; frames few and far apart are
    reached by seeking instead, each seek verified by the frame's timestamp (a file whose
    seeks miss is read in order). Returns a (T, H, W, 3) uint8 RGB array in the order of
    ``indices`` (resized to ``size`` x ``size`` with area interpolation when ``size`` is
    given) and each frame's timestamp in seconds from the stream. Frames past the end of
    the stream, or that fail to decode, are filled with the nearest good frame before them
    (a warning is logged). ``should_stop`` is called between frames; when it returns True
    the read ends with :class:`~captioner.video.DecodeCancelled`.

    Raises:
        MediaError: the file cannot be decoded, no wanted frame could be read, or the
            read would decode more than ``limits.max_decode_pixels``.
        ValueError: ``indices`` or ``size`` are invalid.
    """
    wanted = _check_indices(indices, limits)
    size = _check_size(size)
    return _read(_open(path, limits), wanted, size, limits, should_stop)


def _read(
    opened: _Opened,
    wanted: list[int],
    size: int | None,
    limits: VideoLimits,
    should_stop: StopCheck,
) -> tuple[np.ndarray, list[float]]:
    """Plan, check and run a read on ``opened`` (released here), in order if seeks miss."""
    info, name = opened.info, opened.name
    targets = sorted(set(wanted))
    try:
        plan = plan_read(opened.path, targets, info.frame_count, should_stop, name)
        check_decode_work(plan.frames, info.width, info.height, limits, name)
        try:
            got = read_planned(opened.reader(limits, should_stop), targets, size, plan)
            return _assemble(wanted, got, name)
        except SeekMissed as miss:
            logger.warning(
                "%s: seeking to frame %d landed on another frame (variable frame rate?); "
                "reading in order instead",
                name,
                miss.args[0],
            )
    finally:
        opened.cap.release()
    plan = forward_plan(targets, info.frame_count)
    check_decode_work(plan.frames, info.width, info.height, limits, name)
    opened = _open(opened.path, limits)
    try:
        got = read_planned(opened.reader(limits, should_stop), targets, size, plan)
    finally:
        opened.cap.release()
    return _assemble(wanted, got, name)


def read_frames_seek(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: int | None = None,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
) -> tuple[np.ndarray, list[float]]:
    """Like :func:`read_frames`, but seeking to every frame, unverified.

    Inexact: OpenCV's seek counts frames by timestamp, so on some files a returned frame
    is another one than the frame asked for. Kept so that benchmarks can compare its speed
    with :func:`read_frames` (which seeks by itself, verified, when that pays); do not use
    it for training or inference.
    """
    wanted = _check_indices(indices, limits)
    size = _check_size(size)
    opened = _open(path, limits)
    reader = opened.reader(limits)
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
        opened.cap.release()
    return _assemble(wanted, got, opened.name)


def _assemble(
    wanted: list[int], got: dict[int, tuple[np.ndarray, float]], name: str
) -> tuple[np.ndarray, list[float]]:
    if not got:
        raise MediaError(
            f"could not decode any frame of {name}: the file is corrupt or not a supported "
            f"video ({SUPPORTED_VIDEO})"
        )
    good = sorted(got)
    missing = sorted({i for i in wanted if i not in got})
    if missing:
        logger.warning(
            "%s: %d wanted frame(s) past the end of the stream or undecodable (first %d); "
            "repeating the nearest earlier good frame",
            name,
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
    opened = _open(path, limits)
    info = opened.info
    skipped = 0
    try:
        # Every frame is grabbed, and a grab decodes, whatever the stride.
        check_decode_work(info.frame_count, info.width, info.height, limits, opened.name)
        reader = opened.reader(limits)
        while reader.grab():
            if reader.position % stride:
                continue
            frame = reader.retrieve(size)
            if frame is None:
                skipped += 1
                continue
            yield reader.position, reader.timestamp, frame
    finally:
        opened.cap.release()
        if skipped:
            logger.warning("%s: skipped %d frame(s) that failed to decode", opened.name, skipped)


def decode_clip(
    source: VideoSource,
    num_frames: int,
    size: int | None = None,
    mode: Literal["uniform", "segments"] = "uniform",
    rng: np.random.Generator | None = None,
    limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
    should_stop: StopCheck = None,
) -> Clip:
    """Sample ``num_frames`` frames from a video path, bytes or stream.

    ``mode="uniform"`` takes segment centres; ``mode="segments"`` is TSN sampling, random
    within each segment when ``rng`` is given. Short videos are padded with their last frame.
    Frames are read as by :func:`read_frames` (seeking when they are few and far apart),
    and ``should_stop`` ends the read early in the same way.

    Raises:
        MediaError: the input is not a readable video within ``limits``
            (:class:`~captioner.video.DecodeCancelled` when ``should_stop`` said to stop).
        ValueError: an argument is invalid.
    """
    if mode not in ("uniform", "segments"):
        raise ValueError(f"mode must be 'uniform' or 'segments', got {mode!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames <= 0:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    size = _check_size(size)
    with local_video(source, limits) as path:
        opened = _open(path, limits)
        info = opened.info
        try:
            if mode == "uniform":
                indices = uniform_indices(info.frame_count, num_frames)
            else:
                indices = segment_indices(info.frame_count, num_frames, rng)
        except BaseException:
            opened.cap.release()
            raise
        frames, stamps = _read(opened, indices, size, limits, should_stop)
    return Clip(frames=frames, timestamps=stamps, info=info, indices=indices)
