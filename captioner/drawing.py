"""Pictures drawn with Pillow for reports and training curves: fonts, colours, heatmaps.

Nothing here needs matplotlib.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

THUMB_SIDE = 256  # longest side of the images copied into a caption report
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
# Anchors of a perceptually ordered dark-blue -> yellow heat scale (close to viridis).
_HEAT = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float32
)


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB colours of the heat scale, shape (..., 3)."""
    pos = np.clip(values, 0.0, 1.0) * (len(_HEAT) - 1)
    lo = np.minimum(pos.astype(np.int64), len(_HEAT) - 2)
    frac = (pos - lo)[..., None]
    return (_HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac).round().astype(np.uint8)


_HEAT_LUT = heat_colours(np.linspace(0.0, 1.0, 256)).astype(np.float32)


def attention_overlay(
    image: Image.Image, weights: np.ndarray, strength: float = 0.6
) -> Image.Image:
    """The image with one word's attention grid (rows, cols) upsampled and blended as a heatmap.

    The encoder sees the whole image resized (no crop), so the grid spans the whole picture.
    Weights are scaled to their maximum: the picture shows where the word looked, not how
    sharply. Returns an RGB image of the input's size.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    grid = np.asarray(weights, dtype=np.float32)
    grid = grid / grid.max() if grid.max() > 0 else grid
    up = Image.fromarray(grid).resize(image.size, Image.Resampling.BILINEAR)  # mode F
    a = np.clip(np.asarray(up), 0.0, 1.0)[..., None]  # (H, W, 1)
    heat = _HEAT_LUT[(a[..., 0] * 255).astype(np.uint8)]  # (H, W, 3)
    # Dim what the word ignored, tint what it attended: readable on dark and bright images.
    shaded = rgb * (0.45 + 0.55 * a)
    out = shaded * (1 - strength * a) + heat * (strength * a)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def thumbnail(path: Path, side: int = THUMB_SIDE) -> Image.Image:
    with Image.open(path) as img:
        img.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, much faster
        thumb = img.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    return thumb
