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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from captioner.media import MediaError, UnsupportedFormat

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
    """

    max_bytes: int = 512 * 1024 * 1024
    max_seconds: float = 600.0
    max_width: int = 3840
    max_height: int = 2160
    max_frames: int = 36_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_width", "max_height", "max_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VideoLimits.{name} must be a positive int, got {value!r}")
        _check_positive_number("VideoLimits.max_seconds", self.max_seconds)


DEFAULT_VIDEO_LIMITS = VideoLimits()

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


# ---------------------------------------------------------------------------- content checks


def sniff_video_format(head: bytes) -> str | None:
    """Name the container of ``head`` (a file's first bytes) by its magic bytes.

    Returns "mp4" (an ISO BMFF ``ftyp`` box: MP4, MOV, M4V), "avi" or "mkv" (EBML: Matroska
    and WebM), or None for anything else.
    """
    head = bytes(head[:16])
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


def _check_head(head: bytes, what: str) -> str:
    """Return the sniffed container of ``head`` or raise a MediaError naming what it is."""
    if not head:
        raise MediaError(f"{what} is empty (0 bytes); pass the video file's contents")
    fmt = sniff_video_format(head)
    if fmt is not None:
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
    sample = head[:_TEXT_BYTES]
    if sum(b in _PRINTABLE for b in sample) >= _TEXT_FRACTION * len(sample):
        raise UnsupportedFormat(f"{what} is a text file, not a video file: {upload}")
    raise UnsupportedFormat(
        f"{what} is not a supported video: {SUPPORTED_VIDEO} expected, got data starting "
        f"{head[:8].hex(' ')}; convert it to MP4 first"
    )


def restrict_ffmpeg_protocols() -> None:
    """Make ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` hold ``protocol_whitelist;file``.

    Called before every capture is created (never at import). Other options the user put in
    the variable are kept; a ``protocol_whitelist`` of their own is replaced, with a warning,
    because FFmpeg must open nothing but the local file.
    """
    current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
    options = [o for o in current.split("|") if o.strip()]
    kept = [o for o in options if o.split(";", 1)[0].strip() != _WHITELIST_KEY]
    whitelists = [o.strip() for o in options if o not in kept]
    if whitelists == [_WHITELIST]:
        return
    if any(w != _WHITELIST for w in whitelists):
        logger.warning(
            "replacing %s in %s with %r: FFmpeg may open local files only",
            ", ".join(repr(w) for w in whitelists),
            FFMPEG_OPTIONS_ENV,
            _WHITELIST,
        )
    os.environ[FFMPEG_OPTIONS_ENV] = "|".join([*kept, _WHITELIST])


# ------------------------------------------------------------------------------ local files


@contextmanager
def local_video(source: VideoSource, limits: VideoLimits = DEFAULT_VIDEO_LIMITS) -> Iterator[Path]:
    """Yield a checked local path to the video in ``source``.

    ``source`` is a path, bytes or a binary stream. Bytes and streams are written to a
    private temporary file (mode 0600, suffix from the sniffed container) that is removed
    on exit, also on error. Paths must name an existing regular file. The byte limit is
    enforced and the content is sniffed here, before OpenCV sees it.

    Raises:
        MediaError: the input is missing, empty, too large or not a supported video.
    """
    if isinstance(source, str | os.PathLike):
        path, _ = _check_path(source, limits)
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
    path = Path(name)
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


def _check_path(source: str | os.PathLike, limits: VideoLimits) -> tuple[Path, str]:
    """Check that ``source`` is a local regular file within limits; return it and its format."""
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "://" in text:
        raise MediaError(f"URLs are never fetched: {text}; download the video and pass the file")
    path = Path(text).absolute()  # absolute: FFmpeg would read a "name:" prefix as a protocol
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise MediaError(f"no such file: {path}") from None
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise MediaError(f"{path} is a directory; pass a video file")
    if not path.is_file():
        raise MediaError(f"{path} is not a regular file (a device or a pipe?); pass a video file")
    _check_byte_count(stat.st_size, limits, str(path))
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path, _check_head(head, str(path))


def _check_byte_count(n: int, limits: VideoLimits, what: str, at_least: bool = False) -> None:
    if n > limits.max_bytes:
        size = "larger than" if at_least else f"{n} bytes, above"
        raise MediaError(
            f"{what} is {size} the {limits.max_bytes}-byte limit "
            f"({limits.max_bytes / 2**20:.4g} MiB); trim or re-encode the video first"
        )
