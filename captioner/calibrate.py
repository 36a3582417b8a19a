"""Out-of-domain detection for caption bundles: is an image like the pictures the model was
made for, or like the kinds it was not (text, screenshots, microscopy, the night sky)?

``captioner calibrate BUNDLE`` encodes pictures with the bundle's own encoder (the
pipeline's encoding path) and stores their pooled features (half precision) in
``domain.safetensors``, listed with its sha256 in the manifest:

- in-domain references: ``--images`` (training pictures, everyday photographs) and the
  everyday photographs of a real-photo set's ``tune`` split (``--photos DIR``, with
  ``--crops`` random crops of each);
- optionally out-of-domain references: ``--outside`` images, the ``tune`` split's
  non-photographs of :data:`OUTSIDE_KINDS`, and ``--foreign N`` generated pictures of each
  kind of :mod:`captioner.data.foreign`.

With ``--add`` the stored features are kept and the new ones added; the threshold is
recomputed. A captioner loaded from a calibrated bundle reports each image's
``domain_distance`` and ``out_of_domain``; the rule is :class:`~captioner.bundle.domain.
DomainStats`' (in the bundle room with its reader and writer, re-exported here). This job
sits above inference: it encodes through the pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from captioner.bundle import read_manifest
from captioner.bundle.domain import (
    DEFAULT_FAR,
    DEFAULT_MARGIN,
    DEFAULT_NEIGHBOURS,
    DEFAULT_PERCENTILE,
    DOMAIN_FILE,
    DomainStats,
    domain_stats,
    write_domain,
)
from captioner.data.images import ImageFiles, expand_paths, image_loader
from captioner.data.real_photos import KINDS
from captioner.inference import Captioner
from captioner.media import IMAGE_SUFFIXES
from captioner.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FAR",
    "DEFAULT_MARGIN",
    "DEFAULT_NEIGHBOURS",
    "DEFAULT_PERCENTILE",
    "DOMAIN_FILE",
    "OUTSIDE_KINDS",
    "DomainStats",
    "calibrate",
    "domain_stats",
    "photo_crops",
    "write_domain",
]

#: Kinds of the real-photo set (:data:`captioner.data.real_photos.KINDS`) whose ``tune``
#: pictures join the out-of-domain references. Not artwork, textures or drawings: painted
#: landscapes as references pulled dark and painterly photographs out of the domain (on the
#: tune split, ``DarkestHour`` sat on the margin).
OUTSIDE_KINDS = frozenset(KINDS) - {"photo", "artwork", "drawing", "texture"}
_RULE_KEYS = ("file", "distance", "threshold", "percentile", "far", "outside")


def photo_crops(image: Image.Image, n: int, key: str) -> list[Image.Image]:
    """``n`` random crops of ``image`` (35-90% of each side, half of them mirrored), the same
    for the same ``key``: more views of a few photographs for the reference sets."""
    r = random.Random(key)
    w, h = image.size
    out = []
    for _ in range(n):
        s = r.uniform(0.35, 0.9)
        cw, ch = max(1, int(w * s)), max(1, min(h, int(h * s * r.uniform(0.8, 1.2))))
        x0, y0 = r.randint(0, w - cw), r.randint(0, h - ch)
        crop = image.crop((x0, y0, x0 + cw, y0 + ch))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if r.random() < 0.5 else crop)
    return out


def _encode_files(
    cap: Captioner, paths: Sequence[str], batch_size: int, workers: int, progress: bool
) -> torch.Tensor:
    """Image files -> (N, C) pooled features (unreadable files skipped with a warning)."""
    if not paths:
        return torch.empty(0, 0)
    loader = image_loader(ImageFiles(paths, cap.preprocess, cap.limits), batch_size, workers)
    pooled, skipped = [], 0
    with progress_bar(total=len(paths), desc="calibrating", unit="file", enabled=progress) as bar:
        for batch in loader:
            good = [j for j, e in enumerate(batch["error"]) if not e]
            skipped += len(batch["error"]) - len(good)
            if good:
                pooled.append(cap.pooled_features(cap.encode(batch["image"][good])).cpu())
            bar.update(len(batch["error"]))
    if skipped:
        log.warning("%d unreadable images skipped", skipped)
    return torch.cat(pooled) if pooled else torch.empty(0, 0)


def _encode_pictures(
    cap: Captioner, pictures: Sequence[Image.Image], batch_size: int
) -> torch.Tensor:
    """Pictures in memory -> (N, C) pooled features, through the pipeline's preprocessing."""
    pooled = []
    for start in range(0, len(pictures), batch_size):
        chunk = pictures[start : start + batch_size]
        x = torch.stack([cap.preprocess.to_uint8(p.convert("RGB")) for p in chunk])
        pooled.append(cap.pooled_features(cap.encode(x)).cpu())
    return torch.cat(pooled) if pooled else torch.empty(0, 0)


