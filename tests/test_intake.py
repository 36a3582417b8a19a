"""Tests for captioner.intake: images and videos refuse the same bad paths the same way."""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path

import pytest
from PIL import Image

from captioner.intake import check_local_file, expand_paths
from captioner.media import ImageLimits, MediaError, UnsupportedFormat, decode_image
from captioner.video import VideoLimits, probe_video


def refusal(call) -> str:
    with pytest.raises(MediaError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize(
    "source",
    ["ftp://x/a.jpg", "file:///x", "rtsp://h/s", "https://example.com/cat.jpg", "folder", "gone"],
)
def test_image_and_video_paths_get_the_same_refusal(source: str, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    if "://" not in source:
        source = str(tmp_path / source)
    image = refusal(lambda: decode_image(source))
    video = refusal(lambda: probe_video(source))
    assert re.sub(r"\bimage\b", "video", image) == video
    expected = {
        "ftp://x/a.jpg": "URLs are never fetched: download the image and pass the local file",
        "file:///x": "is a URL",
        "rtsp://h/s": "is a URL",
        "https://example.com/cat.jpg": "is a URL",
        "folder": "is a directory; pass a single image file",
        "gone": "no such file",
    }
    assert expected[Path(source).name if "://" not in source else source] in image


def test_too_large_is_refused_alike_with_each_kinds_fix(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(100))
    image = refusal(lambda: decode_image(path, ImageLimits(max_bytes=10)))
    video = refusal(lambda: probe_video(path, VideoLimits(max_bytes=10)))
    assert f"{path} is 100 bytes, above the 10-byte limit" in image
    assert f"{path} is 100 bytes, above the 10-byte limit" in video
    assert "compress or resize the image" in image
    assert "trim or re-encode the video" in video


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_is_refused_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    errors: list[str] = []
    # In a thread: reading a pipe nobody writes to would block for ever.
    worker = threading.Thread(target=lambda: errors.append(refusal(lambda: decode_image(fifo))))
    worker.daemon = True
    worker.start()
    worker.join(timeout=10)
    assert errors
    assert "not a regular file" in errors[0]
    assert "not a regular file" in refusal(lambda: probe_video(fifo))


def test_check_local_file_returns_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert check_local_file("a.jpg", "image", 10) == tmp_path / "a.jpg"
    with pytest.raises(MediaError, match="uploaded"):
        check_local_file("missing.mp4", "video", 10, name="the uploaded video")


@pytest.mark.parametrize(
    ("head", "label"),
    [
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "MP4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", "MOV"),
        (b"RIFF\x00\x10\x00\x00AVI LIST\x00\x00\x00\x00", "AVI"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm\x42\x87", "WebM"),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "MKV"),
    ],
)
def test_video_given_as_image_says_where_videos_go(head: bytes, label: str) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        decode_image(head + bytes(2000))
    message = str(info.value)
    assert f"is a video ({label}), not an image" in message
    assert "/v1/activity or `captioner activity`" in message


def test_heif_is_still_an_image_format_not_a_video() -> None:
    with pytest.raises(UnsupportedFormat, match="HEIF is not allowed"):
        decode_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100))


def test_real_images_still_decode() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buf, "PNG")
    assert decode_image(buf.getvalue()).size == (8, 6)


# -- walking the inputs ----------------------------------------------------------------------


def test_a_broken_link_in_a_folder_or_pattern_is_listed_not_dropped(tmp_path: Path) -> None:
    from captioner.media import IMAGE_SUFFIXES

    album = tmp_path / "album"
    album.mkdir()
    (album / "a.jpg").write_bytes(b"x")
    (album / "b.jpg").symlink_to(tmp_path / "gone.jpg")  # dangling
    (album / "c.txt").symlink_to(tmp_path / "gone.txt")  # dangling, and not an image name
    (album / "d.png").symlink_to(album / "a.jpg")  # a good link to a file already listed
    found, unmatched = expand_paths([album], IMAGE_SUFFIXES)
    assert found == [album / "a.jpg", album / "b.jpg"]
    assert unmatched == []
    found, unmatched = expand_paths([str(album / "*.jpg")], IMAGE_SUFFIXES)
    assert found == [album / "a.jpg", album / "b.jpg"]
    assert unmatched == []


def test_a_broken_link_is_refused_as_one(tmp_path: Path) -> None:
    link = tmp_path / "b.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    message = refusal(lambda: check_local_file(link, "image", 10))
    assert f"{link} is a broken symbolic link (to {tmp_path / 'gone.jpg'}" in message
    assert "fix the link or remove it" in message
    assert "broken symbolic link" in refusal(lambda: probe_video(link))
