"""The real-photo evaluation: its metrics on hand-made captions, the label file, the generator."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.data.real_photos import (
    PhotoLabelError,
    generate_photos,
    load_labels,
    split_of,
    validate_labels,
)
from captioner.evaluation.photos import (
    auroc,
    false_count_or_pair,
    false_scene_phrases,
    mentions_person,
    names_subject,
    photo_scores,
    scene_phrases,
    singular,
)


def test_subject_named_with_plurals_and_articles():
    assert names_subject("two large Cats on grass", ["cat", "kitten"])
    assert names_subject("an apple and a kitten", ["cat", "kitten"])
    assert names_subject("there are two coffee cups", ["coffee cup"])
    assert not names_subject("a picture of a dog", ["cat", "kitten"])
    assert not names_subject("a picture of a category", ["cat"])  # whole words only
    assert singular("boxes") == "box"
    assert singular("berries") == "berry"
    assert singular("glass") == "glass"
    assert singular("leaves") == "leaf"


def test_false_count_or_pair_flips_on_counts_and_repeats():
    assert false_count_or_pair("two motorbikes in the picture")
    assert false_count_or_pair("a tripod next to a tripod")
    assert false_count_or_pair("a large cup to the left of a large cups")
    assert not false_count_or_pair("a picture of a large cat on a dark background")
    assert not false_count_or_pair("a small cat next to a small dog")  # sizes may repeat


def test_false_scene_phrases_use_the_model_vocabulary():
    vocab = scene_phrases()
    assert {"wooden pier", "lake", "grass", "dark background", "valley", "mountain"} <= set(vocab)
    said, false = false_scene_phrases("an apple by a lake", ["lake", "shore"])
    assert said == ["lake"]
    assert false == []
    said, false = false_scene_phrases("an orange on a wooden pier", ["table"])
    assert said == ["wooden pier"]
    assert false == ["wooden pier"]
    assert false_scene_phrases("a boat on a wooden pier", ["pier"])[1] == []  # pier supports it
    assert false_scene_phrases("a picture of a cat", []) == ([], [])


def test_person_words():
    assert mentions_person("two people on grass")
    assert mentions_person("an astronaut")
    assert not mentions_person("a punching bag next to a punching bag")


def test_auroc():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.5], [True]) is None


def _row(**kw):
    base = {
        "kind": "photo",
        "subject": ["cat"],
        "count": 1,
        "people": 0,
        "scene": [],
        "confidence": 0.5,
        "out_of_domain": False,
        "tags": [{"name": "cat", "score": 0.9}],
    }
    return {**base, **kw}


def test_photo_scores_count_what_a_reader_sees():
    rows = [
        _row(caption="a cat on grass", scene=["grass"], confidence=0.9),
        _row(
            caption="two dogs on a wooden pier",
            tags=[{"name": "dog", "score": 0.2}],
            confidence=0.3,
            out_of_domain=True,
        ),
        _row(
            caption="a photo of a tripod next to a tripod",
            subject=["man", "person"],
            people=1,
            tags=[{"name": "tripod", "score": 0.4}, {"name": "person", "score": 0.1}],
            confidence=0.1,
        ),
        _row(kind="text", caption="a picture of a dog", subject=[], count=None, out_of_domain=True),
        _row(kind="microscopy", caption="a dog", subject=[], count=None, out_of_domain=False),
    ]
    s = photo_scores(rows)
    assert s["photos"] == 3
    assert s["non_photos"] == 2
    assert s["subject_named"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["template_named"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["top3_named"] == pytest.approx(2 / 3, abs=1e-3)  # "person" is the second tag
    assert s["false_count_or_pair"] == [2, 3]
    assert s["false_scene_share"] == 0.5
    assert s["captions_with_scene"] == 2
    assert s["person_mentioned"] == 0.0
    assert s["person_named_without_people"] == [0, 2]
    assert s["out_of_domain_photos"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["out_of_domain_non_photos"] == 0.5
    assert s["out_of_domain_by_kind"] == {"microscopy": 0.0, "text": 1.0}
    assert s["auroc_confidence"] == 1.0
    assert s["auroc_tag_score"] == 1.0
    uncalibrated = photo_scores([_row(caption="a cat", out_of_domain=None)])
    assert uncalibrated["out_of_domain_photos"] is None


def test_shipped_labels_follow_the_schema_and_the_split_rule():
    doc = load_labels()
    photos = doc["photos"]
    assert 50 <= len(photos) <= 95
    assert "never be tuned on" in doc["info"]["heldout"]
    splits = {p["split"] for p in photos}
    assert splits == {"tune", "heldout"}
    everyday = [p for p in photos if p["kind"] == "photo"]
    for split in ("tune", "heldout"):  # about half each, photos included
        share = sum(p["split"] == split for p in everyday) / len(everyday)
        assert 0.3 < share < 0.7
    by_group: dict[str, set[str]] = {}
    for p in photos:
        by_group.setdefault(p["group"], set()).add(p["split"])
    assert all(len(s) == 1 for s in by_group.values())  # crops never straddle the splits
    assert all(p["subject"] for p in everyday)


def test_validate_labels_names_the_bad_field():
    photo = load_labels()["photos"][0]
    with pytest.raises(PhotoLabelError, match="split"):
        validate_labels(
            {"photos": [{**photo, "split": "heldout" if photo["split"] == "tune" else "tune"}]}
        )
    with pytest.raises(PhotoLabelError, match=r"source.package"):
        validate_labels({"photos": [{**photo, "source": {"package": "imagenet", "path": "x"}}]})
    broken = dict(photo)
    del broken["scene"]
    with pytest.raises(PhotoLabelError, match="scene"):
        validate_labels({"photos": [broken]})


def _label(id, package, path, sha, **extra):
    return {
        "id": id,
        "group": id,
        "split": split_of(id),
        "source": {"package": package, "path": path, **extra},
        "sha256": sha,
        "kind": "photo",
        "subject": ["thing"],
        "count": 1,
        "others": [],
        "people": 0,
        "scene": [],
        "seen_in_training": None,
        "note": "",
    }


def test_generator_on_a_fake_package_folder(tmp_path, caplog):
    import skimage.data

    pkg = tmp_path / "packages" / "gnome-backgrounds" / "usr" / "share" / "backgrounds"
    pkg.mkdir(parents=True)
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(pkg / "a.png")
    good = hashlib.sha256((pkg / "a.png").read_bytes()).hexdigest()
    coffee = Path(skimage.data.data_dir) / "coffee.png"
    labels = {
        "photos": [
            _label(
                "a",
                "gnome-backgrounds",
                "usr/share/backgrounds/a.png",
                good,
                crop=[0.0, 0.0, 0.5, 1.0],
            ),
            _label("b", "gnome-backgrounds", "usr/share/backgrounds/a.png", "0" * 64),
            _label("c", "plasma-workspace-wallpapers", "usr/none.jpg", "0" * 64),
            _label(
                "coffee", "skimage", "coffee.png", hashlib.sha256(coffee.read_bytes()).hexdigest()
            ),
        ]
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    with caplog.at_level(logging.WARNING):
        out = generate_photos(tmp_path / "out", tmp_path / "packages", tmp_path / "labels.json")
    assert out["written"] == 2
    assert [s["id"] for s in out["skipped"]] == ["b", "c"]
    assert "sha256" in out["skipped"][0]["reason"]
    assert "photo b skipped" in caplog.text
    written = json.loads((tmp_path / "out" / "photos.json").read_text())
    assert [p["id"] for p in written["photos"]] == ["a", "coffee"]
    with Image.open(tmp_path / "out" / "images" / "a.png") as im:
        assert im.size == (30, 40)  # the crop
    with Image.open(tmp_path / "out" / "images" / "coffee.png") as im:
        assert im.size == (600, 400)


def test_evaluate_caption_photos_runs_the_pipeline(tmp_path, tiny_bundle, capsys, caplog) -> None:
    """``captioner evaluate caption --photos DIR`` scores every written photo, per split."""
    import skimage.data

    from captioner.cli import main

    coffee = Path(skimage.data.data_dir) / "coffee.png"
    sha = hashlib.sha256(coffee.read_bytes()).hexdigest()
    labels = {
        "photos": [
            _label("coffee", "skimage", "coffee.png", sha),
            {
                **_label("text-crop", "skimage", "coffee.png", sha, crop=[0, 0, 0.5, 0.5]),
                "kind": "text",
                "subject": [],
                "count": None,
            },
        ]
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    generate_photos(tmp_path / "photos", tmp_path / "packages", tmp_path / "labels.json")
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "caption",
                "--bundle",
                str(tiny_bundle),
                "--photos",
                str(tmp_path / "photos"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["splits"]["all"]["images"] == 2
    assert result["splits"]["all"]["photos"] == 1
    assert [r["id"] for r in result["rows"]] == ["coffee", "text-crop"]
    caplog.clear()
    assert main(["evaluate", "caption", "--bundle", str(tiny_bundle), "--data", "x.json"]) == 2
    assert "--photos" in caplog.text


def test_grounded_scene_phrases_are_scored() -> None:
    # "a lakeside" is how a grounded caption describes a landscape: it must count as a scene.
    assert false_scene_phrases("a lakeside", ["lake", "lakeside"]) == (["lakeside"], [])
    said, false = false_scene_phrases("a boat in the mountains", ["forest"])
    assert said
    assert false == said
