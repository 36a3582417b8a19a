"""Out-of-domain detection for caption bundles: how far an image's features are from the
images the model was trained on.

``captioner calibrate BUNDLE --images DIR`` encodes training images with the bundle's own
encoder (the pipeline's encoding path), stores the per-dimension mean and standard deviation of
their pooled features, the features themselves (half precision) and the 99th percentile of
their distances in ``domain.safetensors``, and
lists that file (with its sha256) in the manifest. A captioner loaded from a calibrated bundle
reports each image's ``domain_distance`` and ``out_of_domain`` (distance above the threshold).

The distance is the cosine distance to the nearest calibration images (see
:class:`DomainStats`); the file also keeps the per-dimension mean and spread of the features.
"""

from __future__ import annotations

import dataclasses
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
DEFAULT_NEIGHBOURS = 5


@dataclass(frozen=True)
class DomainStats:
    """The pooled features of a bundle's calibration images and the out-of-domain threshold.

    ``distance`` is the cosine distance from an image's pooled features to its ``k`` nearest
    calibration images (1 - mean cosine similarity), and ``threshold`` is that distance's
    ``percentile`` over the calibration images themselves (each left out of its own
    neighbours). ``mean`` and ``std`` summarise the features per dimension, for users who
    want their own measure. Why neighbours and not a z-score against ``mean``/``std``: on the
    shipped model the z-score put photographs such as scikit-image's ``chelsea`` well inside
    the threshold, while the neighbour distance separates every photograph tried from the
    scenes (README, "Out of domain").
    """

    features: torch.Tensor  # (N, C) unit-length pooled features of the calibration images
    threshold: float
    percentile: float = DEFAULT_PERCENTILE
    k: int = DEFAULT_NEIGHBOURS
    mean: torch.Tensor | None = None  # (C,)
    std: torch.Tensor | None = None  # (C,)
    # float32 copies of ``features`` by device, made once: not per batch of captions
    _by_device: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def _refs(self, device: torch.device) -> torch.Tensor:
        if device not in self._by_device:
            self._by_device[device] = self.features.to(device).float()
        return self._by_device[device]

    @classmethod
    def fit(
        cls,
        pooled: torch.Tensor,
        percentile: float = DEFAULT_PERCENTILE,
        k: int = DEFAULT_NEIGHBOURS,
    ) -> DomainStats:
        """(N, C) pooled features of in-domain images -> reference set and threshold."""
        if pooled.dim() != 2 or pooled.size(0) < k + 1:
            raise ValueError(
                f"need the pooled features of at least {k + 1} images, got {tuple(pooled.shape)}"
            )
        x = pooled.float()
        refs = torch.nn.functional.normalize(x, dim=1).half()  # stored at half size
        stats = cls(refs, 0.0, percentile, k, x.mean(0), x.std(0))
        own = stats.distance(x, leave_out_self=True).double()
        return dataclasses.replace(stats, threshold=float(torch.quantile(own, percentile / 100)))

    def distance(self, pooled: torch.Tensor, leave_out_self: bool = False) -> torch.Tensor:
        """(B, C) pooled features -> (B,) distances to the calibration images, in [0, 2]."""
        refs = self._refs(pooled.device)
        q = torch.nn.functional.normalize(pooled.float(), dim=1)
        out = []
        for start in range(0, q.size(0), 256):  # bounded memory for a big calibration set
            sim = q[start : start + 256] @ refs.T
            if leave_out_self:
                rows = torch.arange(sim.size(0), device=sim.device)
                sim[rows, rows + start] = -2.0
            top = sim.topk(min(self.k, refs.size(0)), dim=1).values
            out.append(1.0 - top.mean(dim=1))
        return torch.cat(out)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "features": self.features.contiguous(),
            "threshold": torch.tensor([self.threshold], dtype=torch.float32),
            "percentile": torch.tensor([self.percentile], dtype=torch.float32),
            "k": torch.tensor([self.k], dtype=torch.int64),
        }
        if self.mean is not None and self.std is not None:
            out.update(mean=self.mean.float().contiguous(), std=self.std.float().contiguous())
        return out

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], where: str = DOMAIN_FILE
    ) -> DomainStats:
        try:
            features = tensors["features"]
            threshold = float(tensors["threshold"].reshape(-1)[0])
            percentile = float(tensors["percentile"].reshape(-1)[0])
            k = int(tensors["k"].reshape(-1)[0])
        except (KeyError, IndexError) as exc:
            raise BundleError(f"{where} is incomplete: missing {exc}") from exc
        if features.dim() != 2 or features.size(0) < 1 or k < 1:
            raise BundleError(f"{where}: 'features' must be an (N, C) matrix and k >= 1")
        return cls(features, threshold, percentile, k, tensors.get("mean"), tensors.get("std"))

    @property
    def feature_dim(self) -> int:
        return int(self.features.size(1))


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
        "distance": f"cosine distance to the {stats.k} nearest calibration images",
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
