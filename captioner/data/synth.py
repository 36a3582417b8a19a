"""Shared parts of the synthetic generators (scenes and motion clips).

The vocabulary both draw from (backgrounds, shapes, photo objects, the colour palette), the
assets (textures and photo crops from scikit-image's sample images), the pixel helpers that
paint a background and one object into a box, and the bookkeeping every writer needs: a
per-item RNG, count checks and atomic JSON files.

Everything that paints takes the RNG it should draw from, so the callers decide the order of
the draws (and with it the bytes of every image and clip).
"""

from __future__ import annotations

import functools
import json
import pathlib
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from captioner.files import atomic_write_text

__all__ = [
    "BACKGROUNDS",
    "HORSE_FILLS",
    "PALETTE",
    "PHOTO_CROPS",
    "PHOTO_KINDS",
    "PLAIN_COLOURS",
    "SHAPE_KINDS",
    "SUPERSAMPLE",
    "TEXTURE_TINTS",
    "check_count",
    "check_split_counts",
    "cutout_mask",
    "object_size",
    "photo_aspect",
    "photo_source",
    "render_background",
    "render_object",
    "seeded_rng",
    "shading",
    "shape_masks",
    "shape_outline",
    "skimage_sample",
    "texture",
    "tint",
    "write_json",
]

BACKGROUNDS: tuple[str, ...] = ("grass", "gravel", "brick", "light", "dark")
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star")
PHOTO_KINDS: tuple[str, ...] = ("cat", "cup", "rocket", "astronaut", "horse", "cameraman")

#: The drawn shapes' colours by name, RGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (212, 38, 34),
    "green": (44, 168, 62),
    "blue": (36, 78, 212),
    "yellow": (246, 208, 32),
}

#: Grayscale texture -> colour: lerp between a dark and a light tint.
TEXTURE_TINTS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "grass": ((28, 52, 14), (150, 192, 72)),
    "gravel": ((46, 43, 38), (214, 205, 190)),
    "brick": ((78, 34, 27), (214, 140, 112)),
}
PLAIN_COLOURS: dict[str, tuple[int, int, int]] = {"light": (226, 223, 216), "dark": (42, 43, 50)}

#: The horse silhouette's coats: chestnut, grey-white, black.
HORSE_FILLS: tuple[tuple[int, int, int], ...] = ((140, 86, 46), (236, 230, 218), (34, 28, 26))

#: Photo crops: kind -> (scikit-image sample, (row0, row1, col0, col1), cut-out shape).
PHOTO_CROPS: dict[str, tuple[str, tuple[int, int, int, int], str]] = {
    "cat": ("chelsea", (0, 300, 40, 380), "ellipse"),
    "cup": ("coffee", (15, 395, 70, 490), "ellipse"),
    "rocket": ("rocket", (110, 420, 170, 470), "rect"),
    "astronaut": ("astronaut", (0, 420, 50, 410), "rect"),
    "cameraman": ("camera", (40, 512, 0, 360), "rect"),
}

#: Masks are drawn this many times larger, then box-filtered down, for antialiased edges.
SUPERSAMPLE = 4


# ----------------------------------------------------------------------------- bookkeeping


def seeded_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """An RNG for one item, from the seed and its keys (split, class, index ...).

    Strings enter as their crc32, not ``hash()``: Python's string hash changes between
    processes, and the same item must get the same draws in every run.
    """
    parts = [seed] + [zlib.crc32(k.encode("ascii")) if isinstance(k, str) else k for k in keys]
    return np.random.default_rng(parts)


def check_count(name: str, value: object) -> int:
    """``value`` as an int; ValueError unless it is a non-negative integer (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_split_counts(
    seed: object,
    n_train: object,
    n_val: object,
    n_test: object,
    n_novel: object,
    image_size: object,
) -> tuple[int, dict[str, int], int]:
    """The captioning generators' shared arguments, checked: ``(seed, {split: count}, size)``."""
    seed = check_count("seed", seed)
    counts = {
        split: check_count(f"n_{split}", n)
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test), ("novel", n_novel))
    }
    size = check_count("image_size", image_size)
    if size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {size}")
    return seed, counts, size


