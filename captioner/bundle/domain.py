"""A caption bundle's domain statistics (``domain.safetensors``): the type, its reader and
its writer.

``captioner calibrate`` (:mod:`captioner.calibrate`) fits them from in-domain images; a
captioner loaded from a calibrated bundle reads them here and reports each image's
``domain_distance`` and ``out_of_domain``. They live in the bundle room, below inference, so
that loading a bundle never needs the calibration job.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from captioner.bundle import MANIFEST, BundleError, read_manifest
from captioner.files import atomic_write, atomic_write_text, sha256_file

__all__ = [
    "DEFAULT_NEIGHBOURS",
    "DEFAULT_PERCENTILE",
    "DOMAIN_FILE",
    "DomainStats",
    "domain_stats",
    "write_domain",
]

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
    # No metadata: a re-save gives the same bytes.
    atomic_write(path, lambda tmp: save_file(stats.to_tensors(), str(tmp)))
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
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return path
