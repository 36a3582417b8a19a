"""Feature caches: the frozen encoder runs once per image; training epochs read a memory map.

Layout of a cache folder: ``features.npy`` (rows, N, C) float16 memory map, ``done.npy`` (rows,)
bool mask of rows written, and ``index.json`` (encoder, preprocessing, the file name of each row,
and the files that could not be read). Interrupted builds resume where they stopped.

:func:`cached_split` (caption images) and :func:`cached_clips` (activity videos) are the two
caches training and evaluation share; they live here, with the data, so that evaluation never
imports training. They take the encoding function from the caller (the pipeline's
``encode_images``), so the data room stays below inference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from captioner.data.captions import CaptionRecord
from captioner.data.images import ImageFiles, image_loader
from captioner.data.videos import ClipFiles, VideoDataset, VideoRecord
from captioner.files import atomic_write, atomic_write_text
from captioner.progress import progress_bar

if TYPE_CHECKING:
    from captioner.encoders import Encoder

log = logging.getLogger(__name__)

#: (B, 3, S, S) uint8 images -> (B, N, C) feature grids
Encode = Callable[[torch.Tensor], torch.Tensor]

INDEX = "index.json"
_NAMED_FAILURES = 3  # unreadable items named one by one before the summary


def save_done(path: Path, done: np.ndarray) -> None:
    """Write the done flags atomically: a crash mid-write must not leave a torn file."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.save would add ".npy" to a bare name
            np.save(f, done)

    atomic_write(path, write)


def load_done(path: Path, rows: int) -> np.ndarray:
    """The done flags; an unreadable or wrong-sized file counts as nothing done (redone)."""
    try:
        done = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("%s is unreadable (%s): its items will be encoded again", path, exc)
        return np.zeros(rows, dtype=bool)
    if done.shape != (rows,) or done.dtype != np.bool_:
        log.warning("%s does not match its cache: its items will be encoded again", path)
        return np.zeros(rows, dtype=bool)
    return done


def cache_key(
    encoder_name: str, preprocess: dict, images_root: str | os.PathLike | None = None
) -> str:
    """A short stable id for (encoder, preprocessing[, image folder])."""
    root = str(Path(images_root).resolve()) if images_root is not None else None
    text = json.dumps([encoder_name, preprocess, root], sort_keys=True).encode()
    return hashlib.sha1(text).hexdigest()[:16]


def keys_digest(keys: Sequence[str]) -> str:
    """A short stable id for a list of item keys (one cache folder per list)."""
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]


class FeatureCache:
    """Read access to a finished cache: ``cache[key]`` -> one item's float16 features."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = json.loads((self.folder / INDEX).read_text())
        self.meta = meta
        self.rows: dict[str, int] = {name: i for i, name in enumerate(meta["files"])}
        self.failed: dict[str, str] = meta.get("failed", {})
        self.array = np.load(self.folder / "features.npy", mmap_mode="r")
        self.done = load_done(self.folder / "done.npy", len(self.rows))

    def __contains__(self, name: str) -> bool:
        row = self.rows.get(name)
        return row is not None and bool(self.done[row])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.array[self.rows[name]]

    def tensor(self, names: Sequence[str]) -> torch.Tensor:
        """Rows for ``names`` stacked into a float32 (B, ...) tensor."""
        idx = np.array([self.rows[n] for n in names])
        return torch.from_numpy(np.ascontiguousarray(self.array[idx])).float()

    def readable(
        self, items: Sequence, key: Callable[[object], str], what: str, where: str = ""
    ) -> tuple[list, torch.Tensor]:
        """The items whose features were written, and those features in RAM (float16).

        Unreadable items (recorded under ``failed``) are dropped with one warning; if none is
        left, a ValueError says so.
        """
        kept = [item for item in items if key(item) in self]
        if len(kept) < len(items):
            skipped = len(items) - len(kept)
            log.warning("%d of %d %s could not be read and are skipped", skipped, len(items), what)
        if not kept:
            raise ValueError(f"none of the {len(items)} {what}{where} could be read")
        return kept, self.load_all([key(item) for item in kept])

    def load_all(self, names: Sequence[str]) -> torch.Tensor:
        """All rows for ``names`` in RAM as float16 (B, ...): fast random access for training."""
        idx = np.array([self.rows[n] for n in names])
        return torch.from_numpy(np.ascontiguousarray(self.array[idx]))


def build_feature_cache(
    encode: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    keys: Sequence[str],
    folder: str | os.PathLike,
    item_shape: tuple[int, ...],
    meta: dict,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
    unit: str = "img",
) -> FeatureCache:
    """Encode every item of ``dataset`` once into ``folder``, resumably.

    ``dataset[i]`` gives ``{"index": i, "image": tensor, "error": str}`` (see
    :class:`captioner.data.images.ImageFiles`); ``keys[i]`` names item i in the cache. ``encode``
    maps a batch of items' tensors to features of ``item_shape`` each. ``meta`` (encoder,
    preprocessing, source, sampling...) must match for an existing cache to be reused.
    Unreadable items are recorded in ``index.json`` under ``failed`` with the reason.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(set(keys)) != len(keys) or len(keys) != len(dataset):
        raise ValueError("feature cache keys must be unique, one per dataset item")
    meta = json.loads(
        json.dumps(
            {**meta, "shape": [len(keys), *item_shape], "dtype": "float16", "files": list(keys)}
        )
    )  # tuples -> lists, as index.json reads back
    feat_path, done_path, index_path = folder / "features.npy", folder / "done.npy", folder / INDEX
    old = json.loads(index_path.read_text()) if index_path.exists() else None
    reuse = (
        old is not None
        and {k: old.get(k) for k in meta} == meta
        and feat_path.exists()
        and done_path.exists()
    )
    if reuse:
        array = np.load(feat_path, mmap_mode="r+")
        done = load_done(done_path, len(keys))
        failed = old.get("failed", {})
    else:
        array = np.lib.format.open_memmap(
            feat_path, mode="w+", dtype=np.float16, shape=(len(keys), *item_shape)
        )
        done = np.zeros(len(keys), dtype=bool)
        failed = {}
    _write_index(index_path, {**meta, "failed": failed})  # so an interrupted build resumes
    save_done(done_path, done)
    todo = [i for i in range(len(keys)) if not done[i] and keys[i] not in failed]
    if todo:
        log.info("encoding %d of %d items into %s", len(todo), len(keys), folder)
        loader = image_loader(Subset(dataset, todo), batch_size, workers)
        bar = progress_bar(total=len(todo), desc="encoding", unit=unit, enabled=progress)
        for batch in loader:
            ok = [j for j, e in enumerate(batch["error"]) if not e]
            for j, err in enumerate(batch["error"]):
                if err:
                    key = keys[batch["index"][j]]
                    failed[key] = err
                    # A wrong folder fails every file: name a few, then one summary at the end.
                    level = logging.WARNING if len(failed) <= _NAMED_FAILURES else logging.DEBUG
                    log.log(level, "skipping %s: %s", key, err)
            if ok:
                feats = encode(batch["image"][ok]).float().cpu().numpy().astype(np.float16)
                rows = [batch["index"][j] for j in ok]
                array[rows] = feats
                done[rows] = True
            bar.update(len(batch["error"]))
            if bar.n % (batch_size * 20) < batch_size:  # checkpoint progress now and then
                array.flush()
                save_done(done_path, done)
        bar.close()
        array.flush()
        if len(failed) > _NAMED_FAILURES:
            log.warning(
                "%d of %d items could not be read (the first %d are named above; -v names "
                "all): check the images / videos folder",
                len(failed),
                len(keys),
                _NAMED_FAILURES,
            )
    save_done(done_path, done)
    _write_index(index_path, {**meta, "failed": failed})
    del array
    return FeatureCache(folder)