def write_json(path: pathlib.Path, payload: dict[str, Any]) -> None:
    """Write compact JSON through a temporary name, so a reader never sees half a file."""
    atomic_write_text(path, json.dumps(payload, separators=(",", ":")) + "\n")


# ----------------------------------------------------------------------------- assets


def skimage_sample(name: str) -> np.ndarray:
    """One of scikit-image's sample images (``skimage.data.<name>()``) as an array."""
    import skimage.data  # deferred: loading scikit-image is slow and only needed to render

    return np.asarray(getattr(skimage.data, name)())


@functools.cache
def texture(name: str) -> np.ndarray:
    """Grayscale texture as float32 in [0, 1], contrast-stretched."""
    gray = skimage_sample(name).astype(np.float32)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=2)
    lo, hi = np.percentile(gray, (1, 99))
    return np.clip((gray - lo) / max(hi - lo, 1.0), 0.0, 1.0)


@functools.cache
def photo_source(kind: str) -> tuple[Image.Image, str]:
    """The cropped photo (or the horse's mask) as a PIL image, and its cut-out shape."""
    if kind == "horse":
        mask = ~skimage_sample("horse").astype(bool)  # the silhouette is the False pixels
        rows, cols = np.nonzero(mask)
        crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        return Image.fromarray((crop * 255).astype(np.uint8)), "mask"
    name, (r0, r1, c0, c1), cut = PHOTO_CROPS[kind]
    pixels = skimage_sample(name)[r0:r1, c0:c1]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3])), cut


def photo_aspect(kind: str) -> float:
    """Width / height of a photo object's source."""
    image, _ = photo_source(kind)
    return image.width / image.height


def object_size(obj: dict[str, Any], long_side: int) -> tuple[int, int]:
    """(width, height) in pixels of an object whose longer side is ``long_side``.

    Shapes are square; photos keep their source's aspect ratio.
    """
    if obj["family"] == "shape":
        return long_side, long_side
    aspect = photo_aspect(obj["kind"])  # width / height
    if aspect >= 1.0:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


# ----------------------------------------------------------------------------- painting


