"""Grabbing, seeking and decoding the frames of an open capture, and what a read costs.

OpenCV's FFmpeg reader decodes every frame it grabs, so reading forward to frame ``t``
decodes every frame before it. Seeking to ``t`` (``CAP_PROP_POS_FRAMES``) jumps back to
the keyframe at or before ``t - 16`` and decodes forward from there, a fixed cost on top
(flushing the decoder, the demuxer's seek) of about :data:`_SEEK_OVERHEAD` frames. A wanted
frame is reached by seeking when that decodes fewer frames than reading on to it, and never
when the seek would start at or before a frame already decoded (no frame is decoded twice).
So frames few and far apart are seeked to, each reading on to the frames just after it (a
sample's motion partner) without a second seek; dense frames (timelines) are one pass in
order, in which frames not wanted are only grabbed, never converted or resized. A read is
planned from the keyframe positions (a pass over the packets in OpenCV's raw mode, which
decodes nothing, made only when some wanted frames lie far enough apart for a seek to pay),
and its decoding work is checked against ``VideoLimits.max_decode_pixels`` before any frame
is decoded.

OpenCV's seek counts frames by timestamp, so it can land on another frame than reading
in order would (variable frame rate, broken timestamps). Every seek is verified: the frame
it lands on must carry the timestamp of the frame asked for, else :class:`SeekMissed` is
raised and the caller reads in order instead.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from captioner.intake import MediaError
from captioner.video.info import VideoInfo
from captioner.video.intake import VideoLimits, restrict_ffmpeg_protocols

StopCheck = Callable[[], bool] | None

_SEEK_BACKOFF = 16  # OpenCV's FFmpeg seek starts from the keyframe before target - 16
# What a seek costs beyond the frames it decodes, in frames: 2-6 measured on MPEG-4 and VP9
# at 320x240 (bench/clip_reading.py).
_SEEK_OVERHEAD = 4
# A seek decodes at least _SEEK_BACKOFF + 1 frames: no shorter gap can pay for one, so none
# pays for a keyframe scan.
_SCAN_GAP = _SEEK_BACKOFF + 1 + _SEEK_OVERHEAD
_STOP_EVERY = 256  # packets between should_stop() checks while scanning
_SAME_FRAME = 0.5  # a seek landed right when its timestamp is within half a frame


class DecodeCancelled(MediaError):
    """``should_stop()`` said to stop decoding: the client went away or a deadline passed."""


class SeekMissed(Exception):
    """A seek landed on another frame than the one asked for; read in order instead."""


def check_stop(should_stop: StopCheck, name: str) -> None:
    """Raise :class:`DecodeCancelled` when ``should_stop()`` says so."""
    if should_stop is not None and should_stop():
        raise DecodeCancelled(
            f"decoding {name} was cancelled before it finished (the client went away or "
            "the deadline passed); send the request again if it is still wanted"
        )


def check_frame_size(width: int, height: int, limits: VideoLimits, name: str) -> None:
    if width > limits.max_width or height > limits.max_height:
        raise MediaError(
            f"{name} is {width}x{height}, above the {limits.max_width}x{limits.max_height} "
            "limit; downscale the video first"
        )


def check_decode_work(frames: int, width: int, height: int, limits: VideoLimits, name: str) -> None:
    """Refuse a read that must decode ``frames`` frames of ``width`` x ``height`` above the cap."""
    pixels = frames * width * height
    if pixels > limits.max_decode_pixels:
        raise MediaError(
            f"{name} needs {frames} frames of {width}x{height} decoded ({pixels:.3g} pixels), "
            f"above the {limits.max_decode_pixels:.3g}-pixel decoding limit; cut it, "
            "downscale it or lower its frame rate first"
        )


# ------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class ReadPlan:
    """How a read reaches its frames: ``seeks`` are the wanted frames reached by seeking
    (the rest by reading forward); ``frames`` is how many frames it decodes in all."""

    seeks: frozenset[int]
    frames: int


def forward_plan(targets: Sequence[int], frame_count: int) -> ReadPlan:
    """Read in order up to the last wanted frame (or the end of the stream)."""
    return ReadPlan(frozenset(), min(max(targets) + 1, frame_count))


def plan_read(
    path: Path, targets: Sequence[int], frame_count: int, should_stop: StopCheck, name: str
) -> ReadPlan:
    """Plan reading the sorted, distinct frame indices ``targets``.

    A wanted frame is reached by seeking when the seek's frames and overhead cost less than
    reading forward to it, and the seek starts after the last frame decoded; the first
    seek also reads frame 0, to learn when the stream starts.
    """
    forward = forward_plan(targets, frame_count)
    if max(np.diff([-1, *targets])) <= _SCAN_GAP:
        return forward
    keyframes = scan_keyframes(path, targets[-1], should_stop, name)
    if not keyframes:
        return forward
    seeks: set[int] = set()
    frames, position = 0, -1
    for target in targets:
        ahead = target - position
        k = bisect_right(keyframes, max(target - _SEEK_BACKOFF, 0))
        start = keyframes[k - 1] if k else 0  # where OpenCV's seek starts decoding
        cost = target - start + 1 + (position < 0)
        if start > position and cost + _SEEK_OVERHEAD < ahead:
            seeks.add(target)
            frames += cost
        else:
            frames += ahead
        position = target
    if not seeks:
        return forward
    return ReadPlan(frozenset(seeks), frames)


def scan_keyframes(path: Path, last: int, should_stop: StopCheck, name: str) -> list[int]:
    """Indices of the keyframes among the first ``last + 1`` packets, without decoding.

    Empty when this OpenCV build has no raw packet mode (the caller then reads in order).
    Packets come in decoding order, which can put a keyframe a frame or two away from its
    display position: close enough to count work by.
    """
    key_flag = getattr(cv2, "CAP_PROP_LRF_HAS_KEY_FRAME", None)
    if key_flag is None:
        return []
    restrict_ffmpeg_protocols()
    try:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    except cv2.error:
        return []
    keyframes: list[int] = []
    try:
        if not cap.isOpened():
            return []
        n = 0
        while n <= last and cap.grab():
            if cap.get(key_flag) > 0:
                keyframes.append(n)
            n += 1
            if n % _STOP_EVERY == 0:
                check_stop(should_stop, name)
    except cv2.error:
        return []
    finally:
        cap.release()
    return keyframes


# -------------------------------------------------------------------------------- reading


class Reader:
    """Grab/retrieve over an open capture, with limits, timestamps and verified seeks."""

    def __init__(
        self,
        cap: cv2.VideoCapture,
        info: VideoInfo,
        limits: VideoLimits,
        name: str,
        should_stop: StopCheck = None,
    ):
        self.cap, self.info, self.limits, self.name = cap, info, limits, name
        self.should_stop = should_stop
        self.position = -1  # index of the last grabbed frame
        self.timestamp = 0.0
        self.origin = 0.0  # timestamp of frame 0: seeks are verified relative to it
        self.stamped = False  # whether the last grabbed frame carried its own timestamp
        self.grabbed = 0  # frames decoded by grab() (seeks decode more, inside OpenCV)
        self.frame_pixels = info.width * info.height  # raised if decoded frames are larger

    def grab(self) -> bool:
        """Advance one frame; False at the end of the stream or on a broken one."""
        check_stop(self.should_stop, self.name)
        try:
            ok = bool(self.cap.grab())
            msec = self.cap.get(cv2.CAP_PROP_POS_MSEC) if ok else math.nan
        except cv2.error:
            return False
        if not ok:
            return False
        self.position += 1
        self.grabbed += 1
        self._check_counts()
        self.stamped = math.isfinite(msec) and msec >= 0
        if self.stamped:
            self.timestamp = msec / 1000.0
        else:  # no usable pts: fall back on the nominal rate
            self.timestamp = self.position / self.info.fps
        if self.position == 0:
            self.origin = self.timestamp
        if self.timestamp > self.limits.max_seconds:
            raise MediaError(
                f"{self.name} runs past {self.limits.max_seconds:g} s (its header said "
                f"{self.info.duration_s:.1f} s); cut it into shorter parts first"
            )
        return True

    def _check_counts(self) -> None:
        info, limits = self.info, self.limits
        if self.position >= limits.max_frames:
            raise MediaError(
                f"{self.name} has more than {limits.max_frames} frames (its header "
                f"said {info.frame_count}); cut it or lower its frame rate first"
            )
        if self.grabbed * self.frame_pixels > limits.max_decode_pixels:
            raise MediaError(
                f"{self.name} needs more than {limits.max_decode_pixels:.3g} pixels decoded "
                f"(its header said {info.frame_count} frames of {info.width}x{info.height}); "
                "cut it, downscale it or lower its frame rate first"
            )

    def retrieve(self, size: int | None) -> np.ndarray | None:
        """Decode the grabbed frame to RGB (resized to size x size); None if it fails."""
        try:
            ok, frame = self.cap.retrieve()
        except cv2.error:
            return None
        if not ok or frame is None or frame.size == 0:
            return None
        check_frame_size(frame.shape[1], frame.shape[0], self.limits, self.name)
        self.frame_pixels = max(self.frame_pixels, frame.shape[0] * frame.shape[1])
        return to_rgb(frame, size)

    def seek(self, index: int) -> None:
        """Ask OpenCV for frame ``index`` next, unverified."""
        with contextlib.suppress(cv2.error):
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, float(index))
        self.position = index - 1

    def seek_exactly(self, index: int) -> None:
        """Seek to frame ``index`` and grab it; SeekMissed unless its timestamp says it is."""
        check_stop(self.should_stop, self.name)
        if self.position < 0 and not self.grab():  # learn the time of frame 0 first
            raise SeekMissed(index)
        self.seek(index)
        if not self.grab() or not self.stamped:
            raise SeekMissed(index)
        if abs((self.timestamp - self.origin) * self.info.fps - index) > _SAME_FRAME:
            raise SeekMissed(index)


def read_planned(
    reader: Reader, targets: Sequence[int], size: int | None, plan: ReadPlan
) -> dict[int, tuple[np.ndarray, float]]:
    """Frames (and timestamps) at the sorted, distinct ``targets`` that could be decoded.

    Stops at the end of the stream; raises SeekMissed when a planned seek lands elsewhere.
    """
    got: dict[int, tuple[np.ndarray, float]] = {}
    for target in targets:
        if target in plan.seeks and reader.position < target - 1:
            reader.seek_exactly(target)
        else:
            while reader.position < target and reader.grab():
                pass
            if reader.position < target:
                break
        frame = reader.retrieve(size)
        if frame is not None:
            got[target] = (frame, reader.timestamp)
    return got


def to_rgb(frame: np.ndarray, size: int | None) -> np.ndarray:
    """A decoded BGR(A) or grey frame -> RGB, resized to ``size`` x ``size`` (area).

    Resized first: area resizing treats channels alike, so the pixels are the same as
    converting first, and the conversion then runs on the small frame.
    """
    if size is not None:
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
