"""A synthetic captioning dataset whose captions are fully determined by the pixels: the writer.

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

The parts live beside this module: what a scene holds and its captions in
:mod:`captioner.data.scene_grammar`, its pixels in :mod:`captioner.data.scene_render`, and
what it shares with the motion clips in :mod:`captioner.data.synth`. This module writes the
files and re-exports the public names from there, so ``captioner.data.scenes`` stays the one
import for users.
"""

from __future__ import annotations

import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from captioner.data.scene_grammar import (
    COLOURS,
    LAYOUTS,
    NOVEL_COMBINATIONS,
    SIZES,
    novel_combinations_in,
    sample_scene,
    scene_captions,
)
from captioner.data.scene_render import render_scene
from captioner.data.synth import (
    BACKGROUNDS,
    PHOTO_KINDS,
    SHAPE_KINDS,
    check_split_counts,
    seeded_rng,
    write_json,
)
from captioner.progress import progress_bar

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "GENERATOR_VERSION",
    "LAYOUTS",
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


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class _SplitSpec:
    name: str
    count: int


def _generate_split(
    out: pathlib.Path, spec: _SplitSpec, seed: int, image_size: int, progress: bool
) -> pathlib.Path:
    image_dir = out / "images" / spec.name
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in progress_bar(
        range(spec.count),
        desc=f"scenes {spec.name}",
        unit="img",
        enabled=progress and spec.count > 0,
    ):
        rng = seeded_rng(seed, spec.name, index)
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
    write_json(path, payload)
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
    seed, counts, image_size = check_split_counts(seed, n_train, n_val, n_test, n_novel, image_size)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        split: _generate_split(out, _SplitSpec(split, counts[split]), seed, image_size, progress)
        for split in SPLITS
    }
