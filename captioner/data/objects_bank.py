"""The object bank's assets: photographic stamps with their caption nouns, and backgrounds.

Which stamps are used, and what each is called, is decided by a reviewed table committed
beside this module (``stamp_nouns.tsv``: stamp -> noun, plural; ``-`` for a stamp looked at
and left out, with the reason). :func:`select_stamps` first skips what can be told from the
files (``cartoon`` folders, ``symbols/``, ``*_mirror`` duplicates, tint templates and
greyscale stamps), then keeps the stamps the table names. Backgrounds are listed the same way
in ``background_phrases.tsv`` (file -> the phrase captions use, empty when not named).
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "BackgroundEntry",
    "Stamp",
    "StampEntry",
    "background_table",
    "load_photo_background",
    "package_backgrounds",
    "select_stamps",
    "stamp_image",
    "stamp_table",
    "structural_skip",
]

logger = logging.getLogger(__name__)

_HERE = pathlib.Path(__file__).resolve().parent
STAMP_TABLE = _HERE / "stamp_nouns.tsv"
BACKGROUND_TABLE = _HERE / "background_phrases.tsv"

# Stamps are shrunk to this long side when loaded: larger is never drawn in a 224 image.
_MAX_STAMP_SIDE = 640
_MAX_BACKGROUND_SIDE = 1024


@dataclass(frozen=True)
class StampEntry:
    """One row of the noun table; ``noun`` is None for a stamp reviewed and left out."""

    key: str
    noun: str | None
    plural: str | None
    note: str


@dataclass(frozen=True)
class Stamp:
    """A usable stamp: its key (path under the stamps folder, no ``.png``), file and names.

    The category is the noun: two stamps with the same noun are the same kind of object.
    """

    key: str
    path: str
    noun: str
    plural: str

    @property
    def category(self) -> str:
        return self.noun


@dataclass(frozen=True)
class BackgroundEntry:
    """One row of the background table: where the picture is, and the caption phrases."""

    source: str  # a Debian package name, or "skimage"
    path: str  # file inside the unpacked package, or the scikit-image texture's name
    short: str  # "on grass" ("" when the background is not named)
    the: str  # "on the grass", used after "there is ..."
    note: str


def _rows(path: pathlib.Path) -> Iterable[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if row and not row[0].startswith("#"):
                yield row + [""] * (5 - len(row))


@functools.cache
def stamp_table() -> dict[str, StampEntry]:
    """The reviewed noun table: stamp key -> entry."""
    table = {}
    for key, noun, plural, note, _ in _rows(STAMP_TABLE):
        used = noun != "-"
        table[key] = StampEntry(key, noun if used else None, plural if used else None, note)
    return table


@functools.cache
def background_table() -> tuple[BackgroundEntry, ...]:
    """The reviewed background table, in file order."""
    return tuple(BackgroundEntry(*row[:5]) for row in _rows(BACKGROUND_TABLE))


def structural_skip(root: pathlib.Path, png: pathlib.Path) -> str | None:
    """Why a stamp is skipped before the table is asked (None: not skipped)."""
    parts = png.relative_to(root).parts
    if parts[0] == "symbols":
        return "symbols"
    if "cartoon" in parts[:-1]:
        return "cartoon"
    if png.stem.endswith("_mirror"):
        return "mirrored duplicate"
    dat = png.with_suffix(".dat")
    if dat.exists():
        options = dat.read_text(encoding="utf-8", errors="replace").lower()
        if "tint" in options or "colorable" in options:
            return "tint template"
    with Image.open(png) as image:
        if image.mode in ("1", "L", "LA", "I", "I;16"):
            return "greyscale"
    return None


def select_stamps(root: str | os.PathLike) -> tuple[list[Stamp], list[str]]:
    """The usable stamps under ``root`` (sorted by key) and the keys the table does not know.

    A stamp that passes the file checks but is missing from the table (a newer package) is
    left out and reported, never guessed at.
    """
    root = pathlib.Path(root)
    table = stamp_table()
    stamps: list[Stamp] = []
    unknown: list[str] = []
    for png in sorted(root.rglob("*.png")):
        if structural_skip(root, png) is not None:
            continue
        key = png.relative_to(root).with_suffix("").as_posix()
        entry = table.get(key)
        if entry is None:
            unknown.append(key)
        elif entry.noun is not None:
            stamps.append(Stamp(key, str(png), entry.noun, entry.plural or entry.noun + "s"))
    if unknown:
        logger.warning(
            "%d stamps are not in the reviewed noun table and are left out: %s",
            len(unknown),
            ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else ""),
        )
    return stamps, unknown


@functools.cache
def stamp_image(path: str) -> Image.Image:
    """A stamp as RGBA, cropped to its opaque pixels and at most 640 pixels on a side."""
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is not None:
        image = image.crop(box)
    if max(image.size) > _MAX_STAMP_SIDE:
        image.thumbnail((_MAX_STAMP_SIDE, _MAX_STAMP_SIDE), Image.LANCZOS)
    return image


def package_backgrounds(folders: Iterable[str | os.PathLike]) -> list[tuple[BackgroundEntry, str]]:
    """The table's package backgrounds found under ``folders``: (entry, file) pairs.

    A folder may be where one package was unpacked or where several were unpacked together.
    """
    found = []
    roots = [pathlib.Path(f) for f in folders]
    for entry in background_table():
        if entry.source == "skimage":
            continue
        for root in roots:
            path = root / entry.path
            if path.is_file():
                found.append((entry, str(path)))
                break
    return found


@functools.cache
def load_photo_background(path: str) -> np.ndarray:
    """A background photograph as uint8 RGB, at most 1024 pixels on a side."""
    with Image.open(path) as image:
        image.draft("RGB", (_MAX_BACKGROUND_SIDE, _MAX_BACKGROUND_SIDE))  # JPEG: decode small
        rgb = image.convert("RGB")
    if max(rgb.size) > _MAX_BACKGROUND_SIDE:
        rgb.thumbnail((_MAX_BACKGROUND_SIDE, _MAX_BACKGROUND_SIDE), Image.LANCZOS)
    return np.asarray(rgb)
