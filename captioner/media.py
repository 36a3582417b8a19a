"""Bytes to a validated RGB image: the only place captioner decodes images.

Every input, whether an upload, a file in a folder or a PIL image handed in by a
caller, goes through :func:`decode_image`, which enforces byte, pixel, side and
format limits before any pixel is decoded, and turns every failure into a
:class:`MediaError` that says what is wrong and what to do about it.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.intake import (
    MediaError,
    UnsupportedFormat,
    check_byte_count,
    check_local_file,
    describe_video,
)

__all__ = [
    "DEFAULT_LIMITS",
    "IMAGE_SUFFIXES",
    "ImageLimits",
    "MediaError",
    "UnsupportedFormat",
    "decode_image",
    "sniff_image_format",
]

logger = logging.getLogger(__name__)

#: File name suffixes looked at when scanning a folder. Discovery only: the
#: format of a file is always decided by its content.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

_DEFAULT_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})
# Order and spelling used when listing allowed formats in messages.
_FORMAT_ORDER = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
_FORMAT_LABEL = {"WEBP": "WebP"}
# MPO (multi-picture JPEG) has no opener of its own in Pillow: the JPEG one detects it.
_OPENER_FOR = {"MPO": "JPEG"}
_JPEG_FAMILY = frozenset({"JPEG", "MPO"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112
_SNIFF_BYTES = 32


def _opener(fmt: str) -> str:
    return _OPENER_FOR.get(fmt, fmt)


def _pillow_openers() -> frozenset[str]:
    """Formats this Pillow build can open (loads all plugins the first time)."""
    Image.init()
    return frozenset(Image.OPEN)


@dataclass(frozen=True)
class ImageLimits:
    """Limits checked before an image is decoded.

    ``max_pixels`` defaults to Pillow's own ``Image.MAX_IMAGE_PIXELS``; an image above it
    is an error, never a warning. Pillow's decompression-bomb warning is turned into an
    error as well, so raising ``max_pixels`` above ``Image.MAX_IMAGE_PIXELS`` only takes
    effect if the application raises that setting too.
    """

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 89_478_485
    max_side: int = 16384
    formats: frozenset[str] = _DEFAULT_FORMATS

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ImageLimits.{name} must be a positive int, got {value!r}")
        if isinstance(self.formats, str):
            raise ValueError(
                f"ImageLimits.formats must be a set of format names, got the string "
                f"{self.formats!r}; write frozenset({{{self.formats!r}}})"
            )
        formats = frozenset(str(name).upper() for name in self.formats)
        if not formats:
            raise ValueError("ImageLimits.formats is empty; allow at least one format, e.g. PNG")
        # The default set is skipped so that importing this module loads no Pillow plugins.
        if formats != _DEFAULT_FORMATS:
            unknown = sorted(f for f in formats if _opener(f) not in _pillow_openers())
            if unknown:
                raise ValueError(
                    f"ImageLimits.formats has formats this Pillow cannot open: "
                    f"{', '.join(unknown)}; use Pillow format names such as "
                    f"{', '.join(_FORMAT_ORDER)}"
                )
        # Frozen dataclass: normalise in place once, at construction.
        object.__setattr__(self, "formats", formats)


DEFAULT_LIMITS = ImageLimits()

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | Image.Image | BinaryIO


def sniff_image_format(head: bytes) -> str | None:
    """Name the image format of ``head`` (the first bytes of a file) by its magic bytes.

    Returns a Pillow format name ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", and a few
    formats that are not allowed by default such as "ICO", "PPM", "PDF", "HEIF", "AVIF",
    "PSD", "JPEG2000", "QOI"), or None when the bytes match none of them. A JPEG that
    is really an MPO is reported as "JPEG": only a full parse can tell them apart.
    """
    head = bytes(head[:_SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and len(head) >= 14:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return "ICO"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "PPM"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"qoif"):
        return "QOI"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
    return None


def decode_image(
    source: ImageSource,
    limits: ImageLimits = DEFAULT_LIMITS,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Read ``source`` into a new, fully loaded RGB image, enforcing ``limits``.

    ``source`` is raw bytes, a file path, a binary stream or a PIL image. The format is
    decided by content, never by file name; sizes are checked from the header before any
    pixel is decoded; EXIF orientation is applied; transparency is composited on white;
    animated images give their first frame. ``draft=(w, h)`` lets JPEGs decode at a
    reduced scale that is still at least ``w`` x ``h`` (a large speed-up for big photos).

    Raises:
        MediaError: the input is missing, empty, too large, not an allowed image format,
            truncated or otherwise unreadable.
    """
    if draft is not None:
        draft = _check_draft(draft)
    if isinstance(source, Image.Image):
        return _from_pil(source, limits)
    data = _read_bytes(source, limits)
    return _decode_bytes(data, limits, draft)


