"""Object mentions in captions of the object bank (``captioner data objects``): the novel-object
protocol of DCC (per-category F1 of mentioning the category) and count honesty.

The annotation file's images carry the pasted objects (``objects`` and ``scene``), so a
caption can be checked against what the picture holds. Files without that metadata (COCO,
Flickr, the synthetic scenes) get no object scores.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captioner.data.captions import CaptionRecord

COUNT_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_COUNT = re.compile(r"\b(" + "|".join(COUNT_WORDS) + r")\b")


def object_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """``{"images": {image_id: {"categories", "single"}}, "nouns": {category: (noun, plural)},
    "hold_out": [...]}`` from an object-bank annotation file, or None for any other file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return None
    images: dict[str, dict[str, Any]] = {}
    nouns: dict[str, tuple[str, str]] = {}
    for image in data["images"]:
        scene = image.get("scene") or {}
        if not isinstance(image, dict) or "categories" not in scene:
            continue  # an old synthetic scene mixed in, or no metadata at all
        objects = scene.get("objects", [])
        for obj in objects:
            nouns.setdefault(obj["category"], (obj["noun"], obj["plural"]))
        images[str(image["id"])] = {
            "categories": set(scene["categories"]),
            "single": len(objects) == 1,
        }
    if not images:
        return None
    return {"images": images, "nouns": nouns, "hold_out": data.get("info", {}).get("hold_out", [])}


def mentions(caption: str, noun: str, plural: str) -> bool:
    """Whether ``caption`` names the object, as a whole word or phrase, singular or plural."""
    return re.search(rf"\b({re.escape(noun)}|{re.escape(plural)})\b", caption) is not None


def object_scores(
    records: Sequence[CaptionRecord],
    hypotheses: Sequence[str],
    meta: dict[str, Any],
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-category F1 of mentioning each category (default: the held-out ones, else all) over
    the object-bank images, their mean, and how often a one-object image's caption has a count.
    """
    rows = [
        (meta["images"][r.image_id], h)
        for r, h in zip(records, hypotheses, strict=True)
        if r.image_id in meta["images"]
    ]
    wanted = list(categories or meta["hold_out"] or sorted(meta["nouns"]))
    f1 = {}
    for category in wanted:
        if category not in meta["nouns"]:
            continue
        noun, plural = meta["nouns"][category]
        tp = fp = fn = 0
        for image, caption in rows:
            truth, said = category in image["categories"], mentions(caption, noun, plural)
            tp += truth and said
            fp += said and not truth
            fn += truth and not said
        f1[category] = round(2 * tp / max(2 * tp + fp + fn, 1), 4)
    singles = [caption for image, caption in rows if image["single"]]
    counted = sum(bool(_COUNT.search(c)) for c in singles)
    return {
        "images": len(rows),
        "f1": f1,
        "mean_f1": round(sum(f1.values()) / len(f1), 4) if f1 else None,
        "one_object_images": len(singles),
        "count_word_share": round(counted / len(singles), 4) if singles else None,
    }
