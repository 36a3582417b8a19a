"""Image uploads before they are decoded: header probe, decoded-memory cost, the shared budget.

A 300 KB PNG can claim 9000 x 9000 16-bit pixels and take seconds and gigabytes to decode.
Its header says so for free (PIL's ``Image.open`` is lazy), so each upload is charged its
estimated decoding memory against one budget shared by all requests, and refused at once
when it cannot fit, instead of pushing the process out of memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from PIL import Image

log = logging.getLogger("captioner.service")
T = TypeVar("T")

# Bytes per pixel of the image as Pillow decodes it.
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3}
_MODE_BYTES |= {"HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4}
_HIGH_DEPTH = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What captioner.media adds on the way to RGB, per pixel: 16-bit and float modes go through
# float64 arrays (several temporaries); alpha is composited over a white RGBA background.
_HIGH_DEPTH_EXTRA, _ALPHA_EXTRA, _PLAIN_EXTRA = 24, 15, 3
_ROTATING = frozenset({2, 3, 4, 5, 6, 7, 8})  # EXIF orientations that make a transposed copy
_SWAPPING = frozenset({5, 6, 7, 8})  # ... of which these swap width and height
_JPEG = frozenset({"JPEG", "MPO"})
_HEADER_EXIF = frozenset({"JPEG", "MPO", "TIFF", "WEBP"})  # formats whose getexif() reads no pixels
_TRIM_AFTER_BYTES = 64 * 1024 * 1024  # give memory back to the OS after decodes this large


@dataclass(frozen=True)
class ImageProbe:
    """What an image header says: the size as shown (after EXIF rotation) and the cost."""

    width: int
    height: int
    pixels: int  # as stored
    cost: int  # estimated peak bytes to decode it to RGB


def probe_image(data: bytes, model_size: int) -> ImageProbe | None:
    """Read only the header of ``data``; None when Pillow cannot (the decoder says why later).

    ``model_size`` is the model's input side: JPEGs are decoded at a reduced scale that still
    covers it (``draft``), so they cost a fraction of their stored pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                mode, fmt = img.mode, img.format
                orientation = _orientation(img)
    except Exception:  # unreadable or a bomb: decode_image gives the precise message
        return None
    pixels = width * height
    decoded = pixels
    if fmt in _JPEG:
        scale = 8
        while scale > 1 and min(width, height) // scale < model_size:
            scale //= 2
        decoded = pixels // (scale * scale)
    cost = decoded * bytes_per_pixel(mode, rotated=orientation in _ROTATING)
    if orientation in _SWAPPING:
        width, height = height, width
    return ImageProbe(width, height, pixels, cost)


def bytes_per_pixel(mode: str, rotated: bool = False) -> int:
    """Estimated peak bytes per pixel while an image of ``mode`` becomes RGB."""
    base = _MODE_BYTES.get(mode, 2 if mode.startswith("I;16") else 4)
    if mode in _HIGH_DEPTH or mode.startswith("I;16"):
        extra = _HIGH_DEPTH_EXTRA
    elif mode in _ALPHA:
        extra = _ALPHA_EXTRA
    else:
        extra = _PLAIN_EXTRA
    return base + (base if rotated else 0) + extra


def _orientation(img: Image.Image) -> int | None:
    """The EXIF orientation from the header alone (never decoding a pixel)."""
    try:
        if img.format in _HEADER_EXIF:
            return img.getexif().get(0x0112)
        # Elsewhere (PNG) getexif() would decode the whole image to look past the pixel data;
        # an EXIF block before the pixels is already in info.
        raw = img.info.get("exif")
        if not isinstance(raw, bytes | bytearray) or not raw:
            return None
        exif = Image.Exif()
        exif.load(bytes(raw))
        return exif.get(0x0112)
    except Exception:  # a broken EXIF block: the decoder ignores it too
        return None


