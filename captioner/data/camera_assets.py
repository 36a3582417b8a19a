"""The pictures camera clips are made of: wallpapers from Debian packages, scikit-image's
photographs, and the object bank's stamp cut-outs.

Backgrounds are every raster wallpaper of ``plasma-workspace-wallpapers`` (one size per
wallpaper, the one nearest 1920x1080), ``gnome-backgrounds`` and ``desktop-base`` (its themes'
16:9 pictures), found by the packages' own folder layout, and the scikit-image photographs in
:data:`SKIMAGE_PHOTOS`. Any camera motion reads on any picture with texture, so no table
says which to use; flat pictures are skipped per clip by :func:`texture_share` instead.
Stamps are chosen as the object bank chooses them
(:func:`~captioner.data.objects_bank.select_stamps`).
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from captioner.data.objects_bank import load_photo_background, select_stamps
from captioner.data.objects_fetch import (
    BACKGROUND_PACKAGES,
    STAMPS_PACKAGE,
    background_folders,
    stamps_root,
)

__all__ = [
    "CAMERA_PACKAGES",
    "SKIMAGE_PHOTOS",
    "CameraAssets",
    "find_backgrounds",
    "load_camera_assets",
    "skimage_backgrounds",
    "texture_share",
]

CAMERA_PACKAGES: tuple[str, ...] = (*BACKGROUND_PACKAGES, "desktop-base")
#: scikit-image's photographs (files in ``skimage.data.data_dir``) used as backgrounds.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "grass.png",
    "gravel.png",
    "motorcycle_left.png",
    "rocket.jpg",
)
# (package, glob below the unpacked root); plasma's sizes are thinned to one per wallpaper.
_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/*/contents/images/*"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/*"),
    ("desktop-base", "usr/share/desktop-base/*-theme/grub/grub-16x9.png"),
)
_RASTER = {".jpg", ".jpeg", ".png", ".webp"}
_SIZE = re.compile(r"(\d+)x(\d+)")
_CELL = 16  # photo pixels per texture cell (at the 1024-pixel working size)
_CORNER = 2.0  # mean smaller eigenvalue that makes a cell textured


@dataclass(frozen=True)
class CameraAssets:
    """What a run draws from: ``backgrounds`` as (name, file) pairs, and stamps by category
    (``categories``: category -> stamp keys; ``stamp_files``: key -> file)."""

    backgrounds: tuple[tuple[str, str], ...]
    categories: dict[str, list[str]] = field(default_factory=dict)
    stamp_files: dict[str, str] = field(default_factory=dict)


def _nearest_hd(files: Sequence[pathlib.Path]) -> pathlib.Path:
    # Plasma ships each wallpaper in many sizes: decode the one nearest full HD.
    def distance(path: pathlib.Path) -> tuple[bool, float, str]:
        m = _SIZE.fullmatch(path.stem)
        w, h = (int(m[1]), int(m[2])) if m else (0, 1)
        return w < h, abs(np.log(max(w * h, 1) / (1920 * 1080))), path.name  # landscape first

    return min(files, key=distance)


def find_backgrounds(folders: Iterable[str | os.PathLike]) -> list[tuple[str, str]]:
    """The wallpapers under ``folders`` (each an unpacked package, or several unpacked
    together), as ``("<package>:<path in the package>", file)`` pairs in a fixed order."""
    found: dict[str, str] = {}
    for folder in folders:
        root = pathlib.Path(folder)
        for package, pattern in _LAYOUTS:
            files = sorted(p for p in root.glob(pattern) if p.suffix.lower() in _RASTER)
            if package == "plasma-workspace-wallpapers":
                groups: dict[pathlib.Path, list[pathlib.Path]] = {}
                for path in files:
                    groups.setdefault(path.parent, []).append(path)
                files = [_nearest_hd(group) for group in groups.values()]
            for path in files:
                found.setdefault(f"{package}:{path.relative_to(root).as_posix()}", str(path))
    return sorted(found.items())


def skimage_backgrounds() -> list[tuple[str, str]]:
    """:data:`SKIMAGE_PHOTOS` as ``("skimage:<file>", path)`` pairs."""
    import skimage.data  # deferred: only a run that renders needs it

    root = pathlib.Path(skimage.data.data_dir)
    return [(f"skimage:{name}", str(root / name)) for name in SKIMAGE_PHOTOS]


@functools.cache
def _texture_cells(path: str) -> np.ndarray:
    """Which 16-pixel cells of the (working-size) photo have texture in two directions,
    (rows, cols) bool: the structure tensor's smaller eigenvalue, as corner trackers use,
    so that wood grain or stripes, which show motion along one axis only, do not count."""
    grey = cv2.cvtColor(load_photo_background(path), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (grey.shape[1] // 4, grey.shape[0] // 4), interpolation=cv2.INTER_AREA)
    corners = cv2.cornerMinEigenVal(small, 5, 3)
    side = _CELL // 4
    rows, cols = corners.shape[0] // side, corners.shape[1] // side
    cells = corners[: rows * side, : cols * side].reshape(rows, side, cols, side)
    return cells.mean(axis=(1, 3)) > _CORNER


def texture_share(path: str, box: tuple[float, float, float, float]) -> float:
    """The share of textured cells in ``box`` (x0, y0, x1, y1 in working-size pixels):
    a camera move over a flat sky or a plain gradient cannot be seen, so such views are
    redrawn."""
    cells = _texture_cells(path)
    x0, y0, x1, y1 = (round(v / _CELL) for v in box)
    part = cells[max(y0, 0) : max(y1, y0 + 1), max(x0, 0) : max(x1, x0 + 1)]
    return float(part.mean()) if part.size else 0.0


def load_camera_assets(
    stamps: str | os.PathLike | None = None,
    backgrounds: str | os.PathLike | None = None,
    packages: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> CameraAssets:
    """The stamps and backgrounds of a run.

    ``packages``: a folder with each Debian package unpacked in a sub-folder of its name
    (as ``captioner data photos --packages`` takes it). Otherwise ``stamps`` is the stamps
    folder (default: fetched) and ``backgrounds`` a folder of unpacked background packages
    (``"none"``: scikit-image's photographs only; default: each package fetched, one that
    cannot be is left out with a warning).
    """
    if packages is not None:
        root = pathlib.Path(packages)
        if not root.is_dir():
            raise FileNotFoundError(f"--packages {root}: no such folder")
        stamp_root = stamps_root(
            root / STAMPS_PACKAGE if (root / STAMPS_PACKAGE).is_dir() else root
        )
        folders = [str(root / p) for p in CAMERA_PACKAGES if (root / p).is_dir()] or [str(root)]
    else:
        stamp_root = stamps_root(stamps, cache)
        folders = background_folders(backgrounds, cache, CAMERA_PACKAGES)
    found = find_backgrounds(folders)
    if backgrounds not in (None, "none") and not found:
        raise FileNotFoundError(
            f"--backgrounds {backgrounds}: no wallpapers found; expected where "
            f"{', '.join(CAMERA_PACKAGES)} were unpacked (dpkg -x PACKAGE.deb DIR)"
        )
    kept, _ = select_stamps(stamp_root)
    if not kept:
        raise ValueError(f"no usable stamps under {stamp_root} (is it {STAMPS_PACKAGE}?)")
    categories: dict[str, list[str]] = {}
    for stamp in kept:
        categories.setdefault(stamp.category, []).append(stamp.key)
    return CameraAssets(
        backgrounds=tuple(found + skimage_backgrounds()),
        categories=categories,
        stamp_files={s.key: s.path for s in kept},
    )
