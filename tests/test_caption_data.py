"""Tests for captioner.data.captions: every accepted format and every malformed case."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from captioner.data.captions import CaptionRecord, load_captions


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def as_tuples(records: list[CaptionRecord]) -> list[tuple[str, str, list[str]]]:
    return [(r.image_id, r.file_name, r.captions) for r in records]


COCO = {
    "info": {},
    "images": [
        {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 640, "height": 480},
        {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"},
        {"id": 99, "file_name": "no_captions.jpg"},
    ],
    "annotations": [
        {"id": 1, "image_id": 7, "caption": "A dog on a sofa.\n"},
        {"id": 2, "image_id": 42, "caption": "Two cats."},
        {"id": 3, "image_id": 7, "caption": "  A brown dog resting. "},
    ],
}

KARPATHY = {
    "dataset": "coco",
    "images": [
        {
            "filepath": "train2014",
            "filename": "a.jpg",
            "split": "train",
            "cocoid": 11,
            "imgid": 0,
            "sentences": [{"raw": "A man riding a horse.", "tokens": ["a", "man"]}],
        },
        {
            "filepath": "val2014",
            "filename": "b.jpg",
            "split": "restval",
            "cocoid": 12,
            "imgid": 1,
            "sentences": [{"raw": "A red bus.", "tokens": []}, {"raw": "Bus on a street."}],
        },
        {
            "filepath": "val2014",
            "filename": "c.jpg",
            "split": "val",
            "cocoid": 13,
            "imgid": 2,
            "sentences": [{"raw": "A bowl of fruit."}],
        },
        {
            "filepath": "val2014",
            "filename": "d.jpg",
            "split": "test",
            "cocoid": 14,
            "imgid": 3,
            "sentences": [{"raw": "A kite in the sky."}],
        },
    ],
}


# --- COCO ---------------------------------------------------------------------------------


def test_coco_groups_per_image_in_image_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        records = load_captions(write_json(tmp_path / "captions_val2014.json", COCO))
    assert as_tuples(records) == [
        ("42", "COCO_val2014_000000000042.jpg", ["Two cats."]),
        ("7", "COCO_val2014_000000000007.jpg", ["A dog on a sofa.", "A brown dog resting."]),
    ]
    assert "no caption" in caplog.text
    assert "99" in caplog.text


def test_coco_has_no_splits(tmp_path: Path) -> None:
    path = write_json(tmp_path / "captions.json", COCO)
    with pytest.raises(ValueError, match="no split information"):
        load_captions(path, split="train")


def test_coco_detection_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    document = {"images": COCO["images"], "annotations": [{"image_id": 7, "bbox": [0, 0, 1, 1]}]}
    with pytest.raises(ValueError, match="captions file"):
        load_captions(write_json(tmp_path / "instances.json", document))


def test_coco_image_without_file_name(tmp_path: Path) -> None:
    document = {"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "x"}]}
    with pytest.raises(ValueError, match=r"images\[0\] has no 'file_name'"):
        load_captions(write_json(tmp_path / "bad.json", document))


# --- Karpathy -----------------------------------------------------------------------------


def test_karpathy_all_splits_with_filepath_join(tmp_path: Path) -> None:
    records = load_captions(write_json(tmp_path / "dataset_coco.json", KARPATHY))
    assert [r.file_name for r in records] == [
        "train2014/a.jpg",
        "val2014/b.jpg",
        "val2014/c.jpg",
        "val2014/d.jpg",
    ]
    assert records[0].image_id == "11"
    assert records[1].captions == ["A red bus.", "Bus on a street."]  # raw text, not tokens


def test_karpathy_train_includes_restval(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dataset_coco.json", KARPATHY)
    assert [r.file_name for r in load_captions(path, split="train")] == [
        "train2014/a.jpg",
        "val2014/b.jpg",
    ]
    assert [r.image_id for r in load_captions(path, split="restval")] == ["12"]
    assert [r.image_id for r in load_captions(path, split="val")] == ["13"]
    assert [r.image_id for r in load_captions(path, split="test")] == ["14"]


def test_karpathy_flickr_without_filepath_uses_imgid(tmp_path: Path) -> None:
    document = {
        "dataset": "flickr8k",
        "images": [
            {
                "filename": "1000268201_693b08cb0e.jpg",
                "imgid": 0,
                "split": "test",
                "sentences": [{"raw": "A child in a pink dress."}],
            }
        ],
    }
    records = load_captions(write_json(tmp_path / "dataset_flickr8k.json", document))
    assert as_tuples(records) == [("0", "1000268201_693b08cb0e.jpg", ["A child in a pink dress."])]


def test_karpathy_unknown_split_lists_the_splits_found(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dataset_coco.json", KARPATHY)
    with pytest.raises(ValueError, match="splits in the file") as info:
        load_captions(path, split="validation")
    assert "'val'" in str(info.value)
    assert "'restval'" in str(info.value)


def test_karpathy_without_sentences(tmp_path: Path) -> None:
    document = {"images": [{"filename": "a.jpg", "split": "train"}]}
    with pytest.raises(ValueError, match="no 'sentences'"):
        load_captions(write_json(tmp_path / "dataset.json", document))


# --- CSV ----------------------------------------------------------------------------------


def test_csv_groups_rows_by_image(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_text(
        'image,caption\nb.jpg,A dog runs.\na.jpg,"A cat, sleeping."\nb.jpg,The dog is brown.\n\n',
        encoding="utf-8",
    )
    assert as_tuples(load_captions(path)) == [
        ("b.jpg", "b.jpg", ["A dog runs.", "The dog is brown."]),
        ("a.jpg", "a.jpg", ["A cat, sleeping."]),
    ]


def test_csv_with_bom_extra_columns_and_split(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_text(
        "\ufeffImage_ID,Image,Caption,Split\nx1,imgs/x.png,One.,train\ny1,imgs/y.png,Two.,test\n",
        encoding="utf-8",
    )
    assert as_tuples(load_captions(path, split="test")) == [("y1", "imgs/y.png", ["Two."])]


def test_csv_split_without_split_column(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\na.jpg,One.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no split information"):
        load_captions(path, split="train")


def test_csv_missing_columns_names_what_was_found(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_text("file,text\na.jpg,One.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="image, caption") as info:
        load_captions(path)
    assert "'file'" in str(info.value)
    assert str(path) in str(info.value)


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\na.jpg,One.\nb.jpg,A dog, running,fast\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 has 4 fields"):
        load_captions(path)


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_single_and_list_captions(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    lines = [
        {"image": "a.jpg", "caption": "First."},
        {"image": "b.jpg", "captions": ["Second.", "Third."]},
        {"image": "a.jpg", "caption": "Fourth."},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    assert as_tuples(load_captions(path)) == [
        ("a.jpg", "a.jpg", ["First.", "Fourth."]),
        ("b.jpg", "b.jpg", ["Second.", "Third."]),
    ]


def test_jsonl_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image": "a.jpg", "caption": "ok"}\n\n{"image": "b.jpg",\n', encoding="utf8")
    with pytest.raises(ValueError, match="line 3 is not valid JSON"):
        load_captions(path)


def test_jsonl_missing_caption_key(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image": "a.jpg", "text": "nope"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1 needs a 'caption'"):
        load_captions(path)


def test_jsonl_split_filter(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    rows = [
        {"image": "a.jpg", "caption": "A.", "split": "restval"},
        {"image": "b.jpg", "caption": "B.", "split": "val"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert [r.file_name for r in load_captions(path, split="train")] == ["a.jpg"]


# --- unknown input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.json", "", "file is empty"),
        ("broken.json", '{"images": [', "invalid JSON at line 1"),
        ("list.json", "[1, 2]", "JSON list"),
        ("other.json", '{"foo": 1}', "keys foo"),
        ("flickr8k.token.txt", "1000268201_693b08cb0e.jpg#0\tA child.\n", "lacks the column"),
    ],
)
def test_unknown_input_names_file_and_expected_formats(
    tmp_path: Path, name: str, content: str, words: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=words) as info:
        load_captions(path)
    assert str(path) in str(info.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("image,caption\na.jpg,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_captions(path)
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        load_captions(tmp_path / "missing.json")


def test_file_with_no_captions_at_all(tmp_path: Path) -> None:
    document = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}
    with pytest.raises(ValueError, match="no captions found"):
        load_captions(write_json(tmp_path / "captions.json", document))
