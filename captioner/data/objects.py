"""The object bank: composite photographs of real cut-outs on real backgrounds, the writer.

Objects are the photographic stamps of Debian's ``tuxpaint-stamps-default`` (GPL-2), named
by the reviewed table ``stamp_nouns.tsv``; backgrounds are scikit-image textures, freely
licensed photographs from ``plasma-workspace-wallpapers`` and ``gnome-backgrounds`` (see
``background_phrases.tsv``) and generated gradients. A fraction of the images
(``mix_scenes``) comes from the synthetic scenes of :mod:`captioner.data.scenes`, so the old
domain stays in the training data.

Novel-object protocol (DCC): the ``hold_out`` categories never appear in a train, val or test
image or caption; the ``novel`` split holds only images with at least one of them, and every
image entry lists its ``objects`` (category names) for per-category F1.

Output is the same as ``captioner data scenes``: ``DIR/<split>.json`` in COCO captions
format and ``DIR/images/<split>/<index:06d>.jpg``, each image from its own RNG derived from
``(seed, split, index)``. The parts live beside this module: fetching in
:mod:`~captioner.data.objects_fetch`, assets in :mod:`~captioner.data.objects_bank`, scenes
and captions in :mod:`~captioner.data.objects_grammar`, pixels in
:mod:`~captioner.data.objects_render`.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from captioner.data.objects_bank import (
    Stamp,
    background_table,
    package_backgrounds,
    select_stamps,
    stamp_image,
)
from captioner.data.objects_fetch import (
    BACKGROUND_PACKAGES,
    STAMPS_PACKAGE,
    background_folders,
    stamps_root,
)
from captioner.data.objects_grammar import object_captions, sample_object_scene
from captioner.data.objects_render import camera_effects, compose
from captioner.data.scene_grammar import sample_scene, scene_captions
from captioner.data.scene_render import render_scene
from captioner.data.synth import check_split_counts, seeded_rng, write_json
from captioner.progress import progress_bar

__all__ = [
    "DEFAULT_HOLD_OUT",
    "GENERATOR_VERSION",
    "SPLITS",
    "ObjectBank",
    "generate_objects",
    "load_bank",
]

logger = logging.getLogger(__name__)

SLOT_SPLITS = ("train", "val")  # with slots=True, these splits' captions say <obj> / <objs>
GENERATOR_NAME = "captioner.data.objects"
GENERATOR_VERSION = "1.0"
SPLITS: tuple[str, ...] = ("train", "val", "test", "novel")

#: Held out of train/val/test for the novel-object protocol (after DCC's eight COCO classes;
#: each is an ImageNet class too, so the encoder's head can name it).
DEFAULT_HOLD_OUT: tuple[str, ...] = (
    "zebra",
    "penguin",
    "koala",
    "pineapple",
    "banana",
    "violin",
    "teapot",
    "fire truck",
)

# How often each kind of background is drawn (renormalised over the kinds available).
_BACKGROUND_WEIGHTS = {"photo": 0.5, "texture": 0.25, "generated": 0.25}
_GENERATED = ("gradient", "light", "dark")


class ObjectBank:
    """The stamps by category and the backgrounds a generation run draws from."""

    def __init__(self, stamps: Sequence[Stamp], photo_backgrounds: Sequence[tuple[Any, str]]):
        if not stamps:
            raise ValueError(
                f"no usable stamps found (is this the {STAMPS_PACKAGE} stamps folder?)"
            )
        self.stamps = {s.key: s for s in stamps}
        self.categories: dict[str, list[dict[str, str]]] = {}
        for s in stamps:
            entry = {"key": s.key, "noun": s.noun, "plural": s.plural}
            self.categories.setdefault(s.category, []).append(entry)
        self.background_files: dict[str, str] = {}
        self.backgrounds: list[dict[str, Any]] = []
        for entry in background_table():
            if entry.source == "skimage":
                self._add("texture", entry.path, entry.short, entry.the)
        for entry, path in photo_backgrounds:
            name = f"{entry.source}:{entry.path}"
            self.background_files[name] = path
            self._add("photo", name, entry.short, entry.the)
        for name in _GENERATED:
            self._add("generated", name, "", "")
        per_kind = Counter(b["kind"] for b in self.backgrounds)
        total = sum(_BACKGROUND_WEIGHTS[k] for k in per_kind)
        self.background_p = [
            _BACKGROUND_WEIGHTS[b["kind"]] / per_kind[b["kind"]] / total for b in self.backgrounds
        ]

    def _add(self, kind: str, name: str, short: str, the: str) -> None:
        self.backgrounds.append({"kind": kind, "name": name, "short": short, "the": the or short})

    def stamp_files(self) -> dict[str, str]:
        return {key: s.path for key, s in self.stamps.items()}

    def stamp_size(self, key: str) -> tuple[int, int]:
        """(width, height) of a stamp's opaque part, as loaded."""
        return stamp_image(self.stamps[key].path).size


def load_bank(
    stamps: str | os.PathLike | None = None,
    backgrounds: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
) -> ObjectBank:
    """The stamps (``stamps`` folder, else fetched) and the backgrounds (``backgrounds``
    folder, ``"none"`` for only textures and gradients, else fetched when apt is there)."""
    kept, _ = select_stamps(stamps_root(stamps, cache))
    found = package_backgrounds(background_folders(backgrounds, cache))
    return ObjectBank(kept, found)


