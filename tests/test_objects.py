"""Tests for the object bank generator (captioner.data.objects and its parts).

A tiny fake stamps folder made here stands in for tuxpaint-stamps-default, so nothing needs
the network or apt. ``CAPTIONER_STAMPS=/path/to/stamps`` also checks the real package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from captioner.data import objects_fetch
from captioner.data.objects import ObjectBank, generate_objects, load_bank
from captioner.data.objects_bank import select_stamps, stamp_table
from captioner.data.objects_fetch import PackageFetchError, stamps_root
from captioner.data.objects_grammar import COUNT_WORDS, object_captions, sample_object_scene
from captioner.data.objects_render import compose
from captioner.data.synth import seeded_rng

# Real keys of the reviewed table, so the fake folder maps to real nouns.
FAKE = {
    "animals/mammals/dogs/dog": (90, 70, (150, 110, 60)),
    "animals/mammals/cats/tiger": (100, 60, (230, 140, 30)),
    "animals/mammals/equines/zebra": (80, 70, (240, 240, 240)),
    "food/fruit/banana": (40, 90, (240, 220, 60)),
    "food/fruit/apple_red": (50, 50, (200, 30, 30)),
    "food/fruit/apple_green": (50, 52, (90, 200, 40)),
}
WORD = re.compile(r"[a-z]+")
GENERATED = {"kind": "generated", "name": "gradient", "short": "", "the": ""}
GRASS = {"kind": "texture", "name": "grass", "short": "on grass", "the": "on the grass"}


def _stamp(path: Path, w: int, h: int, colour: tuple[int, int, int], mode: str = "RGBA") -> None:
    rng = np.random.default_rng(len(str(path)))
    rgb = np.clip(np.asarray(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    alpha = Image.new("L", (w, h), 0)
    ImageDraw.Draw(alpha).ellipse((2, 2, w - 3, h - 3), fill=255)
    image = Image.fromarray(rgb).convert("RGBA")
    image.putalpha(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert("LA") if mode == "LA" else image).save(path)


@pytest.fixture(scope="module")
def stamps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stamps")
    for key, (w, h, colour) in FAKE.items():
        _stamp(root / f"{key}.png", w, h, colour)
        (root / f"{key}.txt").write_text("A thing.\n", encoding="utf-8")
    # What the filter must skip: cartoons, symbols, mirrors, tint templates, greyscale.
    _stamp(root / "animals/mammals/dogs/cartoon/dog.png", 40, 40, (0, 0, 255))
    _stamp(root / "symbols/shapes/circle.png", 40, 40, (0, 0, 255))
    _stamp(root / "animals/mammals/dogs/dog_mirror.png", 40, 40, (0, 0, 255))
    _stamp(root / "animals/insects/bee.png", 40, 40, (0, 0, 255))
    (root / "animals/insects/bee.dat").write_text("tintable\n", encoding="utf-8")
    _stamp(root / "animals/mammals/rodents/mouse.png", 40, 40, (90, 90, 90), mode="LA")
    return root


@pytest.fixture(scope="module")
def bank(stamps: Path) -> ObjectBank:
    return load_bank(stamps, backgrounds="none")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _by_image(data: dict) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        out.setdefault(ann["image_id"], []).append(ann["caption"])
    return out


def _scenes(bank: ObjectBank, n: int = 300, size: int = 96) -> list[dict]:
    return [
        sample_object_scene(
            seeded_rng(5, "t", i),
            bank.categories,
            bank.backgrounds,
            bank.background_p,
            bank.stamp_size,
            size,
        )
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- stamps


def test_filter_keeps_only_photo_stamps_in_the_table(stamps: Path) -> None:
    kept, unknown = select_stamps(stamps)
    assert sorted(s.key for s in kept) == sorted(FAKE)
    assert unknown == []
    nouns = {s.key: s.noun for s in kept}
    assert nouns["food/fruit/apple_red"] == nouns["food/fruit/apple_green"] == "apple"


def test_noun_table_covers_every_stamp_the_filter_keeps(tmp_path: Path) -> None:
    table = stamp_table()
    for key in table:  # every table row, used or reviewed out
        _stamp(tmp_path / f"{key}.png", 12, 12, (120, 80, 40))
    _stamp(tmp_path / "food/fruit/durian.png", 12, 12, (120, 80, 40))  # a newer stamp
    kept, unknown = select_stamps(tmp_path)
    used = {k for k, e in table.items() if e.noun is not None}
    assert {s.key for s in kept} == used
    assert unknown == ["food/fruit/durian"]
    assert all(s.noun.strip() and s.plural.strip() for s in kept)
    assert all(e.note for e in table.values() if e.noun is None), "a drop needs a reason"


@pytest.mark.skipif(not os.environ.get("CAPTIONER_STAMPS"), reason="CAPTIONER_STAMPS not set")
def test_noun_table_covers_the_real_package() -> None:
    kept, unknown = select_stamps(stamps_root(os.environ["CAPTIONER_STAMPS"]))
    assert unknown == []
    assert len(kept) > 250


def test_fetch_names_the_package_and_the_way_around_when_apt_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        objects_fetch.shutil, "which", lambda cmd: None if cmd == "apt-get" else real_which(cmd)
    )
    with pytest.raises(PackageFetchError) as info:
        stamps_root(None, cache=tmp_path)
    message = str(info.value)
    assert "tuxpaint-stamps-default" in message
    assert "apt-get" in message
    assert "--stamps DIR" in message
    assert not any(tmp_path.iterdir())


def test_cli_reports_the_missing_apt_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from captioner.cli import main

    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(objects_fetch.shutil, "which", lambda cmd: None)
    code = main(["data", "objects", "--out", str(tmp_path / "out"), "--n-train", "1"])
    assert code == 2
    assert "tuxpaint-stamps-default" in caplog.text
    assert "--stamps" in caplog.text


# ----------------------------------------------------------------------------- captions


def test_counts_in_captions_match_the_objects(bank: ObjectBank) -> None:
    layouts = set()
    for scene in _scenes(bank):
        layouts.add(scene["layout"])
        captions = object_captions(scene)
        words = [set(WORD.findall(c)) for c in captions]
        n = len(scene["objects"])
        assert n == scene["count"]
        if n == 1:
            assert all(not (w & COUNT_WORDS) for w in words), captions
            assert all(scene["objects"][0]["noun"] in c for c in captions)
        elif scene["layout"] == "count":
            word = {2: "two", 3: "three"}[n]
            wrong = {2: "three", 3: "two"}[n]
            assert all(word in w or "pair" in w for w in words), captions
            assert all(wrong not in w for w in words), captions
            assert all(scene["objects"][0]["plural"] in c for c in captions)
        else:  # different kinds: every kind is named; a number only for a repeated kind
            kinds = [o["category"] for o in scene["objects"]]
            repeated = any(kinds.count(k) > 1 for k in kinds)
            assert all(("two" in w) == repeated for w in words), captions
            if scene["layout"] == "group":
                lead = captions[0].split(" and ")[0].split(",")[0]
                there = "there are" if lead.startswith("two ") else "there is"
                assert captions[2].startswith(there), captions
            assert all(
                o["noun"] in c or o["plural"] in c for c in captions for o in scene["objects"]
            )
    assert layouts == {"single", "count", "pair", "group"}


def test_relation_follows_the_boxes(bank: ObjectBank) -> None:
    pairs = [s for s in _scenes(bank) if s["layout"] == "pair"]
    assert pairs
    for scene in pairs:
        left, right = scene["objects"]
        assert left["box"][2] <= right["box"][0]  # no overlap, left really is left
        assert object_captions(scene)[0].startswith(f"a {left['noun']} to the left of") or (
            object_captions(scene)[0].startswith(f"an {left['noun']} to the left of")
        )


def test_background_is_named_only_when_known(bank: ObjectBank) -> None:
    scene = _scenes(bank, 1)[0]
    scene["background"] = dict(GRASS)
    assert all("grass" in c for c in object_captions(scene)[:3])
    scene["background"] = dict(GENERATED)
    assert not any(re.search(r"\b(on|in front of|by)\b", c) for c in object_captions(scene))


# ----------------------------------------------------------------------------- pixels


def _manual_scene(bank: ObjectBank) -> dict:
    dog = bank.categories["dog"][0]
    tiger = bank.categories["tiger"][0]
    return {
        "source": "objects",
        "layout": "pair",
        "background": dict(GENERATED),
        "count": 2,
        "objects": [
            {"category": "dog", **dog, "stamp": dog["key"], "flip": False, "box": [-20, 8, 40, 55]},
            {
                "category": "tiger",
                **tiger,
                "stamp": tiger["key"],
                "flip": True,
                "box": [70, 60, 118, 89],
            },
        ],
        "relation": {"type": "left of", "subject": 0, "object": 1},
    }


def test_masks_respected_and_crops_at_the_border(bank: ObjectBank) -> None:
    scene = _manual_scene(bank)
    done = compose(scene, seeded_rng(1, "m"), 128, bank.stamp_files(), bank.background_files)
    outside = (done.alphas.sum(axis=0) == 0) & (done.shadow == 0)
    assert outside.mean() > 0.3
    np.testing.assert_array_equal(done.pixels[outside], done.background[outside])
    inside = done.alphas.max(axis=0) > 0.99
    changed = np.abs(done.pixels - done.background).max(axis=-1) > 1
    assert changed[inside].mean() > 0.95  # an object's pixels are the object's
    cut, whole = scene["objects"]
    assert cut["visible_box"] == [0, 8, 40, 55]
    assert 0.3 < cut["visible_fraction"] < 0.9
    assert whole["visible_fraction"] == pytest.approx(1.0)
    assert cut["mask_area"] == pytest.approx(float(done.alphas[0].sum()), abs=0.1)
    assert done.alphas[0][:, 40:].max() == 0  # nothing of the dog outside its box


def test_one_subject_scenes_are_sometimes_cut_by_the_border(bank: ObjectBank) -> None:
    singles = [s for s in _scenes(bank) if s["layout"] == "single"]
    cut = [s for s in singles if s["objects"][0]["cropped"]]
    assert 0 < len(cut) < len(singles)
    for scene in cut:
        x0, y0, x1, y1 = scene["objects"][0]["box"]
        assert x0 < 0 or y0 < 0 or x1 > 96 or y1 > 96


# ----------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, bank: ObjectBank) -> Path:
    root = tmp_path_factory.mktemp("objects")
    generate_objects(
        root, 7, 10, 3, 4, 5, image_size=64, hold_out=["zebra"], mix_scenes=0.3,
        progress=False, bank=bank,
    )  # fmt: skip
    return root


def test_dataset_files_and_captions(dataset: Path) -> None:
    for split, n in (("train", 10), ("val", 3), ("test", 4), ("novel", 5)):
        data = _load(dataset / f"{split}.json")
        assert data["info"]["split"] == split
        assert len(data["images"]) == n
        captions = _by_image(data)
        for entry in data["images"]:
            image = Image.open(dataset / "images" / entry["file_name"])
            assert image.size == (64, 64)
            assert image.mode == "RGB"
            scene = entry["scene"]
            if scene["source"] == "objects":
                assert captions[entry["id"]] == object_captions(scene)
                assert entry["objects"] == scene["categories"]
                assert all("mask_area" in o and "box" in o for o in scene["objects"])


def test_held_out_categories_only_in_the_novel_split(dataset: Path) -> None:
    for split in ("train", "val", "test"):
        data = _load(dataset / f"{split}.json")
        assert not any("zebra" in a["caption"] for a in data["annotations"])
        assert not any("zebra" in e["objects"] for e in data["images"])
    novel = _load(dataset / "novel.json")
    captions = _by_image(novel)
    for entry in novel["images"]:
        assert "zebra" in entry["objects"]
        assert entry["scene"]["novel_categories"] == ["zebra"]
        assert all("zebra" in c for c in captions[entry["id"]])


def test_same_seed_same_bytes(tmp_path: Path, bank: ObjectBank, dataset: Path) -> None:
    generate_objects(
        tmp_path, 7, 10, 3, 4, 5, image_size=64, hold_out=["zebra"], mix_scenes=0.3,
        progress=False, bank=bank,
    )  # fmt: skip
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    other = tmp_path / "other"
    generate_objects(
        other, 8, 2, 0, 0, 0, image_size=64, hold_out=["zebra"], progress=False, bank=bank
    )
    first = (dataset / "images/train/000000.jpg").read_bytes()
    assert (other / "images/train/000000.jpg").read_bytes() != first


def test_mix_scenes_draws_old_scenes(tmp_path: Path, bank: ObjectBank) -> None:
    generate_objects(tmp_path, 1, 6, 0, 0, 0, image_size=64, hold_out=[], mix_scenes=1.0,
                     progress=False, bank=bank)  # fmt: skip
    data = _load(tmp_path / "train.json")
    assert {e["scene"]["source"] for e in data["images"]} == {"scenes"}


def test_unknown_hold_out_category_is_refused(tmp_path: Path, bank: ObjectBank) -> None:
    with pytest.raises(ValueError, match="unicorn"):
        generate_objects(tmp_path, 1, 1, 0, 0, 0, hold_out=["unicorn"], progress=False, bank=bank)


def test_slot_captions_put_slots_where_the_nouns_go_in_train_and_val_only(tmp_path, bank):
    from captioner.vocab import SLOT, SLOTS

    paths = generate_objects(
        tmp_path / "ds", seed=4, n_train=6, n_val=2, n_test=3, n_novel=0, image_size=96,
        hold_out=[], mix_scenes=0.0, progress=False, bank=bank, slots=True,
    )  # fmt: skip
    for split, slotted in (("train", True), ("val", True), ("test", False)):
        data = json.loads(paths[split].read_text())
        captions = [a["caption"] for a in data["annotations"]]
        nouns = {o["noun"] for im in data["images"] for o in im["scene"]["objects"]}
        has_slot = [SLOT in c or SLOTS in c for c in captions]
        assert all(has_slot) if slotted else not any(has_slot), split
        assert any(n in c for c in captions for n in nouns) != slotted, split
        assert data["info"]["slots"] is slotted