def tint(gray: np.ndarray, dark: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Colour a grayscale (h, w) field in [0, 1]: (h, w, 3) from ``dark`` (0) to ``light`` (1)."""
    return dark + (light - dark) * gray[..., None]


def render_background(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A ``size`` square background (h, w, 3) float: a tinted texture crop or a plain colour."""
    if name in TEXTURE_TINTS:
        tex = texture(name)
        crop = int(rng.integers(min(240, tex.shape[0]), tex.shape[0] + 1))
        y0 = int(rng.integers(0, tex.shape[0] - crop + 1))
        x0 = int(rng.integers(0, tex.shape[1] - crop + 1))
        patch = Image.fromarray(tex[y0 : y0 + crop, x0 : x0 + crop])
        gray = np.asarray(patch.resize((size, size), Image.BILINEAR), dtype=np.float32)
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
        if rng.random() < 0.5:
            gray = gray[::-1, :]
        dark, light = (np.asarray(c, dtype=np.float32) for c in TEXTURE_TINTS[name])
        jitter = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
        return tint(gray, dark * jitter, light * jitter)
    base = np.asarray(PLAIN_COLOURS[name], dtype=np.float32) + rng.uniform(-8, 8, size=3)
    # A faint linear gradient, as if lit from one side.
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    field = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    return base[None, None, :] + (6.0 * field)[..., None]


def shading(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A gentle multiplicative light gradient, (h, w, 1)."""
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.05, 0.15)
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
    field = np.cos(angle) * xs[None, :] + np.sin(angle) * ys[:, None]
    return (1.0 + strength * field)[..., None]


def shape_outline(kind: str, side: float) -> list[tuple[float, float]] | None:
    """Polygon vertices for a shape inside a ``side`` x ``side`` square; None for the circle."""
    c = side / 2
    if kind == "square":
        a, b = 0.06 * side, 0.94 * side
        return [(a, a), (b, a), (b, b), (a, b)]
    if kind == "triangle":
        return [(c, 0.04 * side), (0.97 * side, 0.9 * side), (0.03 * side, 0.9 * side)]
    if kind == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.49 * side, 0.2 * side)
        return [
            (c + r * np.cos(t), c + 0.04 * side + r * np.sin(t))
            for r, t in zip(radii, angles, strict=True)
        ]
    return None


def shape_masks(kind: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased (full, inner) masks in [0, 1]; the difference is the darker outline."""
    big = (w * SUPERSAMPLE, h * SUPERSAMPLE)
    edge = max(1, round(0.05 * w)) * SUPERSAMPLE
    full = Image.new("L", big, 0)
    inner = Image.new("L", big, 0)
    polygon = shape_outline(kind, big[0])
    for image, border in ((full, 0), (inner, edge)):
        draw = ImageDraw.Draw(image)
        if polygon is None:
            box = (0, 0, big[0] - 1, big[1] - 1)
            draw.ellipse(box, fill=255)
            if border:
                draw.ellipse(box, outline=0, width=border)
        else:
            draw.polygon(polygon, fill=255)
            if border:
                draw.line([*polygon, polygon[0]], fill=0, width=border, joint="curve")
    to_array = [
        np.asarray(m.resize((w, h), Image.BOX), dtype=np.float32) / 255.0 for m in (full, inner)
    ]
    return to_array[0], np.minimum(to_array[1], to_array[0])


def cutout_mask(cut: str, w: int, h: int) -> np.ndarray:
    """Alpha (h, w) in [0, 1] of a photo cut out as a ``rect`` or an ``ellipse``."""
    if cut == "rect":
        mask = np.ones((h, w), dtype=np.float32)
        mask[[0, -1], :] *= 0.5  # soften the edge a little
        mask[:, [0, -1]] *= 0.5
        return mask
    big = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
    ImageDraw.Draw(big).ellipse((0, 0, big.width - 1, big.height - 1), fill=255)
    return np.asarray(big.resize((w, h), Image.BOX), dtype=np.float32) / 255.0


def render_object(
    rng: np.random.Generator, obj: dict[str, Any], background_mean: float
) -> tuple[np.ndarray, np.ndarray]:
    """A shape or photo object painted into its ``box``: pixels (h, w, 3) and alpha (h, w).

    ``obj`` has ``family`` (``shape`` / ``photo``), ``kind``, ``colour`` (a :data:`PALETTE`
    name for shapes) and ``box`` ``[x0, y0, x1, y1]``; ``background_mean`` picks a horse coat
    that stands out.
    """
    x0, y0, x1, y1 = obj["box"]
    w, h = x1 - x0, y1 - y0
    if obj["family"] == "shape":
        full, inner = shape_masks(obj["kind"], w, h)
        fill = np.asarray(PALETTE[obj["colour"]], dtype=np.float32) + rng.uniform(-12, 12, 3)
        fill = fill[None, None, :] * shading(rng, w, h)
        edge = fill * 0.55
        rgb = edge + (fill - edge) * inner[..., None]
        return np.clip(rgb, 0, 255), full
    source, cut = photo_source(obj["kind"])
    flip = rng.random() < 0.5
    resized = source.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    if flip:
        resized = resized.transpose(Image.FLIP_LEFT_RIGHT)
    if cut == "mask":
        alpha = np.asarray(resized, dtype=np.float32) / 255.0
        # The horse's coat is chosen to stand out from the background, so it is always visible.
        fills = [f for f in HORSE_FILLS if abs(np.mean(f) - background_mean) > 60] or [
            max(HORSE_FILLS, key=lambda f: abs(np.mean(f) - background_mean))
        ]
        coat = np.asarray(fills[rng.integers(len(fills))], dtype=np.float32)
        coat = coat + rng.uniform(-10, 10, 3)
        return np.clip(coat[None, None, :] * shading(rng, w, h), 0, 255), alpha
    rgb = np.asarray(resized, dtype=np.float32) * rng.uniform(0.9, 1.1)
    return np.clip(rgb, 0, 255), cutout_mask(cut, w, h)
