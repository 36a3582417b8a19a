"""Real photographs for evaluation: hand labels (committed) and the images (fetched).

The labels live in ``captioner/data/real_photos.json`` (package data): for each picture an id,
where it comes from (scikit-image's data folder, or a path inside one of the Debian packages
``gnome-backgrounds``, ``plasma-workspace-wallpapers``, ``desktop-base``; optionally a crop or
a row of an ``.npy`` array), the sha256 of that file, and what a person sees in it. No image is
committed: :func:`generate_photos` (``captioner data photos``) fetches the packages the way
the object bank does and writes ``DIR/images/<id>.png`` and ``DIR/photos.json``, the file
``captioner evaluate caption --photos DIR`` reads.

The ``heldout`` split must never be tuned on (see the file's ``info.heldout``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captioner.data.objects_fetch import PackageFetchError, fetch_package
from captioner.files import atomic_write_text

__all__ = [
    "KINDS",
    "LABELS",
    "PACKAGES",
    "PhotoLabelError",
    "generate_photos",
    "load_labels",
    "split_of",
    "validate_labels",
]

logger = logging.getLogger(__name__)

LABELS = "real_photos.json"
#: The only sources photos may come from ("skimage": ``skimage.data.data_dir``).
PACKAGES: tuple[str, ...] = (
    "skimage",
    "gnome-backgrounds",
    "plasma-workspace-wallpapers",
    "desktop-base",
)
#: ``photo`` is an everyday photograph; every other kind is not one (out of domain).
KINDS: tuple[str, ...] = (
    "photo",
    "artwork",
    "graphic",
    "drawing",
    "texture",
    "text",
    "screenshot",
    "microscopy",
    "medical",
    "night_sky",
    "astronomy",
    "coins",
    "other",
)
SPLITS: tuple[str, ...] = ("tune", "heldout")
#: Written images have at most this many pixels on their longer side (the encoder sees 224).
MAX_SIDE = 1600
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "group": str,
    "split": str,
    "source": dict,
    "sha256": str,
    "kind": str,
    "subject": list,
    "count": (int, type(None)),
    "others": list,
    "people": int,
    "scene": list,
    "seen_in_training": (str, type(None)),
    "note": str,
}


class PhotoLabelError(ValueError):
    """The label file is malformed (the message names the photo and the field)."""


def split_of(group: str) -> str:
    """``heldout`` when the first byte of sha256(group) is odd, else ``tune``.

    Crops of one photograph share its group, so no photograph is in both splits.
    """
    return "heldout" if hashlib.sha256(group.encode("utf-8")).digest()[0] % 2 else "tune"


def load_labels(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The label file (default: the shipped one), checked by :func:`validate_labels`."""
    if path is None:
        text = (files("captioner") / "data" / LABELS).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    doc = json.loads(text)
    validate_labels(doc)
    return doc


