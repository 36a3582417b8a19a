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
    "DEFAULT_FAR",
    "DEFAULT_MARGIN",
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
#: With a reference set of out-of-domain pictures: out when an image is this much closer to
#: them than to the in-domain images (0: closer at all) ...
DEFAULT_MARGIN = 0.0
#: ... or farther than this from every in-domain image. Both chosen on the real-photo set's
#: ``tune`` split, each photograph's own crops left out (BENCHMARKS.md, "Out of domain").
DEFAULT_FAR = 0.8


@dataclass(frozen=True)
class DomainStats:
    """The pooled features of a bundle's calibration images and the out-of-domain rule.

    ``features`` are the in-domain references (training pictures, everyday photographs);
    ``outside``, when present, the pictures of known out-of-domain kinds (text, screenshots,
    microscopy, the night sky). ``d_in`` and ``d_out`` are the cosine distances from an
    image's pooled features to its ``k`` nearest images of each set (1 - mean cosine
    similarity).

    - Without ``outside`` (one reference set): :meth:`distance` is ``d_in`` and ``threshold``
      its ``percentile`` over the calibration images themselves (each left out of its own
      neighbours).
    - With ``outside`` (two reference sets): :meth:`distance` is
      ``d_in - min(d_out, far - threshold)`` and ``threshold`` the margin, so an image is out
      of domain when it is more than the margin closer to the known non-photos than to the
      in-domain images, or farther than ``far`` from every in-domain image. Why: everyday
      photographs are far from the composites the model was trained on (as far as text
      is), so one distance cannot tell them apart; which set is nearer can.

    ``mean`` and ``std`` summarise the in-domain features per dimension, for users who want
    their own measure. Why neighbours and not a z-score against ``mean``/``std``: on the
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
    outside: torch.Tensor | None = None  # (M, C) unit-length, known out-of-domain pictures
    far: float | None = None  # with ``outside``: d_in above this is out of domain
    # float32 copies of ``features`` by device, made once: not per batch of captions
    _by_device: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def _refs(self, device: torch.device, which: str = "features") -> torch.Tensor:
        key = (which, device)
        if key not in self._by_device:
            self._by_device[key] = getattr(self, which).to(device).float()
        return self._by_device[key]

    @classmethod
    def fit(
        cls,
        pooled: torch.Tensor,
        percentile: float = DEFAULT_PERCENTILE,
        k: int = DEFAULT_NEIGHBOURS,
        outside: torch.Tensor | None = None,
        margin: float = DEFAULT_MARGIN,
        far: float = DEFAULT_FAR,
    ) -> DomainStats:
        """(N, C) pooled features of in-domain images (and optionally (M, C) of known
        out-of-domain ones) -> reference sets and threshold."""
        if pooled.dim() != 2 or pooled.size(0) < k + 1:
            raise ValueError(
                f"need the pooled features of at least {k + 1} images, got {tuple(pooled.shape)}"
            )
        x = pooled.float()
        refs = torch.nn.functional.normalize(x, dim=1).half()  # stored at half size
        stats = cls(refs, 0.0, percentile, k, x.mean(0), x.std(0))
        return stats._with_outside(outside, margin, far)

    def extend(
        self,
        pooled: torch.Tensor | None = None,
        outside: torch.Tensor | None = None,
        margin: float | None = None,
        far: float | None = None,
    ) -> DomainStats:
        """The statistics with more in-domain (``pooled``, (N, C)) and out-of-domain
        (``outside``, (M, C)) pictures added; the stored features are kept as they are, the
        mean and spread updated, the threshold recomputed (the percentile again, or the
        margin: ``margin`` / ``far`` given, else the stored ones, else the defaults)."""
        for name, new in (("pooled", pooled), ("outside", outside)):
            if new is not None and (new.dim() != 2 or new.size(1) != self.feature_dim):
                raise ValueError(
                    f"{name}: expected ({self.feature_dim})-d features, got {tuple(new.shape)}"
                )
        stats = self
        if pooled is not None and pooled.size(0):
            x = pooled.float()
            mean, std = _pooled_moments(self, x)
            refs = torch.nn.functional.normalize(x, dim=1).to(self.features.dtype)
            features = torch.cat([self.features, refs])
            stats = dataclasses.replace(self, features=features, mean=mean, std=std, _by_device={})
        if outside is not None and self.outside is not None:
            outside = torch.cat([self.outside.float(), outside.float()])
        elif outside is None:
            outside = self.outside
        two_sets = self.outside is not None
        return stats._with_outside(
            outside,
            margin if margin is not None else (self.threshold if two_sets else DEFAULT_MARGIN),
            far if far is not None else (self.far if self.far is not None else DEFAULT_FAR),
        )

    def _with_outside(self, outside: torch.Tensor | None, margin: float, far: float) -> DomainStats:
        """A copy with the out-of-domain set and threshold set (the percentile without one)."""
        if outside is None or outside.size(0) == 0:
            base = dataclasses.replace(self, threshold=0.0, outside=None, far=None, _by_device={})
            own = base.distance(self.features.float(), leave_out_self=True).double()
            return dataclasses.replace(
                base, threshold=float(torch.quantile(own, self.percentile / 100))
            )
        if outside.dim() != 2 or outside.size(1) != self.feature_dim:
            raise ValueError(f"outside: expected (M, {self.feature_dim}) features")
        if far <= margin:
            raise ValueError(f"far ({far}) must be above the margin ({margin})")
        out = torch.nn.functional.normalize(outside.float(), dim=1).half()
        return dataclasses.replace(
            self, threshold=float(margin), outside=out, far=float(far), _by_device={}
        )

    def _knn(self, q: torch.Tensor, which: str, leave_out_self: bool) -> torch.Tensor:
        """(B, C) unit features -> (B,) distance to the ``k`` nearest of one reference set."""
        refs = self._refs(q.device, which)
        out = []
        for start in range(0, q.size(0), 256):  # bounded memory for a big calibration set
            sim = q[start : start + 256] @ refs.T
            if leave_out_self:
                rows = torch.arange(sim.size(0), device=sim.device)
                sim[rows, rows + start] = -2.0
            top = sim.topk(min(self.k, refs.size(0)), dim=1).values
            out.append(1.0 - top.mean(dim=1))
        return torch.cat(out)

    def distance(self, pooled: torch.Tensor, leave_out_self: bool = False) -> torch.Tensor:
        """(B, C) pooled features -> (B,) out-of-domain scores (above ``threshold``: out).

        One reference set: the distance to the calibration images, in [0, 2]. Two sets:
        ``d_in - min(d_out, far - threshold)``, in [-2, 2] (see the class docstring).
        ``leave_out_self``: the rows are the in-domain references themselves, in order.
        """
        q = torch.nn.functional.normalize(pooled.float(), dim=1)
        d_in = self._knn(q, "features", leave_out_self)
        if self.outside is None or self.far is None:
            return d_in
        d_out = self._knn(q, "outside", False)
        return d_in - d_out.clamp(max=self.far - self.threshold)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "features": self.features.contiguous(),
            "threshold": torch.tensor([self.threshold], dtype=torch.float32),
            "percentile": torch.tensor([self.percentile], dtype=torch.float32),
            "k": torch.tensor([self.k], dtype=torch.int64),
        }
        if self.mean is not None and self.std is not None:
            out.update(mean=self.mean.float().contiguous(), std=self.std.float().contiguous())
        if self.outside is not None and self.far is not None:
            out.update(
                outside=self.outside.contiguous(),
                far=torch.tensor([self.far], dtype=torch.float32),
            )
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
        outside, far = tensors.get("outside"), tensors.get("far")
        if (outside is None) != (far is None) or (
            outside is not None and (outside.dim() != 2 or outside.size(1) != features.size(1))
        ):
            raise BundleError(f"{where}: 'outside' must be an (M, C) matrix stored with 'far'")
        return cls(
            features,
            threshold,
            percentile,
            k,
            tensors.get("mean"),
            tensors.get("std"),
            outside,
            None if far is None else float(far.reshape(-1)[0]),
        )

    @property
    def feature_dim(self) -> int:
        return int(self.features.size(1))


def _pooled_moments(stats: DomainStats, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread over the stored in-domain images and the new ``x`` together (the
    stored ones known only by their mean and spread, so the old features need no encoding)."""
    n1, n2 = stats.features.size(0), x.size(0)
    if stats.mean is None or stats.std is None:
        return x.mean(0), x.std(0)
    m1, v1 = stats.mean.float(), stats.std.float() ** 2
    m2, v2 = x.mean(0), (x.var(0) if n2 > 1 else torch.zeros_like(m1))
    n = n1 + n2
    mean = (n1 * m1 + n2 * m2) / n
    spread = (n1 - 1) * v1 + (n2 - 1) * v2 + n1 * (m1 - mean) ** 2 + n2 * (m2 - mean) ** 2
    return mean, (spread / (n - 1)).sqrt()


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
    if stats.outside is None:
        rule = {
            "distance": f"cosine distance to the {stats.k} nearest calibration images",
            "threshold": round(stats.threshold, 4),
            "percentile": stats.percentile,
        }
    else:
        rule = {
            "distance": f"d_in - min(d_out, far - threshold): cosine distances to the {stats.k} "
            "nearest in-domain images (d_in) and known out-of-domain pictures (d_out)",
            "threshold": round(stats.threshold, 4),
            "far": round(float(stats.far or 0.0), 4),
            "outside": int(stats.outside.size(0)),
        }
    manifest["domain"] = {"file": DOMAIN_FILE, **rule, **info}
    manifest["files"] = files  # last, where the bundle writer puts it
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return path
