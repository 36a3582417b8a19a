"""Novel-object F1 and count honesty, scored against what the object bank pasted."""

from __future__ import annotations

import json

import pytest

from captioner.data.captions import CaptionRecord
from captioner.evaluation.objects import object_metadata, object_scores


def image(i: int, *objects: tuple[str, str, str]) -> dict:
    return {
        "id": i,
        "file_name": f"novel/{i:06d}.jpg",
        "objects": sorted({c for c, _, _ in objects}),
        "scene": {
            "categories": sorted({c for c, _, _ in objects}),
            "objects": [{"category": c, "noun": n, "plural": p} for c, n, p in objects],
        },
    }


ZEBRA, TRUCK = ("zebra", "zebra", "zebras"), ("fire truck", "fire truck", "fire trucks")


@pytest.fixture
def meta(tmp_path):
    data = {
        "info": {"hold_out": ["zebra", "fire truck"]},
        "images": [
            image(0, ZEBRA),
            image(1, ZEBRA, ZEBRA),
            image(2, TRUCK),
            image(3, ("dog", "dog", "dogs")),
            {
                "id": 4,
                "file_name": "x.jpg",
                "scene": {"objects": [{"kind": "circle"}]},
            },  # old scene
        ],
        "annotations": [],
    }
    path = tmp_path / "novel.json"
    path.write_text(json.dumps(data))
    return object_metadata(path)


def test_f1_counts_mentions_of_each_held_out_category(meta) -> None:
    records = [CaptionRecord(str(i), f"{i}.jpg", []) for i in range(5)]
    hypotheses = [
        "two zebras on grass",  # a zebra, but a false count on a one-object image
        "two zebras in a forest",  # right
        "a truck on a road",  # "truck" is not "fire truck": missed
        "a zebra by a lake",  # a dog called a zebra: a false positive
        "a circle",  # an old synthetic scene: not scored
    ]
    scores = object_scores(records, hypotheses, meta)
    assert scores["images"] == 4
    assert scores["f1"] == {"zebra": pytest.approx(0.8), "fire truck": 0.0}  # 2tp, 1fp, 0fn
    assert scores["mean_f1"] == pytest.approx(0.4)
    assert scores["one_object_images"] == 3
    assert scores["count_word_share"] == pytest.approx(1 / 3, abs=1e-4)


def test_files_without_object_metadata_get_no_object_scores(tmp_path) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert object_metadata(tmp_path / "coco.json") is None
    assert object_metadata(tmp_path / "missing.json") is None
