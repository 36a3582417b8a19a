"""What is in a synthetic scene, where, and what its captions say (no pixels, no files).

A scene is a background and one object, a count of two or three identical objects, or two
different objects in a clear spatial relation (left of / above). Objects are drawn shapes in
a small colour palette or photo objects, each small or large. Every scene has 4-5 reference
captions written from a fixed set of templates, so the same scene always yields the same
references, and every word of them can be read from the pixels.

A few attribute-object combinations (:data:`NOVEL_COMBINATIONS`) are held out: with
``novel=False`` :func:`sample_scene` never draws them, with ``novel=True`` at least one is in
the scene, to measure compositional generalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from captioner.data.synth import BACKGROUNDS, PHOTO_KINDS, SHAPE_KINDS, object_size

__all__ = [
    "COLOURS",
    "LAYOUTS",
    "NOVEL_COMBINATIONS",
    "SIZES",
    "novel_combinations_in",
    "sample_scene",
    "scene_captions",
]

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
        sizes.append(object_size(obj, round(frac * image_size)))

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
