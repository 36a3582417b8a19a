"""Out-of-domain detection for caption bundles: how far an image's features are from the
images the model was trained on.

``captioner calibrate BUNDLE --images DIR`` encodes training images with the bundle's own
encoder (the pipeline's encoding path), stores the per-dimension mean and standard deviation of
their pooled features and the 99th percentile of their distances in ``domain.safetensors``, and
lists that file (with its sha256) in the manifest. A captioner loaded from a calibrated bundle
reports each image's ``domain_distance`` and ``out_of_domain`` (distance above the threshold).

The distance is the root-mean-square z-score of the pooled feature vector: 1.0 is "as far as a
typical training image is in each dimension", and it does not grow with the feature width.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from captioner.bundle import MANIFEST, BundleError, read_manifest
from captioner.encoders import sha256_file

log = logging.getLogger(__name__)

DOMAIN_FILE = "domain.safetensors"
DEFAULT_PERCENTILE = 99.0
# Dimensions that hardly vary on the training images would turn noise into huge z-scores: their
# spread is floored at this fraction of the average spread.
_STD_FLOOR = 0.05


@dataclass(frozen=True)
class DomainStats:
    """Feature statistics of a bundle's training images and the out-of-domain threshold."""

    mean: torch.Tensor  # (C,) mean pooled feature
    std: torch.Tensor  # (C,) per-dimension spread (floored)
    threshold: float  # distance at ``percentile`` of the training images
    percentile: float = DEFAULT_PERCENTILE

    @classmethod
    def fit(cls, pooled: torch.Tensor, percentile: float = DEFAULT_PERCENTILE) -> DomainStats:
        """(N, C) pooled features of in-domain images -> statistics and threshold."""
        if pooled.dim() != 2 or pooled.size(0) < 2:
            raise ValueError(f"need the pooled features of at least 2 images, got {pooled.shape}")
        x = pooled.double()
        mean, std = x.mean(0), x.std(0)
        std = std.clamp_min(_STD_FLOOR * float(std.mean()) + 1e-12)
        stats = cls(mean.float(), std.float(), 0.0, percentile)
        q = torch.quantile(stats.distance(pooled).double(), percentile / 100.0)
        return cls(stats.mean, stats.std, float(q), percentile)

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled features -> (B,) RMS z-scores against the training images."""
        mean, std = self.mean.to(pooled.device), self.std.to(pooled.device)
        z = (pooled.float() - mean) / std
        return z.pow(2).mean(dim=1).sqrt()

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "mean": self.mean.contiguous(),
            "std": self.std.contiguous(),
            "threshold": torch.tensor([self.threshold], dtype=torch.float32),
            "percentile": torch.tensor([self.percentile], dtype=torch.float32),
        }

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], where: str = DOMAIN_FILE
    ) -> DomainStats:
        try:
            mean, std = tensors["mean"].float(), tensors["std"].float()
            threshold = float(tensors["threshold"].reshape(-1)[0])
            percentile = float(tensors["percentile"].reshape(-1)[0])
        except (KeyError, IndexError) as exc:
            raise BundleError(f"{where} is incomplete: {exc}") from exc
        if mean.dim() != 1 or mean.shape != std.shape or bool((std <= 0).any()):
            raise BundleError(f"{where}: mean and std must be equal-length vectors, std > 0")
        return cls(mean, std, threshold, percentile)


def domain_stats(weights: dict[str, dict[str, torch.Tensor]], folder: Path) -> DomainStats | None:
    """A loaded bundle's domain statistics, or None when it was never calibrated."""
    if DOMAIN_FILE not in weights:
        return None
    return DomainStats.from_tensors(weights[DOMAIN_FILE], str(folder / DOMAIN_FILE))


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_domain(bundle: str | os.PathLike, stats: DomainStats, info: dict) -> Path:
    """Write ``domain.safetensors`` into a bundle and list it (sha256, bytes) in the manifest.

    ``info`` (images used, where from) is stored under the manifest's ``domain`` entry. The
    weights of the bundle are not touched.
    """
    folder = Path(bundle)
    manifest = read_manifest(folder)
    if manifest["task"] != "caption":
        raise BundleError(f"{folder} is a {manifest['task']!r} bundle; calibrate a caption bundle")
    path = folder / DOMAIN_FILE
    fd, tmp = tempfile.mkstemp(prefix=DOMAIN_FILE + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(stats.to_tensors(), tmp)  # no metadata: a re-save gives the same bytes
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    files = manifest.pop("files")
    files[DOMAIN_FILE] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest["domain"] = {
        "file": DOMAIN_FILE,
        "distance": "rms z-score of the pooled encoder features",
        "threshold": round(stats.threshold, 4),
        "percentile": stats.percentile,
        **info,
    }
    manifest["files"] = files  # last, where the bundle writer puts it
    _atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return path


def calibrate(
    bundle: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    limit: int | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "auto",
    progress: bool = True,
    note: dict | None = None,
) -> DomainStats:
    """Encode in-domain ``images`` (files, folders, globs) with the bundle's encoder, fit the
    domain statistics and write them into the bundle (``note``: extra facts for the manifest's
    ``domain`` entry, e.g. how the images were made). -> the statistics."""
    from captioner.data.images import ImageFiles, expand_paths, image_loader
    from captioner.inference import Captioner
    from captioner.media import IMAGE_SUFFIXES
    from captioner.progress import progress_bar

    if not 0 < percentile <= 100:
        raise ValueError(f"--percentile must be in (0, 100], got {percentile}")
    paths, unmatched = expand_paths([str(p) for p in images], IMAGE_SUFFIXES)
    if unmatched:
        raise FileNotFoundError(f"no images at: {', '.join(unmatched)}")
    paths = paths[:limit] if limit else paths
    if len(paths) < 2:
        raise ValueError(f"calibration needs at least 2 images, found {len(paths)}")
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
    stats = DomainStats.fit(feats, percentile)
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
