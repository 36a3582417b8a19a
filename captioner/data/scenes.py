"""A synthetic captioning dataset whose captions are fully determined by the pixels.

Each image is a real texture (grass, gravel, brick from scikit-image) or a plain light/dark
background, with one object, a count of two or three identical objects, or two different
objects in a clear spatial relation. Objects are either crops of scikit-image's sample photos
(a cat, a coffee cup, a rocket, an astronaut, a cameraman, a colour-filled horse silhouette)
or drawn shapes in a small colour palette. Every image has 4-5 references written from a
fixed set of templates, so the same scene always yields the same references.

A few attribute-object combinations (:data:`NOVEL_COMBINATIONS`) never appear in the
train/val/test splits; the ``novel`` split holds only scenes that contain at least one of
them, to measure compositional generalisation.

Splits are independent: each image draws from its own RNG derived from
``(seed, split name, index)``, so changing ``n_train`` leaves the test split byte-identical.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pathlib
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "GENERATOR_VERSION",
    "NOVEL_COMBINATIONS",
    "PHOTO_KINDS",
    "SHAPE_KINDS",
    "SIZES",
    "SPLITS",
    "generate_scenes",
    "novel_combinations_in",
    "render_scene",
    "sample_scene",
    "scene_captions",
]

logger = logging.getLogger(__name__)

GENERATOR_NAME = "captioner.data.scenes"
GENERATOR_VERSION = "1.0"
SPLITS: tuple[str, ...] = ("train", "val", "test", "novel")

BACKGROUNDS: tuple[str, ...] = ("grass", "gravel", "brick", "light", "dark")
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star")
PHOTO_KINDS: tuple[str, ...] = ("cat", "cup", "rocket", "astronaut", "horse", "cameraman")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SIZES: tuple[str, ...] = ("small", "large")

#: Attribute-object pairs held out of train/val/test; the ``novel`` split has only scenes
#: containing at least one of them. Each reads as it appears in a caption ("a small blue
#: triangle", "two small horses"): the attribute is a colour or a size, then the kind's noun.
NOVEL_COMBINATIONS: tuple[str, ...] = (
    "blue triangle",
    "yellow square",
    "green circle",
    "small horse",
)

LAYOUTS: tuple[str, ...] = ("single", "count", "relation")
_LAYOUT_P = (0.35, 0.30, 0.35)
_SHAPE_P = 0.6  # probability that an object is a drawn shape rather than a photo

# Object side as a fraction of the image side: kept far apart so size is unambiguous.
_SIZE_RANGE = {"small": (0.20, 0.27), "large": (0.40, 0.47)}

_NOUNS = {
    "circle": ("circle", "circles"),
    "square": ("square", "squares"),
    "triangle": ("triangle", "triangles"),
    "star": ("star", "stars"),
    "cat": ("cat", "cats"),
    "cup": ("coffee cup", "coffee cups"),
    "rocket": ("rocket", "rockets"),
    "astronaut": ("astronaut", "astronauts"),
    "horse": ("horse", "horses"),
    "cameraman": ("cameraman", "cameramen"),
}

# (short phrase, phrase used after "there is" / "can be seen")
_BACKGROUND_PHRASES = {
    "grass": ("on grass", "on the grass"),
    "gravel": ("on gravel", "on the gravel"),
    "brick": ("on a brick wall", "in front of a brick wall"),
    "light": ("on a light background", "on a plain light background"),
    "dark": ("on a dark background", "on a plain dark background"),
}

_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}

_PALETTE = {
    "red": (212, 38, 34),
    "green": (44, 168, 62),
    "blue": (36, 78, 212),
    "yellow": (246, 208, 32),
}

# Grayscale texture -> colour: lerp between a dark and a light tint.
_TEXTURE_TINTS = {
    "grass": ((28, 52, 14), (150, 192, 72)),
    "gravel": ((46, 43, 38), (214, 205, 190)),
    "brick": ((78, 34, 27), (214, 140, 112)),
}
_PLAIN_COLOURS = {"light": (226, 223, 216), "dark": (42, 43, 50)}

_HORSE_FILLS = ((140, 86, 46), (236, 230, 218), (34, 28, 26))  # chestnut, grey-white, black

# Photo crops as (row0, row1, col0, col1) in the scikit-image sample, and the cut-out shape.
_PHOTO_CROPS = {
    "cat": ("chelsea", (0, 300, 40, 380), "ellipse"),
    "cup": ("coffee", (15, 395, 70, 490), "ellipse"),
    "rocket": ("rocket", (110, 420, 170, 470), "rect"),
    "astronaut": ("astronaut", (0, 420, 50, 410), "rect"),
    "cameraman": ("camera", (40, 512, 0, 360), "rect"),
}

_SUPERSAMPLE = 4


# ----------------------------------------------------------------------------- scenes


def _parse_combination(combo: str) -> tuple[str, str]:
    attribute, noun = combo.split(" ", 1)
    kind = next(k for k, (singular, _) in _NOUNS.items() if singular == noun)
    return attribute, kind


_NOVEL_PAIRS: tuple[tuple[str, str], ...] = tuple(_parse_combination(c) for c in NOVEL_COMBINATIONS)


def novel_combinations_in(scene: dict[str, Any]) -> list[str]:
    """Return the held-out combinations (from :data:`NOVEL_COMBINATIONS`) present in a scene."""
    found = []
    for combo, (attribute, kind) in zip(NOVEL_COMBINATIONS, _NOVEL_PAIRS, strict=True):
        for obj in scene["objects"]:
            if obj["kind"] == kind and attribute in (obj["colour"], obj["size"]):
                found.append(combo)
                break
    return found


def _is_novel(obj: dict[str, Any]) -> bool:
    return any(
        obj["kind"] == kind and attribute in (obj["colour"], obj["size"])
        for attribute, kind in _NOVEL_PAIRS
    )


def _visible_on(obj: dict[str, Any], background: str) -> bool:
    # A green shape on grass is hard to see; keep every caption readable from the pixels.
    return not (obj["colour"] == "green" and background == "grass")


def _random_object(rng: np.random.Generator) -> dict[str, Any]:
    if rng.random() < _SHAPE_P:
        kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
        colour: str | None = COLOURS[rng.integers(len(COLOURS))]
        family = "shape"
    else:
        kind = PHOTO_KINDS[rng.integers(len(PHOTO_KINDS))]
        colour = None
        family = "photo"
    size = SIZES[rng.integers(len(SIZES))]
    return {"kind": kind, "family": family, "colour": colour, "size": size}


def _held_out_object(rng: np.random.Generator, background: str) -> dict[str, Any]:
    while True:
        attribute, kind = _NOVEL_PAIRS[rng.integers(len(_NOVEL_PAIRS))]
        family = "shape" if kind in SHAPE_KINDS else "photo"
        if attribute in SIZES:
            size = attribute
            colour = COLOURS[rng.integers(len(COLOURS))] if family == "shape" else None
        else:
            colour = attribute
            size = SIZES[rng.integers(len(SIZES))]
        obj = {"kind": kind, "family": family, "colour": colour, "size": size}
        if _visible_on(obj, background):
            return obj


def _seen_object(rng: np.random.Generator, background: str, allow_novel: bool) -> dict[str, Any]:
    while True:
        obj = _random_object(rng)
        if _visible_on(obj, background) and (allow_novel or not _is_novel(obj)):
            return obj


def _box_size(obj: dict[str, Any], frac: float, image_size: int) -> tuple[int, int]:
    side = round(frac * image_size)
    if obj["family"] == "shape":
        return side, side
    aspect = _photo_aspect(obj["kind"])  # width / height
    if aspect >= 1.0:
        return side, max(1, round(side / aspect))
    return max(1, round(side * aspect)), side


def _place(cx: float, cy: float, wh: tuple[int, int]) -> list[int]:
    w, h = wh
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    return [int(x0), int(y0), int(x0 + w), int(y0 + h)]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo if hi <= lo else rng.uniform(lo, hi))


def _layout_single(
    rng: np.random.Generator,
    objs: list[dict[str, Any]],
    sizes: list[tuple[int, int]],
    image_size: int,
) -> None:
    (w, h), m = sizes[0], 2
    cx = _uniform(rng, w / 2 + m, image_size - w / 2 - m)
    cy = _uniform(rng, h / 2 + m, image_size - h / 2 - m)
    objs[0]["box"] = _place(cx, cy, (w, h))


def _layout_count(
    rng: np.random.Generator,
    objs: list[dict[str, Any]],
    sizes: list[tuple[int, int]],
    image_size: int,
) -> None:
    # One object per grid cell (3x3 for small, 2x2 for large) so they never overlap.
    cells_per_side = 3 if objs[0]["size"] == "small" else 2
    cell = image_size / cells_per_side
    chosen = rng.choice(cells_per_side**2, size=len(objs), replace=False)
    # Row-major order keeps the object list in reading order.
    for obj, wh, index in zip(objs, sizes, sorted(int(i) for i in chosen), strict=True):
        row, col = divmod(index, cells_per_side)
        w, h = wh
        cx = _uniform(rng, col * cell + w / 2 + 1, (col + 1) * cell - w / 2 - 1)
        cy = _uniform(rng, row * cell + h / 2 + 1, (row + 1) * cell - h / 2 - 1)
        obj["box"] = _place(cx, cy, wh)


def _layout_relation(
    rng: np.random.Generator,
    objs: list[dict[str, Any]],
    sizes: list[tuple[int, int]],
    image_size: int,
    axis: str,
) -> None:
    # objs[0] is left of (or above) objs[1]. Along the axis the boxes are separated by a gap
    # and the centres by at least a third of the image (over two cells of a 7x7 grid); across
    # the axis the centres stay within a tenth of the image, so the relation is unambiguous.
    m, s = 2, image_size
    along = 0 if axis == "horizontal" else 1
    across = 1 - along
    a0, a1 = sizes[0][along], sizes[1][along]
    sep = max(0.33 * s, (a0 + a1) / 2 + 0.03 * s)
    c0 = _uniform(rng, a0 / 2 + m, s - m - a1 / 2 - sep)
    c1 = _uniform(rng, c0 + sep, s - m - a1 / 2)
    big = max(sizes[0][across], sizes[1][across])
    mid = _uniform(rng, big / 2 + m, s - big / 2 - m)
    centres_across = []
    for wh in sizes:
        half = wh[across] / 2
        centres_across.append(
            float(np.clip(mid + rng.uniform(-0.05, 0.05) * s, half + m, s - half - m))
        )
    for obj, wh, c_along, c_across in zip(objs, sizes, (c0, c1), centres_across, strict=True):
        cx, cy = (c_along, c_across) if along == 0 else (c_across, c_along)
        obj["box"] = _place(cx, cy, wh)


def sample_scene(
    rng: np.random.Generator, novel: bool = False, image_size: int = 224
) -> dict[str, Any]:
    """Draw a random scene description (background, objects with boxes, layout, relation).

    With ``novel=False`` no object matches :data:`NOVEL_COMBINATIONS`; with ``novel=True`` at
    least one does. Boxes are ``[x0, y0, x1, y1]`` in pixels (x1, y1 exclusive).
    """
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    layout = LAYOUTS[rng.choice(len(LAYOUTS), p=_LAYOUT_P)]

    def first() -> dict[str, Any]:
        return _held_out_object(rng, background) if novel else _seen_object(rng, background, False)

    relation = None
    if layout == "single":
        objs = [first()]
    elif layout == "count":
        n = int(rng.integers(2, 4))
        proto = first()
        objs = [dict(proto) for _ in range(n)]
    else:
        a = first()
        while True:
            b = _seen_object(rng, background, allow_novel=novel)
            if (b["kind"], b["colour"], b["size"]) != (a["kind"], a["colour"], a["size"]):
                break
        objs = [a, b] if rng.random() < 0.5 else [b, a]
        axis = "horizontal" if rng.random() < 0.5 else "vertical"
        relation = {
            "type": "left of" if axis == "horizontal" else "above",
            "subject": 0,
            "object": 1,
        }

    frac = _uniform(rng, *_SIZE_RANGE[objs[0]["size"]])
    sizes = []
    for i, obj in enumerate(objs):
        if layout == "relation" and i > 0:
            frac = _uniform(rng, *_SIZE_RANGE[obj["size"]])
        sizes.append(_box_size(obj, frac, image_size))

    if layout == "single":
        _layout_single(rng, objs, sizes, image_size)
    elif layout == "count":
        _layout_count(rng, objs, sizes, image_size)
    else:
        _layout_relation(rng, objs, sizes, image_size, axis)

    scene = {
        "background": background,
        "layout": layout,
        "count": len(objs),
        "objects": objs,
        "relation": relation,
    }
    scene["novel_combinations"] = novel_combinations_in(scene)
    return scene


# ----------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(obj: dict[str, Any], plural: bool = False) -> str:
    noun = _NOUNS[obj["kind"]][1 if plural else 0]
    words = [obj["size"]] + ([obj["colour"]] if obj["colour"] else []) + [noun]
    return " ".join(words)


def _with_article(obj: dict[str, Any]) -> str:
    phrase = _phrase(obj)
    return f"{_article(phrase)} {phrase}"


def scene_captions(scene: dict[str, Any]) -> list[str]:
    """Return the reference captions of a scene: always the same list for the same scene."""
    short, the = _BACKGROUND_PHRASES[scene["background"]]
    objs = scene["objects"]
    if scene["layout"] == "single":
        x = _with_article(objs[0])
        return [
            f"{x} {short}",
            f"there is {x} {the}",
            f"a picture of {x} {short}",
            f"{x} can be seen {the}",
            f"one {_phrase(objs[0])} {short}",
        ]
    if scene["layout"] == "count":
        n = len(objs)
        num, p = _NUMBER_WORDS[n], _phrase(objs[0], plural=True)
        group = "a pair of" if n == 2 else "a group of three"
        return [
            f"{num} {p} {short}",
            f"there are {num} {p} {the}",
            f"a picture of {num} {p} {short}",
            f"{num} {p} can be seen {the}",
            f"{group} {p} {short}",
        ]
    rel = scene["relation"]
    a = _with_article(objs[rel["subject"]])
    b = _with_article(objs[rel["object"]])
    if rel["type"] == "left of":
        return [
            f"{a} to the left of {b} {short}",
            f"{b} to the right of {a} {short}",
            f"there is {a} to the left of {b}",
            f"{a} on the left and {b} on the right",
        ]
    return [
        f"{a} above {b} {short}",
        f"{b} below {a} {short}",
        f"there is {a} above {b}",
        f"{a} at the top and {b} at the bottom",
    ]


# ----------------------------------------------------------------------------- assets


def _skimage_sample(name: str) -> np.ndarray:
    import skimage.data  # deferred: loading scikit-image is slow and only needed to render

    return np.asarray(getattr(skimage.data, name)())


@functools.cache
def _texture(name: str) -> np.ndarray:
    """Grayscale texture as float32 in [0, 1], contrast-stretched."""
    gray = _skimage_sample(name).astype(np.float32)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=2)
    lo, hi = np.percentile(gray, (1, 99))
    return np.clip((gray - lo) / max(hi - lo, 1.0), 0.0, 1.0)


@functools.cache
def _photo_source(kind: str) -> tuple[Image.Image, str]:
    """The cropped photo (or the horse's mask) as a PIL image, and its cut-out shape."""
    if kind == "horse":
        mask = ~_skimage_sample("horse").astype(bool)  # the silhouette is the False pixels
        rows, cols = np.nonzero(mask)
        crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        return Image.fromarray((crop * 255).astype(np.uint8)), "mask"
    name, (r0, r1, c0, c1), cut = _PHOTO_CROPS[kind]
    pixels = _skimage_sample(name)[r0:r1, c0:c1]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3])), cut