def _check_draft(draft: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in draft)
    except (TypeError, ValueError):
        raise ValueError(f"draft must be a (width, height) pair of ints, got {draft!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"draft width and height must be positive, got {draft!r}")
    return width, height


def _read_bytes(source: object, limits: ImageLimits) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_byte_count(len(data), limits, "input")
    elif isinstance(source, str | os.PathLike):
        data = _read_path(source, limits)
    elif hasattr(source, "read"):
        data = source.read(limits.max_bytes + 1)
        if isinstance(data, str):
            raise MediaError("stream is in text mode; open the file with mode 'rb'")
        if not isinstance(data, bytes | bytearray):
            raise MediaError(f"stream.read() returned {type(data).__name__}, expected bytes")
        data = bytes(data)
        _check_byte_count(len(data), limits, "stream", at_least=True)
    else:
        raise TypeError(
            "decode_image() takes bytes, a file path, a binary stream or a PIL image, "
            f"not {type(source).__name__}"
        )
    if not data:
        raise MediaError("input is empty (0 bytes); pass the image file's contents")
    return data


def _read_path(source: str | os.PathLike, limits: ImageLimits) -> bytes:
    path = check_local_file(source, "image", limits.max_bytes)
    try:
        with path.open("rb") as fh:
            # Read one byte past the cap: the file may have grown since it was checked.
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise MediaError(f"cannot read {path}: {exc.strerror or exc}") from None
    _check_byte_count(len(data), limits, str(path), at_least=True)
    return data


def _check_byte_count(n: int, limits: ImageLimits, what: str, at_least: bool = False) -> None:
    check_byte_count(n, limits.max_bytes, what, "image", at_least)


def _decode_bytes(data: bytes, limits: ImageLimits, draft: tuple[int, int] | None) -> Image.Image:
    sniffed = sniff_image_format(data)
    video = describe_video(data) if sniffed is None else None
    if video is not None:
        raise UnsupportedFormat(
            f"input is a video ({video}), not an image; send videos to /v1/activity or "
            "`captioner activity`"
        )
    if sniffed is not None and not _sniffed_allowed(sniffed, limits):
        raise UnsupportedFormat(
            f"image format {sniffed} is not allowed: {_expected(limits)} expected; "
            "convert the image to PNG or JPEG first"
        )
    available = _pillow_openers()
    openers = sorted({_opener(f) for f in limits.formats} & available)
    with warnings.catch_warnings():
        # Local filter only: global Pillow and warnings state is left as the application set it.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=openers)
        except UnidentifiedImageError:
            if sniffed is not None:
                raise MediaError(
                    f"corrupt {sniffed} file: its header could not be read; "
                    "re-export or re-download the image"
                ) from None
            raise UnsupportedFormat(
                f"file is not an image: {_expected(limits)} expected, got {_describe(data)}"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, limits) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise _corrupt_error(exc, sniffed or "image") from None
        with img:
            fmt = img.format or "unknown"
            if fmt not in limits.formats:
                raise UnsupportedFormat(
                    f"image format {fmt} is not allowed: {_expected(limits)} expected; "
                    "convert the image to PNG or JPEG first"
                )
            _check_size(img.size, limits)
            if draft is not None and fmt in _JPEG_FAMILY:
                _apply_draft(img, draft)
            _load(img, fmt, limits)
            return _finish(img)


def _sniffed_allowed(sniffed: str, limits: ImageLimits) -> bool:
    if sniffed == "JPEG":
        return bool(limits.formats & _JPEG_FAMILY)
    return sniffed in limits.formats


def _expected(limits: ImageLimits) -> str:
    names = [f for f in _FORMAT_ORDER if f in limits.formats]
    names += sorted(limits.formats.difference(_FORMAT_ORDER))
    return "/".join(_FORMAT_LABEL.get(n, n) for n in names)


def _describe(data: bytes) -> str:
    """Say what non-image bytes look like, for error messages."""
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the 512th byte; judge the rest.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        lowered = text.lstrip().lower()
        if lowered.startswith(("<!doctype html", "<html")):
            return "HTML text (an error page saved in place of the image?)"
        if lowered.startswith("<svg") or ("<svg" in lowered and lowered.startswith("<?xml")):
            return "SVG (vector graphics are not supported; rasterise it to PNG)"
        return "text"
    return f"unrecognised binary data starting {data[:8].hex(' ')}"


def _bomb_error(exc: Exception, limits: ImageLimits) -> MediaError:
    limit = limits.max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):.3g} pixels" if found else "too many pixels"
    return MediaError(
        f"image has {size}, above the {limit}-pixel limit (decompression bomb guard); "
        "resize it first"
    )


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    pixels = width * height
    if pixels > limits.max_pixels:
        raise MediaError(
            f"image is {width}x{height} = {pixels:.3g} pixels, above the "
            f"{limits.max_pixels}-pixel limit (decompression bomb guard); resize it first"
        )
    if max(width, height) > limits.max_side:
        raise MediaError(
            f"image is {width}x{height}, a side above the {limits.max_side}-pixel limit; "
            "resize or crop it first"
        )
    if width <= 0 or height <= 0:
        raise MediaError(f"image is {width}x{height}: it has no pixels")


