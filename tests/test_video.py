"""Tests for captioner.video: exact frames, sampling, limits and every refusal."""

from __future__ import annotations

import io
import itertools
import logging
import os
import tempfile
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from captioner.media import MediaError, UnsupportedFormat
from captioner.video import (
    FFMPEG_OPTIONS_ENV,
    Clip,
    VideoLimits,
    decode_clip,
    iter_frames,
    local_video,
    multi_clip_indices,
    probe_video,
    read_frames,
    read_frames_seek,
    restrict_ffmpeg_protocols,
    segment_indices,
    sliding_windows,
    sniff_video_format,
    uniform_indices,
)
from captioner.video import intake as video_intake

W, H, N, FPS = 64, 48, 40, 10.0
FORMATS = {"mp4": "mp4v", "avi": "MJPG"}


def colour(i: int) -> np.ndarray:
    """The flat RGB colour of frame ``i``: far from every other frame's even after lossy coding."""
    return np.array([10 + 6 * i, 245 - 6 * i, (i * 97) % 200 + 28], dtype=np.int32)


def write_video(path: Path, fourcc: str, n: int = N, size: tuple[int, int] = (W, H)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, size)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} into {path.suffix}")
    for i in range(n):
        rgb = np.empty((size[1], size[0], 3), np.uint8)
        rgb[:] = colour(i)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def frame_index(frame: np.ndarray) -> int:
    """Which frame this is: the nearest colour, asserted to be close."""
    mean = frame.reshape(-1, 3).mean(axis=0)
    distances = [np.abs(mean - colour(i)).max() for i in range(N)]
    best = int(np.argmin(distances))
    assert distances[best] < 8, f"frame colour {mean} matches no frame"
    return best


@pytest.fixture(scope="module", params=sorted(FORMATS))
def video(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fmt = request.param
    return write_video(tmp_path_factory.mktemp("video") / f"clip.{fmt}", FORMATS[fmt])


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("mp4") / "clip.mp4", "mp4v")


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty folder so leftover temporary videos can be seen."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ----------------------------------------------------------------------------- exact frames


def test_read_frames_exact_at_any_index(video: Path) -> None:
    # Unsorted, repeated and mid-GOP indices (mp4v puts a keyframe every 12 frames).
    indices = [17, 0, 5, 13, 13, 39, 31, 1]
    frames, stamps = read_frames(video, indices)
    assert frames.shape == (len(indices), H, W, 3)
    assert frames.dtype == np.uint8
    assert [frame_index(f) for f in frames] == indices
    assert stamps == pytest.approx([i / FPS for i in indices], abs=1e-3)


def test_read_frames_resizes(video: Path) -> None:
    frames, _ = read_frames(video, [3, 22], size=32)
    assert frames.shape == (2, 32, 32, 3)
    assert [frame_index(f) for f in frames] == [3, 22]


def test_probe(video: Path) -> None:
    info = probe_video(video)
    assert (info.frame_count, info.width, info.height) == (N, W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(N / FPS)
    assert info.format == video.suffix[1:]


def test_iter_frames_strides_in_order(mp4: Path) -> None:
    seen = list(iter_frames(mp4, stride=10, size=16))
    assert [i for i, _, _ in seen] == [0, 10, 20, 30]
    assert [t for _, t, _ in seen] == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-3)
    assert [frame_index(f) for _, _, f in seen] == [0, 10, 20, 30]


def test_seek_reader_returns_frames(mp4: Path) -> None:
    frames, stamps = read_frames_seek(mp4, [30, 2, 2])
    assert frames.shape == (3, H, W, 3)
    assert len(stamps) == 3


def test_bytes_and_stream_give_the_same_frames_and_leave_no_file(
    mp4: Path, private_tmp: Path
) -> None:
    indices = [4, 19, 33]
    expected, _ = read_frames(mp4, indices)
    data = mp4.read_bytes()
    with local_video(data) as path:
        assert path.parent == private_tmp
        assert path.suffix == ".mp4"
        assert (path.stat().st_mode & 0o777) == 0o600
        from_bytes, _ = read_frames(path, indices)
    assert not path.exists()
    with local_video(io.BytesIO(data)) as path:
        from_stream, _ = read_frames(path, indices)
    np.testing.assert_array_equal(from_bytes, expected)
    np.testing.assert_array_equal(from_stream, expected)
    assert list(private_tmp.iterdir()) == []