def _photo_aspect(kind: str) -> float:
    image, _ = _photo_source(kind)
    return image.width / image.height


# ----------------------------------------------------------------------------- rendering


def _tint(gray: np.ndarray, dark: np.ndarray, light: np.ndarray) -> np.ndarray:
    return dark + (light - dark) * gray[..., None]


def _render_background(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    if name in _TEXTURE_TINTS:
        tex = _texture(name)
        crop = int(rng.integers(min(240, tex.shape[0]), tex.shape[0] + 1))
        y0 = int(rng.integers(0, tex.shape[0] - crop + 1))
        x0 = int(rng.integers(0, tex.shape[1] - crop + 1))
        patch = Image.fromarray(tex[y0 : y0 + crop, x0 : x0 + crop])
        gray = np.asarray(patch.resize((size, size), Image.BILINEAR), dtype=np.float32)
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
        if rng.random() < 0.5:
            gray = gray[::-1, :]
        dark, light = (np.asarray(c, dtype=np.float32) for c in _TEXTURE_TINTS[name])
        jitter = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
        return _tint(gray, dark * jitter, light * jitter)
    base = np.asarray(_PLAIN_COLOURS[name], dtype=np.float32) + rng.uniform(-8, 8, size=3)
    # A faint linear gradient, as if lit from one side.
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    field = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    return base[None, None, :] + (6.0 * field)[..., None]


def _shading(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A gentle multiplicative light gradient, (h, w, 1)."""
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.05, 0.15)
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
    field = np.cos(angle) * xs[None, :] + np.sin(angle) * ys[:, None]
    return (1.0 + strength * field)[..., None]


def _shape_outline(kind: str, side: float) -> list[tuple[float, float]] | None:
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


def _shape_masks(kind: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased (full, inner) masks in [0, 1]; the difference is the darker outline."""
    big = (w * _SUPERSAMPLE, h * _SUPERSAMPLE)
    edge = max(1, round(0.05 * w)) * _SUPERSAMPLE
    full = Image.new("L", big, 0)
    inner = Image.new("L", big, 0)
    polygon = _shape_outline(kind, big[0])
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
                draw.line(polygon + [polygon[0]], fill=0, width=border, joint="curve")
    to_array = [
        np.asarray(m.resize((w, h), Image.BOX), dtype=np.float32) / 255.0 for m in (full, inner)
    ]
    return to_array[0], np.minimum(to_array[1], to_array[0])


def _cutout_mask(cut: str, w: int, h: int) -> np.ndarray:
    if cut == "rect":
        mask = np.ones((h, w), dtype=np.float32)
        mask[[0, -1], :] *= 0.5  # soften the edge a little
        mask[:, [0, -1]] *= 0.5
        return mask
    big = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    ImageDraw.Draw(big).ellipse((0, 0, big.width - 1, big.height - 1), fill=255)
    return np.asarray(big.resize((w, h), Image.BOX), dtype=np.float32) / 255.0


def _render_object(
    rng: np.random.Generator, obj: dict[str, Any], background_mean: float
) -> tuple[np.ndarray, np.ndarray]:
    """The object's pixels (h, w, 3) float32 and its alpha (h, w) in [0, 1]."""
    x0, y0, x1, y1 = obj["box"]
    w, h = x1 - x0, y1 - y0
    if obj["family"] == "shape":
        full, inner = _shape_masks(obj["kind"], w, h)
        fill = np.asarray(_PALETTE[obj["colour"]], dtype=np.float32) + rng.uniform(-12, 12, 3)
        fill = fill[None, None, :] * _shading(rng, w, h)
        edge = fill * 0.55
        rgb = edge + (fill - edge) * inner[..., None]
        return np.clip(rgb, 0, 255), full
    source, cut = _photo_source(obj["kind"])
    flip = rng.random() < 0.5
    resized = source.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    if flip:
        resized = resized.transpose(Image.FLIP_LEFT_RIGHT)
    if cut == "mask":
        alpha = np.asarray(resized, dtype=np.float32) / 255.0
        # The horse's coat is chosen to stand out from the background, so it is always visible.
        fills = [f for f in _HORSE_FILLS if abs(np.mean(f) - background_mean) > 60] or [
            max(_HORSE_FILLS, key=lambda f: abs(np.mean(f) - background_mean))
        ]
        coat = np.asarray(fills[rng.integers(len(fills))], dtype=np.float32)
        coat = coat + rng.uniform(-10, 10, 3)
        return np.clip(coat[None, None, :] * _shading(rng, w, h), 0, 255), alpha
    rgb = np.asarray(resized, dtype=np.float32) * rng.uniform(0.9, 1.1)
    return np.clip(rgb, 0, 255), _cutout_mask(cut, w, h)


def render_scene(
    scene: dict[str, Any], rng: np.random.Generator, image_size: int = 224
) -> Image.Image:
    """Render a scene from :func:`sample_scene` as an RGB image (``image_size`` square).

    ``rng`` drives only the look (texture crop, tints, shading, flips), never the content.
    """
    canvas = _render_background(rng, scene["background"], image_size)
    layers = [_render_object(rng, obj, float(canvas.mean())) for obj in scene["objects"]]

    # Soft drop shadows first, so objects look like they rest on the background.
    shadow = np.zeros((image_size, image_size), dtype=np.float32)
    offset = max(2, round(0.015 * image_size))
    for obj, (_, alpha) in zip(scene["objects"], layers, strict=True):
        x0, y0, x1, y1 = obj["box"]
        sx0, sy0 = x0 + offset, y0 + offset
        sx1, sy1 = min(x1 + offset, image_size), min(y1 + offset, image_size)
        region = shadow[sy0:sy1, sx0:sx1]
        np.maximum(region, alpha[: sy1 - sy0, : sx1 - sx0], out=region)
    shadow_image = Image.fromarray((shadow * 255.0 + 0.5).astype(np.uint8))
    blurred = np.asarray(shadow_image.filter(ImageFilter.BoxBlur(offset)), dtype=np.float32)
    canvas *= 1.0 - (0.35 / 255.0) * blurred[..., None]

    for obj, (rgb, alpha) in zip(scene["objects"], layers, strict=True):
        x0, y0, x1, y1 = obj["box"]
        a = alpha[..., None]
        region = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = region + (rgb - region) * a
    pixels = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class _SplitSpec:
    name: str
    count: int


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # crc32, not hash(): Python's string hash changes between processes.
    return np.random.default_rng([seed, zlib.crc32(split.encode("ascii")), index])


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _write_json(path: pathlib.Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _generate_split(
    out: pathlib.Path, spec: _SplitSpec, seed: int, image_size: int, progress: bool
) -> pathlib.Path:
    image_dir = out / "images" / spec.name
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in tqdm(
        range(spec.count),
        desc=f"scenes {spec.name}",
        unit="img",
        file=sys.stderr,
        disable=not progress or spec.count == 0,
    ):
        rng = _image_rng(seed, spec.name, index)
        scene = sample_scene(rng, novel=spec.name == "novel", image_size=image_size)
        file_name = f"{spec.name}/{index:06d}.jpg"
        render_scene(scene, rng, image_size).save(out / "images" / file_name, quality=92)
        images.append(
            {
                "id": index,
                "file_name": file_name,
                "width": image_size,
                "height": image_size,
                "scene": scene,
            }
        )
        for caption in scene_captions(scene):
            annotations.append({"id": len(annotations), "image_id": index, "caption": caption})
    payload = {
        "info": {
            "description": "synthetic scenes with template captions",
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "split": spec.name,
            "count": spec.count,
            "image_size": image_size,
            "novel_combinations": list(NOVEL_COMBINATIONS),
        },
        "images": images,
        "annotations": annotations,
    }
    path = out / f"{spec.name}.json"
    _write_json(path, payload)
    logger.info(
        "wrote %d %s images and %d captions to %s", spec.count, spec.name, len(annotations), path
    )
    return path


def generate_scenes(
    out_dir: str | os.PathLike,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    n_novel: int,
    image_size: int = 224,
    progress: bool = True,
) -> dict[str, pathlib.Path]:
    """Write the synthetic captioning dataset under ``out_dir`` and return ``{split: json path}``.

    Images go to ``out_dir/images/<split>/<index:06d>.jpg`` (RGB JPEG, quality 92) and the
    captions to ``out_dir/<split>.json`` in COCO captions format, each image entry carrying its
    structured ``scene``. The same seed and counts give identical files; each split (indeed each
    image) has its own RNG, so one split does not change when another's count does.
    """
    seed = _check_count("seed", seed)
    counts = {
        "train": _check_count("n_train", n_train),
        "val": _check_count("n_val", n_val),
        "test": _check_count("n_test", n_test),
        "novel": _check_count("n_novel", n_novel),
    }
    image_size = _check_count("image_size", image_size)
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {image_size}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        split: _generate_split(out, _SplitSpec(split, counts[split]), seed, image_size, progress)
        for split in SPLITS
    }