def _apply_draft(img: Image.Image, draft: tuple[int, int]) -> None:
    target = draft
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block must not block decoding; it is handled later
        orientation = None
    if orientation in _ROTATED_ORIENTATIONS:
        # The draft size is wanted after rotation, and the decoder works before it.
        target = (draft[1], draft[0])
    img.draft("RGB", target)


def _load(img: Image.Image, fmt: str, limits: ImageLimits) -> None:
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(exc, limits) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        raise _corrupt_error(exc, fmt) from None


def _corrupt_error(exc: BaseException, fmt: str) -> MediaError:
    reason = str(exc) or type(exc).__name__
    kind = "truncated" if "truncated" in reason.lower() else "corrupt"
    return MediaError(f"{kind} {fmt} file: {reason}; re-export or re-download the image")


def _from_pil(img: Image.Image, limits: ImageLimits) -> Image.Image:
    _check_size(img.size, limits)
    _load(img, img.format or "image", limits)
    # _finish always builds a new image, so the caller's object is never handed back.
    return _finish(img)


def _finish(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert a loaded image to RGB."""
    try:
        oriented = ImageOps.exif_transpose(img)
    except Exception as exc:  # a malformed EXIF block should not reject a viewable image
        logger.warning("ignoring unreadable EXIF orientation: %s", exc)
        oriented = img
    if oriented is None:  # older Pillow returns None when nothing changes in place
        oriented = img
    return _to_rgb(oriented)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion clips 16-bit values at 255 (mostly white); scale instead.
        values = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if np.nanmax(values, initial=0.0) <= 1.0:
            values = values * 255.0  # floats in [0, 1] are the common convention
        grey = np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        try:
            rgba = img.convert("RGBA")
        except ValueError as exc:
            raise MediaError(f"unsupported colour mode {mode}: {exc}") from None
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise MediaError(
            f"unsupported colour mode {mode}: {exc}; convert the image to RGB first"
        ) from None
