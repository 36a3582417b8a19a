"""Which frames to take: index arithmetic for clips, segments and sliding windows.

Pure arithmetic over frame counts and durations; nothing here opens a file.
"""

from __future__ import annotations

import numpy as np

from captioner.video.intake import _check_positive_number


def _check_counts(n_frames: int, num: int) -> None:
    for name, value in (("n_frames", n_frames), ("num", num)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _segments(n_frames: int, num: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of ``num`` near-equal segments of ``n_frames >= num`` frames."""
    k = np.arange(num + 1, dtype=np.int64)
    edges = k * n_frames // num
    return edges[:-1], edges[1:]


def _padded(n_frames: int, num: int) -> list[int]:
    return list(range(n_frames)) + [n_frames - 1] * (num - n_frames)


def uniform_indices(n_frames: int, num: int) -> list[int]:
    """``num`` frame indices spread evenly over the video: the centres of equal segments.

    A video with fewer than ``num`` frames gives every frame once, then its last frame
    repeated (padding).
    """
    _check_counts(n_frames, num)
    if n_frames < num:
        return _padded(n_frames, num)
    start, end = _segments(n_frames, num)
    return ((start + end) // 2).tolist()


def segment_indices(n_frames: int, num: int, rng: np.random.Generator | None = None) -> list[int]:
    """TSN sampling: one frame from each of ``num`` equal segments.

    With ``rng`` (training) the frame is drawn at random within its segment; without it
    (testing) the segment's centre is taken, as in :func:`uniform_indices`. Short videos are
    padded with their last frame.
    """
    _check_counts(n_frames, num)
    if rng is None:
        return uniform_indices(n_frames, num)
    if n_frames < num:
        return _padded(n_frames, num)
    start, end = _segments(n_frames, num)
    return rng.integers(start, end).tolist()


def multi_clip_indices(n_frames: int, num: int, clips: int) -> list[list[int]]:
    """``clips`` clips of ``num`` evenly spread frames each, offset evenly within segments.

    For test-time averaging: clip ``c`` takes, in every segment, the frame at fraction
    ``(c + 0.5) / clips`` of the segment, so one clip equals :func:`uniform_indices`.
    """
    _check_counts(n_frames, num)
    if isinstance(clips, bool) or not isinstance(clips, int) or clips <= 0:
        raise ValueError(f"clips must be a positive int, got {clips!r}")
    if n_frames < num:
        return [_padded(n_frames, num) for _ in range(clips)]
    start, end = _segments(n_frames, num)
    length = end - start
    return [(start + length * (2 * c + 1) // (2 * clips)).tolist() for c in range(clips)]


def sliding_windows(
    duration_s: float, window_s: float, stride_s: float
) -> list[tuple[float, float]]:
    """``(start, end)`` windows in seconds, every ``stride_s``, covering the whole video.

    The last window is clipped to the end of the video; a video shorter than one window
    gives the single window ``(0, duration_s)``.
    """
    for name, value in (("duration_s", duration_s), ("window_s", window_s), ("stride_s", stride_s)):
        _check_positive_number(name, value)
    if stride_s > window_s:
        raise ValueError(
            f"stride_s ({stride_s}) is longer than window_s ({window_s}): the windows would "
            "leave gaps; use a stride no longer than the window"
        )
    duration, eps = float(duration_s), 1e-9 * max(1.0, float(duration_s))
    windows: list[tuple[float, float]] = []
    k = 0
    while True:
        start = k * float(stride_s)  # multiplied, not summed, so errors do not pile up
        end = min(start + float(window_s), duration)
        windows.append((start, end))
        if end >= duration - eps:
            return windows
        k += 1
