"""Tests for how much a video read decodes: the decode-work cap, seeking when sparse, stopping."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from captioner.media import MediaError
from captioner.video import (
    DEFAULT_VIDEO_LIMITS,
    DecodeCancelled,
    VideoInfo,
    VideoLimits,
    decode_clip,
    iter_frames,
    read_frames,
)
from captioner.video import decode as video_decode
from captioner.video import readers as video_readers

SIDE, FPS, LONG = 64, 30.0, 1200


def code(i: int) -> list[int]:
    """Frame ``i``'s index in base 12, as the grey levels of three 16x16 blocks."""
    return [10 + 20 * (i % 12), 10 + 20 * (i // 12 % 12), 10 + 20 * (i // 144)]


def index_of(frame: np.ndarray) -> int:
    digits = [round((frame[:16, 16 * j : 16 * j + 16].mean() - 10) / 20) for j in range(3)]
    return digits[0] + 12 * digits[1] + 144 * digits[2]


def write_clip(path: Path, n: int) -> Path:
    """A still noisy background with the frame index in one corner: the encoder makes
    inter frames with a keyframe every 12 (OpenCV's writer), as in real videos."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIDE, SIDE))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    background = np.random.default_rng(0).integers(60, 120, (SIDE, SIDE, 3), dtype=np.uint8)
    for i in range(n):
        frame = background.copy()
        for j, level in enumerate(code(i)):
            frame[:16, 16 * j : 16 * j + 16] = level
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 s at 30 fps, 64x64: 4,096 pixels a frame, so 1,200 frames are 4.9e6 pixels."""
    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", LONG)


# About 190 frames' worth: far less than reading 1,200 frames in order.
TIGHT = VideoLimits(max_decode_pixels=190 * SIDE * SIDE)


def test_defaults_pass_1080p_and_example_clips_but_not_a_long_4k_video() -> None:
    limits = DEFAULT_VIDEO_LIMITS
    video_decode.check_decode_work(36_000, 1920, 1080, limits, "a 1080p video")
    video_decode.check_decode_work(24, 128, 128, limits, "an example clip")
    with pytest.raises(MediaError, match="35400 frames of 3840x2160 decoded"):
        video_decode.check_decode_work(35_400, 3840, 2160, limits, "a 590 s 4K video")


def test_decode_work_cap_refuses_before_decoding(long_clip: Path) -> None:
    with pytest.raises(MediaError, match=r"1200 frames of 64x64 decoded .* decoding limit"):
        list(iter_frames(long_clip, stride=100, limits=TIGHT))
    dense = list(range(0, LONG, 4))  # every 4th frame: seeking cannot help
    with pytest.raises(MediaError, match="decoding limit"):
        read_frames(long_clip, dense, limits=TIGHT)
    with pytest.raises(MediaError, match="decoding limit"):
        decode_clip(long_clip, 300, limits=TIGHT)


def test_sparse_frames_are_reached_by_seeking_and_exact(
    long_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyframes = video_decode.scan_keyframes(long_clip, LONG - 1, None, "clip")
    if not keyframes:
        pytest.skip("this OpenCV build has no raw packet mode to find keyframes with")
    assert 1 < len(keyframes) < LONG // 4  # inter frames: a seek has to decode from a keyframe
    seeks: list[int] = []
    seek = video_decode.Reader.seek
    monkeypatch.setattr(
        video_decode.Reader, "seek", lambda self, i: (seeks.append(i), seek(self, i))[1]
    )
    wanted = [1150, 3, 600, 601, 3]
    # Reading 1,151 frames in order is over TIGHT: this passes only by seeking.
    frames, stamps = read_frames(long_clip, wanted, limits=TIGHT)
    assert [index_of(f) for f in frames] == wanted
    assert stamps == pytest.approx([i / FPS for i in wanted], abs=1e-3)
    assert seeks == [600, 1150]  # 3 is read in order, 601 follows 600
    clip = decode_clip(long_clip, 4, limits=TIGHT)
    assert [index_of(f) for f in clip.frames] == clip.indices == [150, 450, 750, 1050]


def test_dense_frames_are_read_in_order(long_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_decode, "scan_keyframes", pytest.fail)
    wanted = [0, 10, 25, 40, 61]  # gaps of at most 21 frames: no seek can pay, nor a scan
    frames, _ = read_frames(long_clip, wanted)
    assert [index_of(f) for f in frames] == wanted


def test_a_seek_that_lands_elsewhere_falls_back_to_reading_in_order(
    long_clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seek = video_decode.Reader.seek
    monkeypatch.setattr(video_decode.Reader, "seek", lambda self, i: seek(self, i - 5))
    with caplog.at_level(logging.WARNING, logger="captioner.video"):
        frames, _ = read_frames(long_clip, [2, 900])
    assert [index_of(f) for f in frames] == [2, 900]
    assert "landed on another frame" in caplog.text
    # In order, the same read is over TIGHT: refused, not decoded.
    with pytest.raises(MediaError, match="decoding limit"):
        read_frames(long_clip, [2, 900], limits=TIGHT)


def test_should_stop_ends_the_read_between_frames(long_clip: Path, tmp_path: Path) -> None:
    calls: list[int] = []

    def after_five() -> bool:
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(DecodeCancelled, match="cancelled") as info:
        read_frames(long_clip, list(range(0, 300, 2)), should_stop=after_five)
    assert isinstance(info.value, MediaError)
    assert len(calls) == 6  # checked before each frame, stopped at once

    folder = tmp_path / "tmp"
    folder.mkdir()
    tempfile.tempdir, saved = str(folder), tempfile.tempdir
    try:
        with pytest.raises(DecodeCancelled, match="the uploaded video"):
            decode_clip(long_clip.read_bytes(), 16, should_stop=lambda: True)
    finally:
        tempfile.tempdir = saved
    assert list(folder.iterdir()) == []  # the upload's temp file is gone


def test_should_stop_that_never_fires_changes_nothing(long_clip: Path) -> None:
    plain = decode_clip(long_clip, 6)
    watched = decode_clip(long_clip, 6, should_stop=lambda: False)
    np.testing.assert_array_equal(plain.frames, watched.frames)
    assert plain.indices == watched.indices


def test_a_header_that_understates_the_frames_is_caught_while_reading(
    long_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = video_readers._header

    def lying(*args: object) -> VideoInfo:
        info = header(*args)
        return dataclasses.replace(info, frame_count=10, duration_s=10 / info.fps)

    monkeypatch.setattr(video_readers, "_header", lying)
    with pytest.raises(MediaError, match="its header said 10 frames of 64x64"):
        read_frames(long_clip, list(range(0, LONG, 4)), limits=TIGHT)