def validate_labels(doc: Mapping[str, Any]) -> None:
    """Raise :class:`PhotoLabelError` unless every photo has the fields, types and rules."""
    photos = doc.get("photos") if isinstance(doc, Mapping) else None
    if not isinstance(photos, list) or not photos:
        raise PhotoLabelError("a photo label file needs a non-empty 'photos' list")
    seen: set[str] = set()
    for i, photo in enumerate(photos):
        where = f"photos[{i}] ({photo.get('id', '?')})" if isinstance(photo, dict) else f"[{i}]"
        if not isinstance(photo, dict):
            raise PhotoLabelError(f"{where}: must be an object")
        for name, kind in _FIELDS.items():
            if name not in photo:
                raise PhotoLabelError(f"{where}: missing field {name!r}")
            if not isinstance(photo[name], kind) or isinstance(photo[name], bool):
                raise PhotoLabelError(f"{where}: {name!r} has the wrong type")
        if photo["id"] in seen:
            raise PhotoLabelError(f"{where}: duplicate id")
        seen.add(photo["id"])
        source = photo["source"]
        if source.get("package") not in PACKAGES or not isinstance(source.get("path"), str):
            raise PhotoLabelError(f"{where}: source.package must be one of {', '.join(PACKAGES)}")
        crop = source.get("crop")
        if crop is not None and not (
            len(crop) == 4 and 0 <= crop[0] < crop[2] <= 1 and 0 <= crop[1] < crop[3] <= 1
        ):
            raise PhotoLabelError(f"{where}: source.crop must be [x0, y0, x1, y1] within 0..1")
        if photo["kind"] not in KINDS:
            raise PhotoLabelError(f"{where}: kind must be one of {', '.join(KINDS)}")
        if photo["split"] != split_of(photo["group"]):
            raise PhotoLabelError(f"{where}: split must be {split_of(photo['group'])!r}")
        if len(photo["sha256"]) != 64:
            raise PhotoLabelError(f"{where}: sha256 must be 64 hex digits")
        for name in ("subject", "others", "scene"):
            if not all(isinstance(w, str) and w == w.strip().lower() and w for w in photo[name]):
                raise PhotoLabelError(f"{where}: {name!r} must hold lower-case words")
        if photo["people"] < 0 or (photo["count"] is not None and photo["count"] < 1):
            raise PhotoLabelError(f"{where}: people must be >= 0 and count >= 1 (or null)")


def _skimage_root() -> Path:
    import skimage.data

    return Path(skimage.data.data_dir)


def _read_image(path: Path, source: Mapping[str, Any]) -> Image.Image:
    """The picture a label describes: the file, a row of an .npy array, then the crop."""
    if "index" in source:
        array = np.load(path)[int(source["index"])]
        if array.dtype != np.uint8:
            array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
    else:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    image = image.convert("RGB")
    crop = source.get("crop")
    if crop:
        w, h = image.size
        box = (round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h))
        image = image.crop(box)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def generate_photos(
    out: str | os.PathLike,
    packages: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    fetch: Callable[..., Path] = fetch_package,
) -> dict[str, Any]:
    """Write ``out/images/<id>.png`` and ``out/photos.json`` for every labelled photo found.

    ``packages``: a folder holding the Debian packages already unpacked, one sub-folder each
    (``packages/gnome-backgrounds/usr/...``); without it each package is fetched once with
    ``apt-get download`` + ``dpkg -x`` (see :func:`captioner.data.objects_fetch.fetch_package`).
    A photo whose file is missing, or whose sha256 differs from the label's (the package was
    updated, so the label may no longer fit), is skipped with a warning and listed under
    ``skipped``; so are all photos of a package that cannot be fetched. Returns the summary.
    """
    doc = load_labels(labels)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path | None] = {}

    def root_of(package: str) -> Path | None:
        if package not in roots:
            if package == "skimage":
                roots[package] = _skimage_root()
            elif packages is not None:
                roots[package] = Path(packages) / package
            else:
                try:
                    roots[package] = fetch(package, cache, hint="or pass --packages DIR")
                except PackageFetchError as exc:
                    logger.warning("%s: its photos are skipped", exc)
                    roots[package] = None
        return roots[package]

    written: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for photo in doc["photos"]:
        source = photo["source"]
        root = root_of(source["package"])
        path = root / source["path"] if root is not None else None
        if path is None or not path.is_file():
            reason = f"{source['package']}: {source['path']} not found"
        elif _sha256(path) != photo["sha256"]:
            reason = f"{source['package']}: {source['path']} has another sha256 (updated?)"
        else:
            reason = ""
        if reason:
            logger.warning("photo %s skipped: %s", photo["id"], reason)
            skipped.append({"id": photo["id"], "reason": reason})
            continue
        name = f"{photo['id']}.png"
        _read_image(path, source).save(out / "images" / name)
        written.append({**photo, "file_name": name})
    result = {"info": doc.get("info", {}), "photos": written, "skipped": skipped}
    atomic_write_text(out / "photos.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return {
        "labels": str(out / "photos.json"),
        "images": str(out / "images"),
        "written": len(written),
        "skipped": skipped,
    }
