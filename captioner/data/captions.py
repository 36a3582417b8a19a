"""Caption annotation readers: COCO, Karpathy splits, CSV and JSONL.

Plain data only (no torch): :func:`load_captions` reads a file into a list of
:class:`CaptionRecord`, one per image, in file order. Accepted layouts:

* COCO captions JSON (``captions_train2014.json``)::

      {"images": [{"id": 9, "file_name": "a.jpg"}, ...],
       "annotations": [{"image_id": 9, "caption": "A cat."}, ...]}

* Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr8k.json``,
  ``dataset_flickr30k.json``)::

      {"images": [{"filepath": "val2014", "filename": "a.jpg", "split": "test",
                   "cocoid": 9, "sentences": [{"raw": "A cat.", "tokens": [...]}]}, ...]}

* CSV with a header holding ``image`` and ``caption`` columns, one row per caption
  (optional ``image_id`` and ``split`` columns); ``.tsv`` files are read tab-separated.
* JSONL, one object per line: ``{"image": "a.jpg", "caption": "A cat."}`` or
  ``{"image": "a.jpg", "captions": ["A cat.", ...]}`` (optional ``image_id``, ``split``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["CaptionRecord", "load_captions"]

logger = logging.getLogger(__name__)

_FORMATS_HELP = (
    "COCO captions JSON ({'images': [...], 'annotations': [...]}), "
    "Karpathy split JSON ({'images': [{'filename', 'split', 'sentences'}]}), "
    "CSV with 'image' and 'caption' columns, "
    "or JSONL lines {'image': ..., 'caption': ...} / {'image': ..., 'captions': [...]}"
)
_KARPATHY_ID_KEYS = ("cocoid", "imgid", "id")
# Karpathy's COCO split keeps ~30k validation images as extra training data under "restval".
_SPLIT_ALIASES = {"train": frozenset({"train", "restval"})}


@dataclass
class CaptionRecord:
    """One image and all of its reference captions.

    ``file_name`` is relative to the images folder the user gives (``/`` separated).
    """

    image_id: str
    file_name: str
    captions: list[str] = field(default_factory=list)


def load_captions(path: str | os.PathLike, split: str | None = None) -> list[CaptionRecord]:
    """Read caption annotations from ``path``, detecting the format from its content.

    Records keep the order in which images first appear in the file; captions of the
    same image are grouped into one record. ``split`` keeps only images of that split
    (Karpathy files, or CSV/JSONL with a ``split`` column); ``"train"`` also takes
    ``"restval"``, as in Karpathy's COCO split. ``None`` keeps every image.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is in none of the accepted formats, is malformed (the
            message names the file and the place), has no captions, or ``split`` is
            given for a format without splits or matches no image.
    """
    path = Path(path)
    if split is not None and (not isinstance(split, str) or not split.strip()):
        raise ValueError(f"split must be a non-empty string such as 'train' or None, got {split!r}")
    text = _read_text(path)
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"{path}: file is empty; expected {_FORMATS_HELP}")
    suffix = path.suffix.lower()
    if stripped.startswith("{") and suffix not in (".jsonl", ".ndjson"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":
                raise ValueError(
                    f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                ) from None
            # One complete object followed by more: JSONL under another file name.
            records = _read_jsonl(path, text)
        else:
            records = _read_json_document(path, document)
    elif stripped.startswith("{"):
        records = _read_jsonl(path, text)
    elif stripped.startswith("["):
        raise ValueError(f"{path}: found a JSON list at the top level; expected {_FORMATS_HELP}")
    else:
        records = _read_csv(path, text, delimiter="\t" if suffix == ".tsv" else ",")
    records = _filter_split(path, records, split)
    result = [record for record, _ in records]
    if not result:
        raise ValueError(f"{path}: no captions found; expected {_FORMATS_HELP}")
    return result


# A record paired with its split (None when the format has no splits or the row has none).
_Split = tuple[CaptionRecord, str | None]


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"caption file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass the caption annotation file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {exc.start}); expected {_FORMATS_HELP}"
        ) from None


def _read_json_document(path: Path, document: Any) -> list[_Split]:
    if not isinstance(document, dict):
        raise ValueError(f"{path}: found JSON {type(document).__name__}; expected {_FORMATS_HELP}")
    if "annotations" in document:
        return _keep_captioned(path, [(record, None) for record in _read_coco(path, document)])
    if "images" in document:
        return _read_karpathy(path, document)
    if "image" in document:
        # A single-line JSONL file parses as one JSON object.
        return _read_jsonl(path, json.dumps(document))
    keys = ", ".join(sorted(map(str, document))[:10]) or "none"
    raise ValueError(f"{path}: JSON object with keys {keys}; expected {_FORMATS_HELP}")


def _read_coco(path: Path, document: dict[str, Any]) -> list[CaptionRecord]:
    images = _list_field(path, document, "images", "COCO captions JSON")
    annotations = _list_field(path, document, "annotations", "COCO captions JSON")
    if annotations and isinstance(annotations[0], dict) and "caption" not in annotations[0]:
        raise ValueError(
            f"{path}: annotations[0] has no 'caption'; this looks like a COCO detection or "
            "keypoints file, use the captions file (captions_train2014.json and the like)"
        )
    by_id: dict[str, CaptionRecord] = {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        image_id = _id_str(path, where, _require(path, image, where, "id"))
        file_name = _str_field(path, image, where, "file_name")
        if image_id in by_id:
            logger.warning("%s: image id %s listed twice; keeping the first", path, image_id)
            continue
        by_id[image_id] = CaptionRecord(image_id=image_id, file_name=file_name)
    orphans = empty = 0
    for index, annotation in enumerate(annotations):
        where = f"annotations[{index}]"
        image_id = _id_str(path, where, _require(path, annotation, where, "image_id"))
        caption = _str_field(path, annotation, where, "caption").strip()
        record = by_id.get(image_id)
        if record is None:
            orphans += 1
        elif not caption:
            empty += 1
        else:
            record.captions.append(caption)
    if orphans:
        logger.warning(
            "%s: %d annotations name an image id not in 'images'; skipped", path, orphans
        )
    _warn_empty(path, empty)
    return list(by_id.values())


def _read_karpathy(path: Path, document: dict[str, Any]) -> list[_Split]:
    images = _list_field(path, document, "images", "Karpathy split JSON")
    records: list[_Split] = []
    empty = 0
    for index, image in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(image, dict) or "sentences" not in image:
            raise ValueError(
                f"{path}: {where} has no 'sentences'; a JSON with 'images' but no "
                f"'annotations' is read as Karpathy split JSON. Expected {_FORMATS_HELP}"
            )
        filename = _str_field(path, image, where, "filename")
        filepath = image.get("filepath")
        if filepath:
            filename = str(PurePosixPath(str(filepath)) / filename)
        image_id = next(
            (_id_str(path, where, image[k]) for k in _KARPATHY_ID_KEYS if k in image), filename
        )
        sentences = image["sentences"]
        if not isinstance(sentences, list):
            raise ValueError(f"{path}: {where}.sentences must be a list, got {sentences!r:.60}")
        captions = []
        for number, sentence in enumerate(sentences):
            text = _sentence_text(path, f"{where}.sentences[{number}]", sentence)
            if text:
                captions.append(text)
            else:
                empty += 1
        split = image.get("split")
        records.append(
            (
                CaptionRecord(image_id=image_id, file_name=filename, captions=captions),
                None if split is None else str(split),
            )
        )
    _warn_empty(path, empty)
    return _keep_captioned(path, records)


def _sentence_text(path: Path, where: str, sentence: Any) -> str:
    if not isinstance(sentence, dict):
        raise ValueError(f"{path}: {where} must be an object with 'raw', got {sentence!r:.60}")
    raw = sentence.get("raw")
    if isinstance(raw, str):
        return raw.strip()
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens).strip()
    raise ValueError(f"{path}: {where} has neither a 'raw' string nor a 'tokens' list")


def _read_csv(path: Path, text: str, delimiter: str) -> list[_Split]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        header = []
    except csv.Error as exc:
        raise ValueError(f"{path}: unreadable CSV header: {exc}") from None
    columns = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [name for name in ("image", "caption") if name not in columns]
    if missing:
        found = ", ".join(repr(h) for h in header[:10]) or "nothing"
        raise ValueError(
            f"{path}: CSV header lacks the column(s) {', '.join(missing)}; found {found}. "
            f"Expected {_FORMATS_HELP}"
        )
    grouper = _Grouper(path)
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
                    " (quote captions that contain the delimiter)"
                )
            grouper.add(
                f"line {line}",
                image=row[columns["image"]],
                captions=[row[columns["caption"]]],
                image_id=row[columns["image_id"]] if "image_id" in columns else None,
                split=row[columns["split"]] if "split" in columns else None,
            )
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed CSV at line {reader.line_num}: {exc}") from None
    return grouper.records()


def _read_jsonl(path: Path, text: str) -> list[_Split]:
    grouper = _Grouper(path)
    for number, line in _numbered_lines(text):
        where = f"line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: {where} is not valid JSON ({exc.msg}, column {exc.colno}); "
                'expected one object per line such as {"image": "a.jpg", "caption": "..."}'
            ) from None
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(
                f"{path}: {where} has no 'image' key; expected {{'image': ..., 'caption': ...}} "
                "or {'image': ..., 'captions': [...]}"
            )
        if "caption" in item:
            captions = [item["caption"]]
        elif "captions" in item and isinstance(item["captions"], list):
            captions = item["captions"]
        else:
            raise ValueError(
                f"{path}: {where} needs a 'caption' string or a 'captions' list; "
                f"found keys {', '.join(sorted(item))}"
            )
        grouper.add(
            where,
            image=item["image"],
            captions=captions,
            image_id=item.get("image_id"),
            split=item.get("split"),
        )
    return grouper.records()


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


class _Grouper:
    """Collects one-caption-per-row formats into records, in order of first appearance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_image: dict[str, tuple[CaptionRecord, str | None]] = {}
        self.empty = 0

    def add(
        self,
        where: str,
        image: Any,
        captions: Iterable[Any],
        image_id: Any = None,
        split: Any = None,
    ) -> None:
        if not isinstance(image, str) or not image.strip():
            raise ValueError(f"{self.path}: {where} has an empty or non-string image name")
        image = image.strip()
        split = None if split is None or str(split).strip() == "" else str(split).strip()
        entry = self.by_image.get(image)
        if entry is None:
            ident = image if image_id is None or str(image_id).strip() == "" else str(image_id)
            entry = (CaptionRecord(image_id=ident.strip(), file_name=image), split)
            self.by_image[image] = entry
        elif split is not None and entry[1] is not None and split != entry[1]:
            raise ValueError(
                f"{self.path}: {where} puts {image} in split {split!r}, "
                f"an earlier row put it in {entry[1]!r}"
            )
        for caption in captions:
            if not isinstance(caption, str):
                raise ValueError(f"{self.path}: {where} has a non-string caption {caption!r:.60}")
            caption = caption.strip()
            if caption:
                entry[0].captions.append(caption)
            else:
                self.empty += 1

    def records(self) -> list[_Split]:
        _warn_empty(self.path, self.empty)
        return _keep_captioned(self.path, list(self.by_image.values()))