def _write_index(path: Path, meta: dict) -> None:
    atomic_write_text(path, json.dumps(meta))


def default_cache_root() -> Path:
    """``$CAPTIONER_CACHE`` or ``~/.cache/captioner``."""
    env = os.environ.get("CAPTIONER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "captioner"


@dataclass
class CachedSplit:
    records: list[CaptionRecord]
    features: torch.Tensor | None  # (M, N, C) float16, one row per kept record


def cached_split(
    records: list[CaptionRecord],
    images: str | os.PathLike,
    encoder: Encoder,
    encode: Encode,
    cache_root: Path,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
) -> CachedSplit:
    """Encode the split's images once with ``encode`` (or reuse the cache) and load their
    features; ``encoder`` names the cache (its name, preprocessing and grid)."""
    pre = encoder.preprocess
    key = cache_key(encoder.name, pre.to_dict(), images)
    names = list(dict.fromkeys(r.file_name for r in records))
    cache = build_feature_cache(
        encode,
        ImageFiles([Path(images) / n for n in names], pre),
        names,
        cache_root / "features" / key / keys_digest([r.file_name for r in records]),
        item_shape=(encoder.grid_cells, encoder.feature_dim),
        meta={
            "encoder": encoder.name,
            "preprocess": pre.to_dict(),
            "images_root": str(Path(images).resolve()),
        },
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    kept, features = cache.readable(records, lambda r: r.file_name, "images", f" under {images}")
    return CachedSplit(kept, features)


def encode_clips(encode: Encode, clips: torch.Tensor) -> torch.Tensor:
    """(..., T, 3, S, S) uint8 -> (..., T, N, C): all frames of all clips in one encoder batch."""
    lead = clips.shape[:-3]
    grid = encode(clips.reshape(-1, *clips.shape[-3:]))
    return grid.reshape(*lead, *grid.shape[1:])


@dataclass
class CachedClips:
    records: list[VideoRecord]
    features: torch.Tensor  # (M, K, T, N, C) float16


def cached_clips(
    data: VideoDataset,
    encoder: Encoder,
    encode: Encode,
    num_frames: int,
    samples: int,
    cache_root: Path,
    batch_size: int = 4,
    workers: int = 2,
    progress: bool = True,
) -> CachedClips:
    """Encode every video's clips once (or reuse the cache); unreadable videos are skipped.

    ``encode`` is the image encoder, run on every frame; ``encoder`` names the cache."""
    pre = encoder.preprocess
    keys = [str(r.path.resolve()) for r in data.records]
    folder = cache_root / "clips" / cache_key(encoder.name, pre.to_dict()) / keys_digest(keys)
    cache = build_feature_cache(
        lambda batch: encode_clips(encode, batch),
        ClipFiles([r.path for r in data.records], num_frames, pre.size, samples),
        keys,
        folder / f"t{num_frames}-k{samples}",
        item_shape=(samples, num_frames, encoder.grid_cells, encoder.feature_dim),
        meta={"encoder": encoder.name, "preprocess": pre.to_dict(), "sampling": "tsn-v1"},
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        unit="video",
    )
    kept, features = cache.readable(data.records, lambda r: str(r.path.resolve()), "videos")
    return CachedClips(kept, features)
