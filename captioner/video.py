"""Video files to exactly sampled RGB frames: the only place captioner decodes video.

Decoding goes through OpenCV's FFmpeg backend, which can open far more than local files
(playlists, network streams, concatenation lists). Two layers keep it to local video data:

* every input is sniffed by content before OpenCV sees it; only MP4/MOV, AVI and MKV/WebM
  containers pass, and playlists, SDP descriptions, concat lists, text and anything naming
  a URL are refused with a :class:`~captioner.media.MediaError` that says what was found;
* before any capture is created, ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is made to hold
  ``protocol_whitelist;file`` (see :func:`restrict_ffmpeg_protocols`), so FFmpeg refuses
  every protocol but the local file even for a file that slipped through.

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
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import cv2
import numpy as np

from captioner.media import MediaError, UnsupportedFormat

__all__ = [
    "DEFAULT_VIDEO_LIMITS",
    "SUPPORTED_VIDEO",
    "VIDEO_SUFFIXES",
    "Clip",
    "VideoInfo",
    "VideoLimits",
    "decode_clip",
    "iter_frames",
    "local_video",
    "multi_clip_indices",
    "probe_video",
    "read_frames",
    "read_frames_seek",
    "restrict_ffmpeg_protocols",
    "segment_indices",
    "sliding_windows",
    "sniff_video_format",
    "uniform_indices",
]

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


# ---------------------------------------------------------------------------------- sampling


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


# ------------------------------------------------------------------------------ whole clips


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
