"""Tests for how far a clip is read: frames decoded, counted, not timed.

A label reads 16 sampled frames and their motion partners, seeking when that decodes fewer
frames than reading on; a timeline is one pass in order. Decoding is counted by hooking the
reader's grab, seek and retrieve; the frames OpenCV decodes inside a seek (from the keyframe
at or before target - 16 up to the target) are counted from the file's keyframes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from captioner.inference.activity import prepare_clip
from captioner.inference.describe import motion_pairs
from captioner.video import decode as video_decode
from captioner.video import read_frames, uniform_indices
from tests.test_video_decode import FPS, LONG, index_of, write_clip


@dataclass
class Decoded:
    """What the reads inside a :func:`counting` block decoded."""

    keyframes: list[int]
    grabs: int = 0
    in_seeks: int = 0
    seeks: list[int] = field(default_factory=list)
    retrieved: list[int] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Frames decoded in all: every grab, and the frames a seek decodes before its target."""
        return self.grabs + self.in_seeks


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 s at 30 fps, 64x64, a keyframe every 12 frames, each frame showing its index."""
    return write_clip(tmp_path_factory.mktemp("reading") / "long.mp4", LONG)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch, long_clip: Path) -> Iterator[Decoded]:
    keyframes = video_decode.scan_keyframes(long_clip, LONG - 1, None, "clip")
    if not keyframes:
        pytest.skip("this OpenCV build has no raw packet mode to find keyframes with")
    count = Decoded(keyframes)
    grab, seek, retrieve = (
        video_decode.Reader.grab,
        video_decode.Reader.seek,
        video_decode.Reader.retrieve,
    )

    def counted_grab(self: video_decode.Reader) -> bool:
        count.grabs += 1
        return grab(self)

    def counted_seek(self: video_decode.Reader, index: int) -> None:
        count.seeks.append(index)
        k = bisect_right(keyframes, max(index - video_decode._SEEK_BACKOFF, 0))
        count.in_seeks += index - (keyframes[k - 1] if k else 0)
        seek(self, index)

    def counted_retrieve(self: video_decode.Reader, size: int | None) -> np.ndarray | None:
        count.retrieved.append(self.position)
        return retrieve(self, size)

    monkeypatch.setattr(video_decode.Reader, "grab", counted_grab)
    monkeypatch.setattr(video_decode.Reader, "seek", counted_seek)
    monkeypatch.setattr(video_decode.Reader, "retrieve", counted_retrieve)
    return count


def test_samples_a_few_dozen_frames_apart_are_seeked_to(long_clip: Path, counting: Decoded) -> None:
    """A 20 s clip's 16 samples lie 37 frames apart: a seek (about 23 frames with a keyframe
    every 12) decodes fewer frames than reading on. (It was read in order: 590 frames.)"""
    wanted = uniform_indices(600, 16)
    frames, _ = read_frames(long_clip, wanted)
    assert [index_of(f) for f in frames] == wanted
    assert len(counting.seeks) >= 12
    assert counting.frames < 0.75 * (wanted[-1] + 1)


def test_a_sample_and_its_motion_partner_cost_one_seek(long_clip: Path, counting: Decoded) -> None:
    clip = uniform_indices(LONG, 16)
    firsts, seconds = motion_pairs(clip, FPS, LONG)
    wanted = sorted(set(clip).union(firsts, seconds))
    frames, _ = read_frames(long_clip, wanted)
    assert [index_of(f) for f in frames] == wanted
    assert counting.seeks == clip  # the partner 3 frames on is read on to, not seeked to
    gap = seconds[0] - firsts[0]
    assert counting.grabs == 1 + len(clip) * (gap + 1)  # frame 0, then each pair's frames
    assert counting.retrieved == wanted  # each wanted frame converted once


def test_a_long_clip_label_decodes_less_than_twice_a_short_ones(
    long_clip: Path, tmp_path: Path, counting: Decoded
) -> None:
    short = write_clip(tmp_path / "short.mp4", LONG // 4)  # 10 s against 40 s
    decoded = []
    for path in (short, long_clip):
        counting.grabs = counting.in_seeks = 0
        item = prepare_clip(path, 16, 32, describe=True)
        assert len(item.clip) == 16
        decoded.append(counting.frames)
    assert decoded[1] <= 2 * decoded[0]


def test_a_timeline_is_one_pass_that_converts_each_wanted_frame_once(
    long_clip: Path, counting: Decoded
) -> None:
    item = prepare_clip(long_clip, 16, 64, timeline=True, window=2.0, stride=1.0, describe=True)
    assert item.windows is not None
    assert len(item.windows) == 39
    assert counting.seeks == []
    assert counting.grabs <= LONG  # every frame at most once, however many windows
    assert counting.retrieved == sorted(set(counting.retrieved))  # none converted twice
    assert len(counting.retrieved) >= item.cost  # the windows' frames and the motion partners
    assert item.times is not None
    assert [index_of(f.permute(1, 2, 0).numpy()) for f in item.frames[:3]] == [
        round(t * FPS) for t in item.times[:3]
    ]


@pytest.mark.parametrize("gop", [12, 250])
def test_no_planned_seek_decodes_a_frame_twice(gop: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever the keyframes fall, a planned read decodes disjoint runs of frames, as many
    as the plan says."""
    count = 3000
    keyframes = list(range(0, count, gop))
    monkeypatch.setattr(video_decode, "scan_keyframes", lambda *args: keyframes)
    rng = np.random.default_rng(gop)
    for _ in range(50):
        targets = sorted({int(i) for i in rng.integers(0, count, rng.integers(2, 40))})
        plan = video_decode.plan_read(Path("unused"), targets, count, None, "clip")
        decoded, position = 0, -1
        for target in targets:
            if target in plan.seeks:
                k = bisect_right(keyframes, max(target - video_decode._SEEK_BACKOFF, 0))
                start = keyframes[k - 1] if k else 0
                assert start > position  # the seek starts after the last frame decoded
                decoded += target - start + 1 + (position < 0)
            else:
                decoded += target - position
            position = target
        assert decoded == plan.frames


def test_frames_are_resized_before_colour_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    expected = cv2.resize(
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (48, 48), interpolation=cv2.INTER_AREA
    )
    shapes: list[tuple[int, ...]] = []
    convert = cv2.cvtColor

    def recorded(image: np.ndarray, code: int) -> np.ndarray:
        shapes.append(image.shape)
        return convert(image, code)

    monkeypatch.setattr(video_decode.cv2, "cvtColor", recorded)
    np.testing.assert_array_equal(video_decode.to_rgb(frame, 48), expected)  # the same pixels
    assert shapes == [(48, 48, 3)]  # converted at 48x48, not 320x240
    grey = frame[..., 0]
    np.testing.assert_array_equal(
        video_decode.to_rgb(grey, 48),
        cv2.resize(convert(grey, cv2.COLOR_GRAY2RGB), (48, 48), interpolation=cv2.INTER_AREA),
    )