def _filter_split(path: Path, records: list[_Split], split: str | None) -> list[_Split]:
    if split is None:
        return records
    if all(s is None for _, s in records):
        raise ValueError(
            f"{path}: split={split!r} was given but this file has no split information "
            "(only Karpathy JSON, or CSV/JSONL with a 'split' column, have splits); "
            "pass split=None"
        )
    wanted = _SPLIT_ALIASES.get(split, frozenset({split}))
    kept = [(r, s) for r, s in records if s in wanted]
    if not kept:
        found = sorted({s for _, s in records if s is not None})
        raise ValueError(f"{path}: no image in split {split!r}; splits in the file: {found}")
    return kept


def _keep_captioned(path: Path, records: list[_Split]) -> list[_Split]:
    kept = [(r, s) for r, s in records if r.captions]
    dropped = [r.image_id for r, _ in records if not r.captions]
    if dropped:
        sample = ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        logger.warning(
            "%s: %d images have no caption and were dropped (%s)", path, len(dropped), sample
        )
    return kept


def _warn_empty(path: Path, count: int) -> None:
    if count:
        logger.warning("%s: %d empty captions skipped", path, count)


def _list_field(path: Path, document: dict[str, Any], key: str, kind: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise ValueError(
            f"{path}: read as {kind}, but '{key}' is "
            f"{'missing' if value is None else type(value).__name__}, not a list"
        )
    return value


def _require(path: Path, item: Any, where: str, key: str) -> Any:
    if not isinstance(item, dict) or key not in item:
        raise ValueError(f"{path}: {where} has no '{key}'")
    return item[key]


def _str_field(path: Path, item: Any, where: str, key: str) -> str:
    value = _require(path, item, where, key)
    if not isinstance(value, str):
        raise ValueError(f"{path}: {where}.{key} must be a string, got {value!r:.60}")
    return value


def _id_str(path: Path, where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise ValueError(f"{path}: {where} has an invalid image id {value!r:.60}")
    return str(value).strip()