def _object_entry(
    bank: ObjectBank,
    rng: Any,
    split: str,
    hold_out: Sequence[str],
    image_size: int,
    slots: bool = False,
) -> tuple[Any, dict[str, Any], list[str], int]:
    held = set(hold_out)
    allowed = (
        bank.categories
        if split == "novel"
        else {c: v for c, v in bank.categories.items() if c not in held}
    )
    scene = sample_object_scene(
        rng,
        allowed,
        bank.backgrounds,
        bank.background_p,
        bank.stamp_size,
        image_size,
        novel=sorted(held) if split == "novel" else (),
    )
    composite = compose(scene, rng, image_size, bank.stamp_files(), bank.background_files)
    image = camera_effects(rng, composite.pixels)
    scene["jpeg_quality"] = int(rng.integers(60, 96))
    return image, scene, object_captions(scene, slots), scene["jpeg_quality"]


def _generate_split(
    out: pathlib.Path,
    bank: ObjectBank,
    split: str,
    count: int,
    seed: int,
    image_size: int,
    hold_out: Sequence[str],
    mix_scenes: float,
    progress: bool,
    slots: bool = False,
) -> pathlib.Path:
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in progress_bar(
        range(count), desc=f"objects {split}", unit="img", enabled=progress and count > 0
    ):
        rng = seeded_rng(seed, split, index)
        if rng.random() < mix_scenes and split != "novel":
            scene = sample_scene(rng, novel=False, image_size=image_size)
            image, captions, quality = (
                render_scene(scene, rng, image_size),
                scene_captions(scene),
                92,
            )
            scene["source"] = "scenes"
            objects = sorted({o["kind"] for o in scene["objects"]})
        else:
            image, scene, captions, quality = _object_entry(
                bank, rng, split, hold_out, image_size, slots and split in SLOT_SPLITS
            )
            objects = scene["categories"]
        file_name = f"{split}/{index:06d}.jpg"
        image.save(out / "images" / file_name, quality=quality)
        images.append(
            {
                "id": index,
                "file_name": file_name,
                "width": image_size,
                "height": image_size,
                "objects": objects,
                "scene": scene,
            }
        )
        for caption in captions:
            annotations.append({"id": len(annotations), "image_id": index, "caption": caption})
    payload = {
        "info": {
            "description": "photo cut-outs on photographs, with template captions",
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "split": split,
            "count": count,
            "image_size": image_size,
            "hold_out": list(hold_out),
            "mix_scenes": mix_scenes,
            "slots": slots and split in SLOT_SPLITS,
            "categories": sorted(bank.categories),
            "stamps": len(bank.stamps),
            "backgrounds": [b["name"] for b in bank.backgrounds],
            "sources": {
                "objects": f"Debian package {STAMPS_PACKAGE} (GPL-2)",
                "backgrounds": "scikit-image data; Debian packages "
                + ", ".join(BACKGROUND_PACKAGES)
                + " (see captioner/data/background_phrases.tsv for each file's licence)",
            },
        },
        "images": images,
        "annotations": annotations,
    }
    path = out / f"{split}.json"
    write_json(path, payload)
    logger.info("wrote %d %s images and %d captions to %s", count, split, len(annotations), path)
    return path


def generate_objects(
    out_dir: str | os.PathLike,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    n_novel: int,
    image_size: int = 224,
    stamps: str | os.PathLike | None = None,
    backgrounds: str | os.PathLike | None = None,
    hold_out: Sequence[str] = DEFAULT_HOLD_OUT,
    mix_scenes: float = 0.3,
    progress: bool = True,
    bank: ObjectBank | None = None,
    slots: bool = False,
) -> dict[str, pathlib.Path]:
    """Write the object-bank dataset under ``out_dir`` and return ``{split: json path}``.

    ``stamps`` / ``backgrounds``: folders to read instead of fetching the Debian packages
    (``backgrounds="none"``: textures and gradients only). ``hold_out``: categories kept out
    of train/val/test and put in the ``novel`` split. ``mix_scenes``: the fraction of
    train/val/test images drawn from the synthetic scenes generator instead. ``slots``: the
    train and val captions say ``<obj>`` / ``<objs>`` for every object noun (test and novel
    keep the nouns, to score the filled captions against).
    """
    seed, counts, image_size = check_split_counts(seed, n_train, n_val, n_test, n_novel, image_size)
    if not 0.0 <= float(mix_scenes) <= 1.0:
        raise ValueError(f"mix_scenes must be between 0 and 1, got {mix_scenes}")
    bank = bank or load_bank(stamps, backgrounds)
    hold_out = sorted({c.strip() for c in hold_out if c.strip()})
    unknown = [c for c in hold_out if c not in bank.categories]
    if unknown:
        raise ValueError(
            f"--hold-out names categories the stamps do not have: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(bank.categories))})"
        )
    if len(hold_out) >= len(bank.categories):
        raise ValueError("--hold-out leaves no category for training")
    if counts["novel"] and not hold_out:
        raise ValueError("a novel split needs --hold-out categories (or --n-novel 0)")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        split: _generate_split(
            out,
            bank,
            split,
            counts[split],
            seed,
            image_size,
            hold_out,
            float(mix_scenes),
            progress,
            slots,
        )
        for split in SPLITS
    }