class BudgetFull(Exception):
    """The decode budget cannot take this request now; ``retry_after_s`` says when to retry."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DecodeBudget:
    """Bytes that uploads being decoded may hold at once, shared by every request (thread-safe).

    The Retry-After estimate is the time the decodes now holding the budget are likely to
    need: recent decoding speed (bytes per second of the estimate) x bytes held.
    """

    def __init__(self, capacity: int, workers: int) -> None:
        self.capacity = capacity
        self.workers = workers
        self.used = 0
        self._lock = threading.Lock()
        self._speeds: deque[float] = deque(maxlen=16)  # recent bytes per second

    def acquire(self, cost: int) -> None:
        """Reserve ``cost`` bytes or raise :class:`BudgetFull` (never waits)."""
        with self._lock:
            if self.used + cost > self.capacity:
                wait = self._retry_after_s(cost)
                raise BudgetFull(
                    f"the server is decoding other large images: this request needs "
                    f"{cost / 2**20:.0f} MiB of its {self.capacity / 2**20:.0f} MiB decode "
                    f"budget; retry in {wait:.0f} s or send smaller images",
                    wait,
                )
            self.used += cost

    def release(self, cost: int, seconds: float | None = None) -> None:
        """Give ``cost`` bytes back; ``seconds`` (the decode's time) feeds the estimate."""
        with self._lock:
            self.used = max(0, self.used - cost)
            if seconds is not None and seconds > 0 and cost >= _TRIM_AFTER_BYTES // 8:
                self._speeds.append(cost / seconds)

    def _retry_after_s(self, cost: int) -> float:
        if not self._speeds:
            return 1.0
        speed = sum(self._speeds) / len(self._speeds) * self.workers
        freed_needed = self.used + cost - self.capacity
        return max(1.0, min(self.used, freed_needed) / speed)


@dataclass(eq=False)
class Charge:
    """One upload's share of the budget, given back exactly once."""

    budget: DecodeBudget
    cost: int
    _done: bool = field(default=False, init=False)

    def release(self, seconds: float | None = None) -> None:
        if not self._done:
            self._done = True
            self.budget.release(self.cost, seconds)


def timed_decode(decode: Callable[[bytes], T], data: bytes, charge: Charge) -> T:
    """Run ``decode(data)``, then give its charge back; trim the heap after big decodes."""
    start = time.perf_counter()
    try:
        return decode(data)
    finally:
        charge.release(time.perf_counter() - start)
        if charge.cost >= _TRIM_AFTER_BYTES:
            trim_memory()


_malloc_trim = None
_trim_lock = threading.Lock()


def trim_memory() -> bool:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim(0)``); False where absent.

    glibc keeps large freed blocks in its arenas, so the resident size after a big decode stays
    high until something asks for them back; elsewhere this does nothing.
    """
    global _malloc_trim
    with _trim_lock:
        if _malloc_trim is None:
            _malloc_trim = False
            name = ctypes.util.find_library("c")
            try:
                libc = ctypes.CDLL(name) if name else None
                _malloc_trim = getattr(libc, "malloc_trim", None) or False
            except OSError:
                pass
            if _malloc_trim:
                _malloc_trim.argtypes = [ctypes.c_size_t]
        if not _malloc_trim:
            return False
    try:
        _malloc_trim(0)
    except Exception:  # never let housekeeping fail a request
        log.debug("malloc_trim failed", exc_info=True)
        return False
    return True


class IdleTrim:
    """Hands freed heap back to the OS once the service has gone idle after some work.

    A burst leaves glibc's arenas holding what its decodes and batches freed, and the
    resident size stays at the burst's level; one ``malloc_trim`` after ``idle_s`` without a
    request brings it back down. ``busy()`` says whether requests are uploading or in flight.
    """

    def __init__(self, idle_s: float, busy: Callable[[], bool]) -> None:
        self.idle_s = idle_s
        self.busy = busy
        self.trims = 0
        self._last_done: float | None = None  # None: no request ended since the last trim

    def done(self) -> None:
        """A request has ended (called by the upload gate)."""
        self._last_done = time.monotonic()

    async def run(self) -> None:
        """Check every ``idle_s / 2`` seconds, forever (the runtime cancels it)."""
        while True:
            await asyncio.sleep(max(0.05, self.idle_s / 2))
            last = self._last_done
            if last is None or self.busy() or time.monotonic() - last < self.idle_s:
                continue
            self._last_done = None
            await asyncio.to_thread(trim_memory)
            self.trims += 1
