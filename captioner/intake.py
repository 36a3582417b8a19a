"""What every input goes through before a decoder sees it, images and videos alike.

The error types, the walk from command-line inputs to files (:func:`expand_paths`), the check
of a path given as input (:func:`check_local_file`), the byte limit check and the magic-byte
sniffing of video containers live here, so that images (:mod:`captioner.media`) and videos
(:mod:`captioner.video`) refuse the same bad input with the same message. Nothing here decodes
anything or imports a decoder.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "MediaError",
    "UnsupportedFormat",
    "check_byte_count",
    "check_local_file",
    "describe_video",
    "expand_paths",
    "sniff_video_format",
]


class MediaError(ValueError):
    """An input could not be read as an image or a video; the message says why and what to do."""


class UnsupportedFormat(MediaError):
    """The bytes are not an allowed type at all (text, another format): HTTP 415, not 422."""


# How to bring a file of each kind under its byte limit.
_SHRINK = {
    "image": "compress or resize the image first",
    "video": "trim or re-encode the video first",
}


def check_byte_count(n: int, max_bytes: int, name: str, what: str, at_least: bool = False) -> None:
    """Refuse ``n`` bytes of ``name`` (a path or "input") above ``max_bytes``.

    ``at_least`` says that ``n`` is only how much was read before the limit was passed.
    """
    if n > max_bytes:
        size = "larger than" if at_least else f"{n} bytes, above"
        fix = _SHRINK.get(what, f"make the {what} smaller first")
        raise MediaError(
            f"{name} is {size} the {max_bytes}-byte limit ({max_bytes / 2**20:.4g} MiB); {fix}"
        )


def expand_paths(
    inputs: Iterable[str | os.PathLike], suffixes: frozenset[str]
) -> tuple[list[Path], list[str]]:
    """Files, folders (recursive, ``suffixes`` only, sorted) and glob patterns -> file paths.

    Returns the paths in a stable order without duplicates, and a list of the inputs that
    matched nothing (for the caller to report). A broken symbolic link found in a folder or
    by a pattern is returned like a file, so that it gets its own error row (see
    :func:`check_local_file`) instead of vanishing from the output.
    """
    seen: set[Path] = set()
    out: list[Path] = []
    unmatched: list[str] = []

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in inputs:
        text = str(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if _file_or_broken_link(f, suffixes))
            if not found:
                unmatched.append(text)
            for f in found:
                add(f)
        elif p.exists():
            add(p)  # an explicitly named file is tried whatever its suffix
        elif glob.has_magic(text):
            found = sorted(Path(m) for m in glob.glob(text, recursive=True))
            matches = [m for m in found if _file_or_broken_link(m)]
            if not matches:
                unmatched.append(text)
            for m in matches:
                add(m)
        else:
            unmatched.append(text)
    return out, unmatched


def _file_or_broken_link(path: Path, suffixes: frozenset[str] | None = None) -> bool:
    """A regular file (or a link to one), or a dangling link; with ``suffixes``, of those only."""
    if suffixes is not None and path.suffix.lower() not in suffixes:
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def check_local_file(
    source: str | os.PathLike, what: str, max_bytes: int, name: str | None = None
) -> Path:
    """Check that ``source`` names a local regular file of at most ``max_bytes``; return it.

    ``what`` ("image" or "video") goes into the messages; ``name`` replaces the path in
    them (for a private temporary file). Anything of the form ``scheme://`` is refused,
    never fetched or handed to a decoder. The path returned is absolute, so that no
    decoder can read a ``name:`` prefix as a protocol.

    Raises:
        MediaError: a URL, a missing file, a broken link, a directory, not a regular file, or
            too large.
    """
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "://" in text:
        raise MediaError(
            f"{text!r} is a URL, and URLs are never fetched: download the {what} and pass "
            "the local file"
        )
    path = Path(text).absolute()
    shown = name or str(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise MediaError(
                f"{shown} is a broken symbolic link (to {os.readlink(path)}, which does not "
                "exist); fix the link or remove it"
            ) from None
        raise MediaError(f"no such file: {shown}; check the path") from None
    except OSError as exc:
        raise MediaError(
            f"cannot read {shown}: {exc.strerror or exc}; check that it exists and is readable"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(f"{shown} is a directory; pass a single {what} file")
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(
            f"{shown} is not a regular file (a device or a pipe?); pass a single {what} file"
        )
    check_byte_count(info.st_size, max_bytes, shown, what)
    return path


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


def describe_video(head: bytes) -> str | None:
    """Name the video container of ``head`` for people ("MP4", "MOV", "AVI", "WebM", "MKV").

    None when ``head`` is no video container. HEIF and AVIF images share MP4's box format
    and are left to the image sniffer.
    """
    head = bytes(head[:64])
    fmt = sniff_video_format(head)
    if fmt == "mp4":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return "MOV" if brand == b"qt  " else "MP4"
    if fmt == "mkv":
        return "WebM" if b"webm" in head else "MKV"
    return "AVI" if fmt == "avi" else None


_IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
)
