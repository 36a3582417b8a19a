"""Tests for the synthetic captioning dataset (captioner.data.scenes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.data.scenes import (
    NOVEL_COMBINATIONS,
    SPLITS,
    generate_scenes,
    render_scene,
    sample_scene,
    scene_captions,
)

COUNTS = {"n_train": 8, "n_val": 3, "n_test": 6, "n_novel": 8}
NOVEL_TEXT = re.compile(r"\b(" + "|".join(NOVEL_COMBINATIONS) + r")s?\b")
WORD = re.compile(r"[a-z]+")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _captions_by_image(data: dict) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        out.setdefault(ann["image_id"], []).append(ann["caption"])
    return out


def _pixels(root: Path, split: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((root / "images" / split).glob("*.jpg"))]


def _centre(box: list[int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _many_scenes(novel: bool, n: int = 1500) -> list[dict]:
    return [sample_scene(np.random.default_rng([7, novel, i]), novel=novel) for i in range(n)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("scenes")
    return root, generate_scenes(root, seed=3, progress=False, **COUNTS)


def test_writes_coco_json_and_images(dataset: tuple[Path, dict[str, Path]]) -> None:
    root, paths = dataset
    assert set(paths) == set(SPLITS)
    for split, path in paths.items():
        assert path == root / f"{split}.json"
        data = _load(path)
        assert data["info"]["seed"] == 3
        assert data["info"]["split"] == split
        images, anns = data["images"], data["annotations"]
        assert len(images) == COUNTS[f"n_{split}"]
        assert len({im["id"] for im in images}) == len(images)
        assert len({a["id"] for a in anns}) == len(anns)
        by_image = _captions_by_image(data)
        assert set(by_image) == {im["id"] for im in images}
        for im in images:
            assert re.fullmatch(rf"{split}/\d{{6}}\.jpg", im["file_name"])
            assert (im["width"], im["height"]) == (224, 224)
            refs = by_image[im["id"]]
            assert len(set(refs)) >= 3
            for caption in refs:
                words = caption.split(" ")
                assert all(WORD.fullmatch(w) for w in words), caption
                assert 5 <= len(words) <= 16, caption
            with Image.open(root / "images" / im["file_name"]) as picture:
                assert picture.format == "JPEG"
                assert picture.mode == "RGB"
                assert picture.size == (224, 224)


def test_same_seed_is_identical_and_other_seed_differs(
    dataset: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, paths = dataset
    again = generate_scenes(tmp_path / "again", seed=3, progress=False, **COUNTS)
    other = generate_scenes(tmp_path / "other", seed=4, progress=False, **COUNTS)
    for split in SPLITS:
        assert again[split].read_bytes() == paths[split].read_bytes()
        for a, b in zip(_pixels(root, split), _pixels(tmp_path / "again", split), strict=True):
            assert np.array_equal(a, b)
    assert other["train"].read_bytes() != paths["train"].read_bytes()
    assert not np.array_equal(_pixels(root, "test")[0], _pixels(tmp_path / "other", "test")[0])


def test_changing_train_count_leaves_test_split_unchanged(
    dataset: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, paths = dataset
    counts = dict(COUNTS, n_train=COUNTS["n_train"] + 5, n_val=0)
    changed = generate_scenes(tmp_path, seed=3, progress=False, **counts)
    assert changed["test"].read_bytes() == paths["test"].read_bytes()
    for a, b in zip(_pixels(root, "test"), _pixels(tmp_path, "test"), strict=True):
        assert np.array_equal(a, b)
    # Splits draw from different streams: no test image repeats a train image.
    train = _pixels(root, "train")
    assert not any(np.array_equal(t, x) for t in _pixels(root, "test") for x in train)


def test_empty_split_is_a_valid_empty_file(tmp_path: Path) -> None:
    paths = generate_scenes(
        tmp_path, seed=0, n_train=0, n_val=0, n_test=1, n_novel=0, progress=False
    )
    data = _load(paths["val"])
    assert data["images"] == []
    assert data["annotations"] == []
    assert data["info"]["count"] == 0


def test_novel_combinations_only_in_novel_split(dataset: tuple[Path, dict[str, Path]]) -> None:
    _, paths = dataset
    for split in SPLITS:
        data = _load(paths[split])
        by_image = _captions_by_image(data)
        for im in data["images"]:
            held_out = im["scene"]["novel_combinations"]
            mentioned = [bool(NOVEL_TEXT.search(c)) for c in by_image[im["id"]]]
            if split == "novel":
                assert held_out, by_image[im["id"]]
                assert all(mentioned), by_image[im["id"]]
            else:
                assert not held_out, by_image[im["id"]]
                assert not any(mentioned), by_image[im["id"]]


@pytest.mark.parametrize("novel", [False, True])
def test_held_out_rule_over_many_scenes(novel: bool) -> None:
    for scene in _many_scenes(novel):
        kinds = {(o["colour"], o["kind"]) for o in scene["objects"]}
        kinds |= {(o["size"], o["kind"]) for o in scene["objects"]}
        held = {tuple(c.split(" ")) for c in NOVEL_COMBINATIONS}
        held = {(a, "cup" if k == "coffee cup" else k) for a, k in held}
        assert bool(kinds & held) == novel, scene
        assert all(bool(NOVEL_TEXT.search(c)) == novel for c in scene_captions(scene))


def test_relations_match_boxes_and_captions() -> None:
    seen = set()
    for scene in _many_scenes(False, 600):
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 224
            assert 0 <= y0 < y1 <= 224
        relation = scene["relation"]
        if relation is None:
            continue
        seen.add(relation["type"])
        subject = _centre(scene["objects"][relation["subject"]]["box"])
        other = _centre(scene["objects"][relation["object"]]["box"])
        axis = 0 if relation["type"] == "left of" else 1
        # Far enough apart along the axis for a 7x7 feature grid to tell.
        assert other[axis] - subject[axis] >= 224 / 7 * 2
        first = scene_captions(scene)[0]
        word = "to the left of" if axis == 0 else "above"
        assert word in first
    assert seen == {"left of", "above"}


def test_captions_describe_the_scene() -> None:
    numbers = {1: "one", 2: "two", 3: "three"}
    for scene in _many_scenes(False, 300):
        captions = scene_captions(scene)
        assert captions == scene_captions(json.loads(json.dumps(scene)))
        text = " ".join(captions)
        for obj in scene["objects"]:
            assert obj["size"] in text
            if obj["colour"]:
                assert obj["colour"] in text
        if scene["layout"] == "count":
            assert numbers[scene["count"]] in captions[0]
        assert ("grass" in text) == (scene["background"] == "grass")
        assert ("brick wall" in text) == (scene["background"] == "brick")


def test_rendered_shape_has_its_colour() -> None:
    scene = {
        "background": "light",
        "layout": "single",
        "count": 1,
        "objects": [
            {
                "kind": "square",
                "family": "shape",
                "colour": "red",
                "size": "large",
                "box": [60, 60, 160, 160],
            },
        ],
        "relation": None,
    }
    pixels = np.asarray(render_scene(scene, np.random.default_rng(0))).astype(int)
    r, g, b = pixels[100:120, 100:120].reshape(-1, 3).mean(axis=0)
    assert r > 150
    assert g < 90
    assert b < 90
    corner = pixels[:30, :30].reshape(-1, 3).mean(axis=0)
    assert corner.min() > 190  # the light background stays light outside the box


@pytest.mark.parametrize(
    "kwargs",
    [{"n_train": -1}, {"seed": -5}, {"n_test": 2.5}, {"image_size": 16}],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    args = {"seed": 0, "n_train": 1, "n_val": 0, "n_test": 0, "n_novel": 0, "progress": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        generate_scenes(tmp_path, **args)
