"""What a video input must be before OpenCV sees it: sniffing, refusals, local files.

Decoding goes through OpenCV's FFmpeg backend, which can open far more than local files
(playlists, network streams, concatenation lists). Two layers keep it to local video data:

* every input is sniffed by content before OpenCV sees it; only MP4/MOV, AVI and MKV/WebM
  containers pass, and playlists, SDP descriptions, concat lists, text and anything naming
  a URL are refused with a :class:`~captioner.media.MediaError` that says what was found;
* before any capture is created, ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is made to hold
  ``protocol_whitelist;file`` (see :func:`restrict_ffmpeg_protocols`), so FFmpeg refuses
  every protocol but the local file even for a file that slipped through.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from captioner.intake import (
    MediaError,
    UnsupportedFormat,
    check_byte_count,
    check_local_file,
    describe_video,
    sniff_video_format,
)
from captioner.media import sniff_image_format

logger = logging.getLogger(__name__)

#: Containers accepted, as named in error messages.
SUPPORTED_VIDEO = "MP4/MOV, AVI, MKV/WebM"

#: File name suffixes looked at when scanning a folder. Discovery only: the format of a
#: file is always decided by its content.
VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"})

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_WHITELIST_KEY = "protocol_whitelist"
_WHITELIST = f"{_WHITELIST_KEY};file"

_HEAD_BYTES = 4096  # looked at for playlists and URLs
_TEXT_BYTES = 1024  # looked at to call a file text
_TEXT_FRACTION = 0.9
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_CHUNK = 1 << 20
_IMAGE_LABEL = {"WEBP": "WebP"}

#: How messages name a video that was handed in as bytes or a stream.
UPLOADED_VIDEO = "the uploaded video"
# Private temporary files of local_video() that are open now -> how messages name them.
_uploads: dict[str, str] = {}

_restrict_lock = threading.Lock()
_restricted = False  # set once this process has made FFMPEG_OPTIONS_ENV right


def _check_positive_number(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class VideoLimits:
    """Limits checked before and while a video is decoded.

    The header's width, height, duration and frame count are checked when the file is
    opened; the frame count and decoded frame sizes are checked again while reading, so a
    header that lies does not get past them.

    ``max_decode_pixels`` caps the total decoding work of one read: the frames that must
    be decoded x width x height, counted from the header before decoding starts (and
    counted again while reading). A small file can hold a 590 s 4K 60 fps video whose
    frames each pass the other limits. The default, 8e10, passes any 1080p video within
    the other limits (36,000 x 1920 x 1080 = 7.5e10), the shipped example clips (24
    frames of 128x128 = 3.9e5) and every test clip many times over, and passes 4K read
    in full up to 9,645 frames (2.7 min at 60 fps); a 590 s 4K 60 fps video read in full
    (35,400 x 3840 x 2160 = 2.9e11) fails. Sampling a few frames of it passes: sparse
    frames are reached by seeking, and only the frames seeking decodes are counted.
    """

    max_bytes: int = 512 * 1024 * 1024
    max_seconds: float = 600.0
    max_width: int = 3840
    max_height: int = 2160
    max_frames: int = 36_000
    max_decode_pixels: int = 80_000_000_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_width", "max_height", "max_frames", "max_decode_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VideoLimits.{name} must be a positive int, got {value!r}")
        _check_positive_number("VideoLimits.max_seconds", self.max_seconds)


DEFAULT_VIDEO_LIMITS = VideoLimits()

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


# ---------------------------------------------------------------------------- content checks


def _check_head(head: bytes, what: str) -> str:
    """Return the sniffed container of ``head`` or raise a MediaError naming what it is."""
    if not head:
        raise MediaError(f"{what} is empty (0 bytes); pass the video file's contents")
    fmt = sniff_video_format(head)
    if fmt is not None and describe_video(head) is not None:
        return fmt
    sample = head[:_TEXT_BYTES]
    text = sum(b in _PRINTABLE for b in sample) >= _TEXT_FRACTION * len(sample)
    image = None if text else sniff_image_format(head)
    if image is not None and image != "PDF":
        # Before the URL check: a JPEG's XMP block names http://ns.adobe.com/...
        raise UnsupportedFormat(
            f"{what} is an image ({_IMAGE_LABEL.get(image, image)}), not a video; send "
            "images to /v1/caption or `captioner caption`"
        )
    if fmt is not None:  # an MP4-style box with an image brand that the sniffer did not know
        return fmt
    start = head[:_HEAD_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    upload = "upload the video itself"
    if start.startswith(b"#EXTM3U") or b"#EXT-X-" in start:
        raise UnsupportedFormat(f"{what} is an HLS playlist, not a video file: {upload}")
    if start.startswith(b"ffconcat version"):
        raise UnsupportedFormat(f"{what} is an ffconcat list, not a video file: {upload}")
    if start.startswith(b"v=0"):
        raise UnsupportedFormat(f"{what} is an SDP stream description, not a video file: {upload}")
    if b"://" in start:
        raise UnsupportedFormat(
            f"{what} refers to a URL ('://' found), not a video file; URLs are never "
            f"fetched: {upload}"
        )
    if text:
        raise UnsupportedFormat(f"{what} is a text file, not a video file: {upload}")
    raise UnsupportedFormat(
        f"{what} is not a supported video: {SUPPORTED_VIDEO} expected, got data starting "
        f"{head[:8].hex(' ')}; convert it to MP4 first"
    )


def _whitelist_options(current: str) -> tuple[list[str], list[str]]:
    """Split FFmpeg capture options into the user's other options and their whitelists."""
    options = [o for o in current.split("|") if o.strip()]
    kept = [o for o in options if o.split(";", 1)[0].strip() != _WHITELIST_KEY]
    return kept, [o.strip() for o in options if o not in kept]