def _tune_photos(
    folder: Path, crops: int
) -> tuple[list[Image.Image], list[Image.Image], dict[str, Any]]:
    """The ``tune`` split of a real-photo set (``captioner data photos``): everyday photos
    (and their crops) for the in-domain set, :data:`OUTSIDE_KINDS` for the other. The
    ``heldout`` split is never read."""
    labels_path = folder / "photos.json"
    if not labels_path.is_file():
        raise FileNotFoundError(
            f"{labels_path} not found: write it with captioner data photos --out {folder}"
        )
    photos = json.loads(labels_path.read_text(encoding="utf-8"))["photos"]
    inside: list[Image.Image] = []
    outside: list[Image.Image] = []
    used = {"photos": 0, "non_photos": 0}
    for p in photos:
        if p["split"] != "tune" or (p["kind"] != "photo" and p["kind"] not in OUTSIDE_KINDS):
            continue
        with Image.open(folder / "images" / p["file_name"]) as opened:
            image = opened.convert("RGB")
        views = [image, *photo_crops(image, crops, p["id"])]
        (inside if p["kind"] == "photo" else outside).extend(views)
        used["photos" if p["kind"] == "photo" else "non_photos"] += 1
    return inside, outside, {"tune_split": str(folder), **used, "crops": crops}


def _stack(parts: Sequence[torch.Tensor]) -> torch.Tensor | None:
    parts = [p for p in parts if p.numel()]
    return torch.cat(parts) if parts else None


def calibrate(
    bundle: str | os.PathLike,
    images: Sequence[str | os.PathLike] = (),
    limit: int | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    neighbours: int = DEFAULT_NEIGHBOURS,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "auto",
    progress: bool = True,
    note: dict | None = None,
    *,
    outside: Sequence[str | os.PathLike] = (),
    photos: str | os.PathLike | None = None,
    crops: int = 0,
    foreign: int = 0,
    seed: int = 0,
    margin: float | None = None,
    far: float | None = None,
    add: bool = False,
) -> DomainStats:
    """Encode in-domain ``images`` (files, folders, globs) and the other references named
    above with the bundle's encoder, fit the domain statistics (or, with ``add``, extend the
    stored ones) and write them into the bundle. ``note``: extra facts for the manifest's
    ``domain`` entry (the command). -> the statistics."""
    if not 0 < percentile <= 100:
        raise ValueError(f"--percentile must be in (0, 100], got {percentile}")
    if not (images or outside or photos or foreign):
        raise ValueError("nothing to calibrate on: give --images, --outside, --photos or --foreign")
    found: dict[str, list[str]] = {}
    for name, given in (("images", images), ("outside", outside)):
        paths, unmatched = expand_paths([str(p) for p in given], IMAGE_SUFFIXES)
        if unmatched:
            raise FileNotFoundError(f"no images at: {', '.join(unmatched)}")
        found[name] = paths[:limit] if (limit and name == "images") else paths
    cap = Captioner.from_bundle(bundle, device=device)
    stored = cap.domain
    if add and stored is None:
        raise ValueError(f"{bundle} has no calibration to add to: run without --add first")
    in_parts = [_encode_files(cap, found["images"], batch_size, workers, progress)]
    out_parts = [_encode_files(cap, found["outside"], batch_size, workers, progress)]
    sources: dict[str, Any] = {}
    if photos is not None:
        inside, other, sources["photos"] = _tune_photos(Path(photos), crops)
        in_parts.append(_encode_pictures(cap, inside, batch_size))
        out_parts.append(_encode_pictures(cap, other, batch_size))
    if foreign:
        from captioner.data.foreign import foreign_pictures

        drawn = [image for _, image in foreign_pictures(foreign, seed)]
        out_parts.append(_encode_pictures(cap, drawn, batch_size))
        sources["foreign"] = {"per_kind": foreign, "seed": seed}
    new_in, new_out = _stack(in_parts), _stack(out_parts)
    n_in = 0 if new_in is None else int(new_in.size(0))
    n_out = 0 if new_out is None else int(new_out.size(0))
    step = {
        **(note or {}),
        "images": n_in,
        **({"outside_images": n_out} if n_out else {}),
        "data": [str(p) for p in images],
        **({"outside_data": [str(p) for p in outside]} if outside else {}),
        **sources,
    }
    if add:
        assert stored is not None
        stats = stored.extend(new_in, new_out, margin, far)
        before = read_manifest(Path(bundle)).get("domain", {})
        kept = {k: v for k, v in before.items() if k not in _RULE_KEYS}
        info = {
            **kept,
            "images": int(stats.features.size(0)),
            "added": [*kept.get("added", []), step],
        }
    else:
        if new_in is None or n_in <= neighbours:
            raise ValueError(
                f"calibration needs more than {neighbours} images (--neighbours), found {n_in}"
            )
        stats = DomainStats.fit(
            new_in,
            percentile,
            neighbours,
            outside=new_out,
            margin=DEFAULT_MARGIN if margin is None else margin,
            far=DEFAULT_FAR if far is None else far,
        )
        info = step
    write_domain(bundle, stats, info)
    log.info(
        "%s: domain of %d images (%d out-of-domain references), out of domain above %.3f",
        bundle,
        stats.features.size(0),
        0 if stats.outside is None else stats.outside.size(0),
        stats.threshold,
    )
    return stats