def test_temp_file_removed_on_error(mp4: Path, private_tmp: Path) -> None:
    data = mp4.read_bytes()
    with pytest.raises(MediaError, match="could not decode"):
        decode_clip(data[: len(data) * 3 // 10], 4)
    assert list(private_tmp.iterdir()) == []


def test_past_the_end_is_padded_with_warning(mp4: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="captioner.video"):
        frames, stamps = read_frames(mp4, [38, 45, 39])
    assert [frame_index(f) for f in frames] == [38, 39, 39]
    assert stamps[1] == stamps[2]
    assert "past the end" in caplog.text


def test_short_clip_padded(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.avi", "MJPG", n=5)
    clip = decode_clip(path, 16)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (16, H, W, 3)
    assert clip.indices == [0, 1, 2, 3, 4] + [4] * 11
    assert [frame_index(f) for f in clip.frames] == clip.indices
    assert clip.info.frame_count == 5


def test_decode_clip_from_bytes_segments(mp4: Path) -> None:
    data = mp4.read_bytes()
    a = decode_clip(data, 8, size=24, mode="segments", rng=np.random.default_rng(7))
    b = decode_clip(data, 8, size=24, mode="segments", rng=np.random.default_rng(7))
    assert a.indices == b.indices
    assert a.frames.shape == (8, 24, 24, 3)
    assert [frame_index(f) for f in a.frames] == a.indices
    uniform = decode_clip(data, 8)
    assert uniform.indices == uniform_indices(N, 8)
    assert uniform.timestamps == pytest.approx([i / FPS for i in uniform.indices], abs=1e-3)


# -------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("n_frames", [1, 7, 16, 17, 40, 1000])
@pytest.mark.parametrize("num", [1, 8, 16])
def test_uniform_indices(n_frames: int, num: int) -> None:
    idx = uniform_indices(n_frames, num)
    assert len(idx) == num
    assert all(0 <= i < n_frames for i in idx)
    assert idx == sorted(idx)
    if n_frames >= num:
        assert len(set(idx)) == num
        # Spread over the whole video: first and last land in the first and last segments.
        assert idx[0] < n_frames / num
        assert idx[-1] >= n_frames - n_frames / num - 1
    else:
        assert idx == list(range(n_frames)) + [n_frames - 1] * (num - n_frames)


@pytest.mark.parametrize("n_frames", [8, 9, 37, 300])
def test_segment_indices_fall_in_their_segments(n_frames: int) -> None:
    num = 8
    rng = np.random.default_rng(0)
    draws = [segment_indices(n_frames, num, rng) for _ in range(50)]
    for idx in draws:
        assert len(idx) == num
        for k, i in enumerate(idx):
            assert k * n_frames // num <= i < (k + 1) * n_frames // num
    if n_frames >= 2 * num:
        assert len({tuple(d) for d in draws}) > 1  # training draws vary
    assert segment_indices(n_frames, num, np.random.default_rng(3)) == segment_indices(
        n_frames, num, np.random.default_rng(3)
    )
    assert segment_indices(n_frames, num) == uniform_indices(n_frames, num)
    assert segment_indices(3, num, rng) == [0, 1, 2, 2, 2, 2, 2, 2]


def test_multi_clip_indices() -> None:
    clips = multi_clip_indices(100, 8, 3)
    assert len(clips) == 3
    assert all(len(c) == 8 for c in clips)
    assert all(c == sorted(c) and c[0] >= 0 and c[-1] < 100 for c in clips)
    assert len({tuple(c) for c in clips}) == 3
    for k in range(8):
        column = [c[k] for c in clips]
        assert column == sorted(column)
        assert all(k * 100 // 8 <= i < (k + 1) * 100 // 8 for i in column)
    assert multi_clip_indices(100, 8, 1) == [uniform_indices(100, 8)]
    assert multi_clip_indices(3, 4, 2) == [[0, 1, 2, 2], [0, 1, 2, 2]]


@pytest.mark.parametrize(
    ("duration", "window", "stride"),
    [(10.0, 4.0, 3.0), (11.0, 4.0, 3.0), (9.7, 2.0, 2.0), (100.0, 16.0, 0.5)],
)
def test_sliding_windows_cover_the_video(duration: float, window: float, stride: float) -> None:
    windows = sliding_windows(duration, window, stride)
    assert windows[0][0] == 0.0
    assert windows[-1][1] == duration
    for (s0, e0), (s1, _) in itertools.pairwise(windows):
        assert s1 == pytest.approx(s0 + stride)
        assert s1 <= e0
    assert all(e - s <= window + 1e-9 for s, e in windows)
    assert all(e < duration for _, e in windows[:-1])  # stops once the end is reached


def test_sliding_windows_short_video_and_bad_args() -> None:
    assert sliding_windows(2.5, 4.0, 1.0) == [(0.0, 2.5)]
    with pytest.raises(ValueError, match="gaps"):
        sliding_windows(10.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="window_s"):
        sliding_windows(10.0, 0.0, 1.0)


def test_bad_sampling_args() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        uniform_indices(0, 8)
    with pytest.raises(ValueError, match="clips"):
        multi_clip_indices(10, 2, 0)
    with pytest.raises(ValueError, match="stride"):
        iter_frames("never-opened.mp4", stride=0)


# -------------------------------------------------------------------------------- refusals


def test_sniff() -> None:
    assert sniff_video_format(b"\x00\x00\x00\x18ftypmp42") == "mp4"
    assert sniff_video_format(b"\x00\x00\x00\x14ftypqt  ") == "mp4"
    assert sniff_video_format(b"RIFF\x00\x10\x00\x00AVI LIST") == "avi"
    assert sniff_video_format(b"RIFF\x00\x10\x00\x00WEBPVP8 ") is None
    assert sniff_video_format(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81") == "mkv"
    assert sniff_video_format(b"#EXTM3U\n") is None
    assert sniff_video_format(b"") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"just some notes about my holiday video\n" * 10, "text file"),
        (
            b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://169.254.169.254/x.ts\n",
            "HLS playlist, not a video file: upload the video itself",
        ),
        (b"ffconcat version 1.0\nfile /etc/passwd\n", "ffconcat list"),
        (b"v=0\no=- 0 0 IN IP4 127.0.0.1\nc=IN IP4 10.0.0.1\nm=video 5004 RTP/AVP 96\n", "SDP"),
        (b"\x00\x01\x02\x03garbage" + bytes(range(256)) + b"rtmp://evil/x", "URL"),
        (bytes(range(256)) * 4, "not a supported video"),
    ],
)
def test_refused_by_content(
    content: bytes, message: str, tmp_path: Path, private_tmp: Path
) -> None:
    path = tmp_path / "upload.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=message):
        probe_video(path)
    with pytest.raises(MediaError, match=message):
        decode_clip(content, 4)
    assert list(private_tmp.iterdir()) == []


def test_missing_dir_and_url_paths(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        probe_video(tmp_path / "absent.mp4")
    with pytest.raises(MediaError, match="directory"):
        probe_video(tmp_path)
    with pytest.raises(MediaError, match="URLs are never fetched"):
        probe_video("https://example.com/v.mp4")


def test_truncated_mp4(mp4: Path, tmp_path: Path) -> None:
    data = mp4.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) * 3 // 10])
    with pytest.raises(MediaError, match=r"could not decode .*corrupt or not a supported video"):
        read_frames(path, [0, 1])


def test_corrupt_middle_is_error_or_padding(mp4: Path, tmp_path: Path) -> None:
    data = bytearray(mp4.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = np.random.default_rng(0).integers(0, 256, third, np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    try:
        frames, stamps = read_frames(path, [0, 20, 39])
    except MediaError:
        return
    assert frames.shape == (3, H, W, 3)
    assert len(stamps) == 3


def test_limits(mp4: Path) -> None:
    with pytest.raises(MediaError, match="byte limit"):
        probe_video(mp4, VideoLimits(max_bytes=1000))
    with pytest.raises(MediaError, match="byte limit"):
        decode_clip(io.BytesIO(mp4.read_bytes()), 4, limits=VideoLimits(max_bytes=1000))
    with pytest.raises(MediaError, match="64x48, above the 32x2160"):
        probe_video(mp4, VideoLimits(max_width=32))
    with pytest.raises(MediaError, match=r"4.0 s, above the 2-second"):
        decode_clip(mp4, 4, limits=VideoLimits(max_seconds=2))
    with pytest.raises(MediaError, match="40 frames, above the 30-frame"):
        probe_video(mp4, VideoLimits(max_frames=30))


def test_limits_validated() -> None:
    with pytest.raises(ValueError, match="max_width"):
        VideoLimits(max_width=0)
    with pytest.raises(ValueError, match="max_seconds"):
        VideoLimits(max_seconds=float("inf"))


@pytest.fixture
def unrestricted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has not restricted FFmpeg yet, with the variable unset."""
    monkeypatch.setattr(video_intake, "_restricted", False)
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)


class RecordingEnviron(MutableMapping):
    """Stands in for os.environ and records every write."""

    def __init__(self, data: dict[str, str]):
        self.data, self.writes = dict(data), []

    def __getitem__(self, key: str) -> str:
        return self.data[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.writes.append((key, value))
        self.data[key] = value

    def __delitem__(self, key: str) -> None:
        self.writes.append((key, None))
        del self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_ffmpeg_restricted_to_local_files(mp4: Path, unrestricted: None) -> None:
    probe_video(mp4)
    assert "protocol_whitelist;file" in os.environ[FFMPEG_OPTIONS_ENV].split("|")


def test_ffmpeg_wider_whitelist_replaced_and_other_options_kept(
    monkeypatch: pytest.MonkeyPatch, unrestricted: None, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "rw_timeout;5000000|protocol_whitelist;file,http,tcp")
    with caplog.at_level(logging.WARNING, logger="captioner.video"):
        restrict_ffmpeg_protocols()
    assert sorted(os.environ[FFMPEG_OPTIONS_ENV].split("|")) == [
        "protocol_whitelist;file",
        "rw_timeout;5000000",
    ]
    assert "local files only" in caplog.text


def test_environment_written_once_then_only_read(
    mp4: Path, monkeypatch: pytest.MonkeyPatch, unrestricted: None
) -> None:
    recording = RecordingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", recording)
    restrict_ffmpeg_protocols()  # what the service does at start-up
    restrict_ffmpeg_protocols()
    assert recording.writes == [(FFMPEG_OPTIONS_ENV, "protocol_whitelist;file")]


def test_capture_opens_never_write_the_environment(
    mp4: Path, monkeypatch: pytest.MonkeyPatch, unrestricted: None
) -> None:
    restrict_ffmpeg_protocols()
    recording = RecordingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", recording)
    probe_video(mp4)
    read_frames(mp4, [0, 30])
    decode_clip(mp4.read_bytes(), 4)
    list(iter_frames(mp4, stride=20))
    assert recording.writes == []
    # Something else widens the whitelist later: opens are refused, never rewritten.
    recording.data[FFMPEG_OPTIONS_ENV] = "protocol_whitelist;file,http"
    with pytest.raises(RuntimeError, match="put 'protocol_whitelist;file' back"):
        probe_video(mp4)
    assert recording.writes == []


def test_restriction_is_written_once_across_threads(
    monkeypatch: pytest.MonkeyPatch, unrestricted: None
) -> None:
    recording = RecordingEnviron(os.environ)
    monkeypatch.setattr(os, "environ", recording)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: restrict_ffmpeg_protocols(), range(64)))
    assert len(recording.writes) == 1


# ------------------------------------------------------------------------ uploads and kinds


def test_messages_about_uploads_do_not_name_the_temp_file(mp4: Path, private_tmp: Path) -> None:
    data = mp4.read_bytes()
    with pytest.raises(MediaError) as truncated:
        decode_clip(data[: len(data) * 3 // 10], 4)
    with local_video(data) as path:  # as the service's timeline does: one upload, two reads
        with pytest.raises(MediaError) as too_long:
            probe_video(path, VideoLimits(max_frames=30))
        with pytest.raises(MediaError) as too_wide:
            read_frames(path, [1], limits=VideoLimits(max_width=32))
    for error in (truncated, too_long, too_wide):
        message = str(error.value)
        assert "the uploaded video" in message
        assert str(private_tmp) not in message
        assert "captioner-video-" not in message
    assert "could not decode the uploaded video" in str(truncated.value)
    assert "the uploaded video has 40 frames" in str(too_long.value)
    # A path given by the caller is still named.
    with pytest.raises(MediaError, match=str(mp4)):
        probe_video(mp4, VideoLimits(max_frames=30))


def jpeg_with_xmp() -> bytes:
    """A real JPEG whose XMP block (right after SOI) names a URL, as cameras' files do."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 20, 20)).save(buf, "JPEG")
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"
    segment = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    data = buf.getvalue()
    return data[:2] + segment + data[2:]


@pytest.mark.parametrize(
    ("fmt", "label"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WebP"), ("GIF", "GIF")]
)
def test_image_given_as_video_says_where_images_go(fmt: str, label: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 20, 20)).save(buf, fmt)
    path = tmp_path / "holiday.mp4"
    path.write_bytes(buf.getvalue())
    for call in (lambda: decode_clip(buf.getvalue(), 4), lambda: probe_video(path)):
        with pytest.raises(UnsupportedFormat) as info:
            call()
        assert f"is an image ({label}), not a video" in str(info.value)
        assert "/v1/caption or `captioner caption`" in str(info.value)


def test_jpeg_naming_a_url_in_its_metadata_is_called_an_image() -> None:
    with pytest.raises(UnsupportedFormat, match=r"image \(JPEG\), not a video"):
        decode_clip(jpeg_with_xmp(), 4)
