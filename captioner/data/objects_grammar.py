"""What an object-bank scene holds, where, and what its captions say (no pixels, no files).

A scene is a background and photo cut-outs ("stamps"): most often one subject filling a
large part of the frame (sometimes cut by the border), else two or three of the same kind
side by side, two different kinds (one left of the other), or a group of three. Captions
give a count only when it is true ("two apples on grass"), never for one object, name the
background only when its table row names it, and use left/right for two different objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from captioner.vocab import SLOT, SLOTS

__all__ = [
    "COUNT_WORDS",
    "LAYOUTS",
    "object_captions",
    "sample_object_scene",
]

LAYOUTS: tuple[str, ...] = ("single", "count", "pair", "group")
_LAYOUT_P = (0.6, 0.15, 0.15, 0.10)
_CROP_P = 0.3  # one-subject scenes whose subject is cut by the border
# One-subject scenes framed like a portrait or a product shot: the subject is larger than the
# frame. Real photographs are mostly this, and without it a model reads a subject that fills
# every cell of the grid as two or three of them.
_CLOSE_UP_P = 0.25
_MAX_UPSCALE = 3.0

#: Words that state how many things there are; one-object captions contain none of them.
COUNT_WORDS: frozenset[str] = frozenset(
    {"one", "two", "three", "four", "five", "pair", "couple", "group", "several", "both", "row"}
)
_NUMBER_WORDS = {2: "two", 3: "three"}

# A category -> the stamps of that kind ({"key", "noun", "plural"} dicts)
Categories = dict[str, Sequence[dict[str, str]]]


def _pick(rng: np.random.Generator, items: Sequence) -> Any:
    return items[int(rng.integers(len(items)))]


def _object(rng: np.random.Generator, categories: Categories, category: str) -> dict[str, Any]:
    stamp = _pick(rng, categories[category])
    return {
        "category": category,
        "noun": stamp["noun"],
        "plural": stamp["plural"],
        "stamp": stamp["key"],
        "flip": bool(rng.random() < 0.5),
    }


def _size(native: tuple[int, int], long_side: float) -> tuple[int, int]:
    # A stamp is never drawn more than three times its own size: small ones would blur.
    long_side = min(long_side, _MAX_UPSCALE * max(native))
    aspect = native[0] / native[1]
    if aspect >= 1.0:
        return max(2, round(long_side)), max(2, round(long_side / aspect))
    return max(2, round(long_side * aspect)), max(2, round(long_side))


def _place_single(
    rng: np.random.Generator, obj: dict[str, Any], native: tuple[int, int], s: int
) -> dict[str, Any]:
    close_up = rng.random() < _CLOSE_UP_P
    w, h = _size(native, rng.uniform(1.0, 1.6) * s if close_up else rng.uniform(0.45, 0.95) * s)
    if close_up:
        # Centred within a fifth of the frame: a close-up keeps the middle of its subject.
        x0 = round((s - w) / 2 + rng.uniform(-0.2, 0.2) * s)
        y0 = round((s - h) / 2 + rng.uniform(-0.2, 0.2) * s)
        obj["cropped"] = bool(x0 < 0 or y0 < 0 or x0 + w > s or y0 + h > s)
    elif rng.random() < _CROP_P:
        # Let up to 35% of the object's width and height fall outside the frame.
        x0 = int(rng.integers(-round(0.35 * w), s - round(0.65 * w) + 1))
        y0 = int(rng.integers(-round(0.35 * h), s - round(0.65 * h) + 1))
        obj["cropped"] = bool(x0 < 0 or y0 < 0 or x0 + w > s or y0 + h > s)
    else:
        x0 = int(rng.integers(0, s - w + 1))
        y0 = int(rng.integers(0, s - h + 1))
        obj["cropped"] = False
    obj["box"] = [x0, y0, x0 + w, y0 + h]
    obj["frame_fraction"] = round(max(w, h) / s, 3)
    return obj


def _place_row(
    rng: np.random.Generator, objs: list[dict[str, Any]], natives: list[tuple[int, int]], s: int
) -> None:
    # One object per vertical slot, so boxes never overlap and left/right reads from x.
    n = len(objs)
    slot = s / n
    lo, hi = ((0.28, 0.46), (0.22, 0.32))[n - 2]
    for i, (obj, native) in enumerate(zip(objs, natives, strict=True)):
        w, h = _size(native, rng.uniform(lo, hi) * s)
        if w > slot - 4:  # too wide for its slot: shrink, keeping the aspect
            aspect = native[0] / native[1]
            w, h = _size(native, min(0.9 * s, (slot - 4) * max(1.0, 1.0 / aspect)))
        x_lo, x_hi = int(i * slot) + 2, int((i + 1) * slot) - w - 2
        x0 = int(rng.integers(x_lo, max(x_lo, x_hi) + 1))
        y0 = int(rng.integers(round(0.15 * s), max(round(0.15 * s), s - h - 2) + 1))
        y0 = min(y0, s - h)
        obj["box"] = [x0, y0, x0 + w, y0 + h]
        obj["cropped"] = False
        obj["frame_fraction"] = round(max(w, h) / s, 3)


def sample_object_scene(
    rng: np.random.Generator,
    categories: Categories,
    backgrounds: Sequence[dict[str, Any]],
    background_p: Sequence[float],
    stamp_size: Callable[[str], tuple[int, int]],
    image_size: int = 224,
    novel: Sequence[str] = (),
) -> dict[str, Any]:
    """Draw a scene: background, layout, objects with boxes ``[x0, y0, x1, y1]`` in pixels.

    ``categories`` maps each category allowed in this scene to its stamps;
    ``stamp_size(key)`` gives a stamp's (width, height) in pixels. With ``novel``
    (categories also in ``categories``) the scene holds at least one object of one of them.
    Boxes of a one-subject scene may reach past the border (``cropped``); boxes of several
    objects never overlap.
    """
    s = image_size
    background = dict(backgrounds[int(rng.choice(len(backgrounds), p=background_p))])
    layout = LAYOUTS[int(rng.choice(len(LAYOUTS), p=_LAYOUT_P))]
    names = sorted(categories)
    first = _pick(rng, list(novel)) if novel else _pick(rng, names)

    def other(exclude: Sequence[str]) -> str:
        left = [c for c in names if c not in exclude]
        return _pick(rng, left) if left else first

    if layout == "single" or (len(names) == 1 and layout in ("pair", "group")):
        layout = "single" if layout == "single" else "count"
    if layout == "single":
        objs = [_object(rng, categories, first)]
    elif layout == "count":
        objs = [_object(rng, categories, first) for _ in range(int(rng.integers(2, 4)))]
    elif layout == "pair":
        objs = [_object(rng, categories, first), _object(rng, categories, other([first]))]
    else:
        second = other([first])
        third = first if rng.random() < 0.5 else other([first, second])
        objs = [_object(rng, categories, c) for c in (first, second, third)]
    if layout != "single":
        objs = [objs[int(i)] for i in rng.permutation(len(objs))]  # any order left to right
    natives = [stamp_size(o["stamp"]) for o in objs]
    if layout == "single":
        _place_single(rng, objs[0], natives[0], s)
    else:
        _place_row(rng, objs, natives, s)
    held = set(novel)
    scene: dict[str, Any] = {
        "source": "objects",
        "layout": layout,
        "background": background,
        "count": len(objs),
        "objects": objs,
        "relation": {"type": "left of", "subject": 0, "object": 1} if layout == "pair" else None,
        "categories": sorted({o["category"] for o in objs}),
    }
    scene["novel_categories"] = sorted(c for c in scene["categories"] if c in held)
    return scene


# ----------------------------------------------------------------------------- captions


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _tidy(text: str) -> str:
    return " ".join(text.split())


def object_captions(scene: dict[str, Any], slots: bool = False) -> list[str]:
    """The reference captions of an object-bank scene: always the same list for one scene.

    With ``slots``, every object noun is the slot token ``<obj>`` (``<objs>`` for a plural),
    for training a captioner that names objects from the image (captioner.inference.slots).
    """
    short = scene["background"].get("short", "")
    the = scene["background"].get("the", "") or "in the picture"
    objs = scene["objects"]
    if slots:
        objs = [{**o, "noun": SLOT, "plural": SLOTS} for o in objs]
    layout = scene["layout"]
    if layout == "single":
        x = _a(objs[0]["noun"])
        fourth = (
            f"a close-up photo of {x}"
            if objs[0].get("frame_fraction", 0) >= 0.75
            else f"{x} can be seen {the}"
        )
        out = [f"{x} {short}", f"a photo of {x} {short}", f"there is {x} {the}", fourth]
        out.append(f"a picture of {x}")
    elif layout == "count":
        n, p = len(objs), objs[0]["plural"]
        num = _NUMBER_WORDS[n]
        lead = f"a pair of {p}" if n == 2 else f"a row of three {p}"
        out = [
            f"{num} {p} {short}",
            f"a photo of {num} {p} {short}",
            f"there are {num} {p} {the}",
            f"{num} {p} side by side {short}",
            f"{lead} {short}",
        ]
    elif layout == "pair":
        rel = scene["relation"]
        a, b = _a(objs[rel["subject"]]["noun"]), _a(objs[rel["object"]]["noun"])
        out = [
            f"{a} to the left of {b} {short}",
            f"{b} to the right of {a} {short}",
            f"{a} and {b} {short}",
            f"there is {a} to the left of {b}",
            f"a photo of {a} next to {b}",
        ]
    else:
        counts: dict[str, list[Any]] = {}
        for o in objs:  # left to right: first appearance decides the order
            counts.setdefault(o["category"], [0, o])[0] += 1
        parts = [
            f"{_NUMBER_WORDS[k]} {o['plural']}" if k > 1 else _a(o["noun"])
            for k, o in counts.values()
        ]
        group = _join(parts)
        be = "is" if next(iter(counts.values()))[0] == 1 else "are"  # "there is a cat and ..."
        out = [
            f"{group} {short}",
            f"a photo of {group} {short}",
            f"there {be} {group} {the}",
            f"{group} side by side {short}",
        ]
    return [_tidy(c) for c in out]