def restrict_ffmpeg_protocols() -> None:
    """Make ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` hold ``protocol_whitelist;file``, once.

    Other options the user put in the variable are kept; a ``protocol_whitelist`` of their
    own is replaced, with a warning, because FFmpeg must open nothing but the local file.

    The environment is written at most once per process, under a lock, and not at all
    when the variable is already right: OpenCV reads it from C in other threads, where a
    concurrent write is undefined behaviour. The service calls this once at start-up;
    every capture open calls it again, and those calls only read ``os.environ``.

    Raises:
        RuntimeError: after the first call, something else replaced the whitelist;
            no video is opened until the variable holds ``protocol_whitelist;file`` again.
    """
    global _restricted
    if not _restricted:
        with _restrict_lock:
            if not _restricted:
                current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
                kept, whitelists = _whitelist_options(current)
                if whitelists != [_WHITELIST]:
                    if whitelists:
                        logger.warning(
                            "replacing %s in %s with %r: FFmpeg may open local files only",
                            ", ".join(repr(w) for w in whitelists),
                            FFMPEG_OPTIONS_ENV,
                            _WHITELIST,
                        )
                    os.environ[FFMPEG_OPTIONS_ENV] = "|".join([*kept, _WHITELIST])
                _restricted = True
                return
    current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
    if _whitelist_options(current)[1] != [_WHITELIST]:
        raise RuntimeError(
            f"{FFMPEG_OPTIONS_ENV} was changed to {current!r} after captioner restricted "
            f"FFmpeg to local files; put {_WHITELIST!r} back in it (videos are not opened "
            "until then)"
        )


# ------------------------------------------------------------------------------ local files


@contextmanager
def local_video(source: VideoSource, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> Iterator[Path]:
    """Yield a checked local path to the video in ``source``.

    ``source`` is a path, bytes or a binary stream. Bytes and streams are written to a
    private temporary file (mode 0600, suffix from the sniffed container) that is removed
    on exit, also on error; messages about it say "the uploaded video", never its path.
    Paths must name an existing regular file. The byte limit is
    enforced and the content is sniffed here, before OpenCV sees it.

    Raises:
        MediaError: the input is missing, empty, too large or not a supported video.
    """
    if isinstance(source, str | os.PathLike):
        path, _, _ = _check_path(source, limits)
        yield path
        return
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_byte_count(len(data), limits, "input")
        head, rest = data[:_HEAD_BYTES], [data[_HEAD_BYTES:]]
    elif hasattr(source, "read"):
        head = _read_head(source)
        rest = _stream_chunks(source)
    else:
        raise TypeError(
            "local_video() takes a file path, bytes or a binary stream, "
            f"not {type(source).__name__}"
        )
    fmt = _check_head(head, "input")
    fd, name = tempfile.mkstemp(prefix="captioner-video-", suffix=f".{fmt}")
    path = Path(name).absolute()
    _uploads[str(path)] = UPLOADED_VIDEO
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(head)
            total = len(head)
            for chunk in rest:
                total += len(chunk)
                _check_byte_count(total, limits, "input", at_least=True)
                fh.write(chunk)
        yield path
    finally:
        _uploads.pop(str(path), None)
        with suppress(FileNotFoundError):
            path.unlink()


def _read_head(stream: BinaryIO) -> bytes:
    head = b""
    while len(head) < _HEAD_BYTES:
        chunk = _read_chunk(stream, _HEAD_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _stream_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := _read_chunk(stream, _CHUNK):
        yield chunk


def _read_chunk(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if isinstance(data, str):
        raise MediaError("stream is in text mode; open the file with mode 'rb'")
    if data is None:
        return b""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MediaError(f"stream.read() returned {type(data).__name__}, expected bytes")
    return bytes(data)


def _check_path(source: str | os.PathLike, limits: VideoLimits) -> tuple[Path, str, str]:
    """Check that ``source`` is a local regular video file within limits.

    Returns the absolute path (FFmpeg would read a "name:" prefix as a protocol), its
    container and the name messages use for it (:func:`display_name`).
    """
    name = display_name(source)
    path = check_local_file(source, "video", limits.max_bytes, name=name)
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise MediaError(f"cannot read {name}: {exc.strerror or exc}") from None
    return path, _check_head(head, name), name


def display_name(path: str | os.PathLike) -> str:
    """How messages name ``path``: the path itself, or "the uploaded video" for the
    private temporary file that :func:`local_video` wrote from bytes (never its path)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "://" in text:
        return text
    absolute = str(Path(text).absolute())
    return _uploads.get(absolute, absolute)


def _check_byte_count(n: int, limits: VideoLimits, what: str, at_least: bool = False) -> None:
    check_byte_count(n, limits.max_bytes, what, "video", at_least)
