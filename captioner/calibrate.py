"""Out-of-domain detection for caption bundles: how far an image's features are from the
images the model was trained on.

``captioner calibrate BUNDLE --images DIR`` encodes training images with the bundle's own
encoder (the pipeline's encoding path), stores the per-dimension mean and standard deviation of
their pooled features, the features themselves (half precision) and the 99th percentile of
their distances in ``domain.safetensors``, and
lists that file (with its sha256) in the manifest. A captioner loaded from a calibrated bundle
reports each image's ``domain_distance`` and ``out_of_domain`` (distance above the threshold).

The distance is the cosine distance to the nearest calibration images (see
:class:`~captioner.bundle.domain.DomainStats`, which lives in the bundle room with its reader
and writer, and is re-exported here); the file also keeps the per-dimension mean and spread of
the features. This job sits above inference: it encodes through the pipeline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from captioner.bundle.domain import (
    DEFAULT_NEIGHBOURS,
    DEFAULT_PERCENTILE,
    DOMAIN_FILE,
    DomainStats,
    domain_stats,
    write_domain,
)
from captioner.data.images import ImageFiles, expand_paths, image_loader
from captioner.inference import Captioner
from captioner.media import IMAGE_SUFFIXES
from captioner.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_NEIGHBOURS",
    "DEFAULT_PERCENTILE",
    "DOMAIN_FILE",
    "DomainStats",
    "calibrate",
    "domain_stats",
    "write_domain",
]


def calibrate(
    bundle: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    limit: int | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    neighbours: int = DEFAULT_NEIGHBOURS,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "auto",
    progress: bool = True,
    note: dict | None = None,
) -> DomainStats:
    """Encode in-domain ``images`` (files, folders, globs) with the bundle's encoder, fit the
    domain statistics and write them into the bundle (``note``: extra facts for the manifest's
    ``domain`` entry, e.g. how the images were made). -> the statistics."""
    if not 0 < percentile <= 100:
        raise ValueError(f"--percentile must be in (0, 100], got {percentile}")
    paths, unmatched = expand_paths([str(p) for p in images], IMAGE_SUFFIXES)
    if unmatched:
        raise FileNotFoundError(f"no images at: {', '.join(unmatched)}")
    paths = paths[:limit] if limit else paths
    if len(paths) <= neighbours:
        raise ValueError(
            f"calibration needs more than {neighbours} images (--neighbours), found {len(paths)}"
        )
    cap = Captioner.from_bundle(bundle, device=device)
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
    feats = torch.cat(pooled) if pooled else torch.empty(0, 0)
    stats = DomainStats.fit(feats, percentile, neighbours)
    info = {"images": int(feats.size(0)), "data": [str(p) for p in images], **(note or {})}
    write_domain(bundle, stats, info)
    log.info(
        "%s: domain of %d images, out-of-domain above distance %.3f (%gth percentile)",
        bundle,
        feats.size(0),
        stats.threshold,
        percentile,
    )
    return stats
