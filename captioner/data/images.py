"""Image files -> preprocessed uint8 tensors in DataLoader workers, with per-file errors.

One dataset serves the batch-captioning CLI and the feature cache: decoding and resizing run
in worker processes, overlapped with the model, and a file that cannot be read becomes an
error record instead of stopping the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from captioner.encoders import Preprocess
from captioner.intake import expand_paths  # noqa: F401  (its old home; the jobs import it here)
from captioner.media import DEFAULT_LIMITS, ImageLimits, MediaError, decode_image


class ImageFiles(Dataset):
    """Reads, validates and resizes one image per item; failures become ``error`` strings."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        preprocess: Preprocess,
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.paths = [str(p) for p in paths]
        self.preprocess = preprocess
        self.limits = limits

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        size = self.preprocess.size
        try:
            image = decode_image(self.paths[index], self.limits, draft=(size, size))
            return {"index": index, "image": self.preprocess.to_uint8(image), "error": ""}
        except MediaError as exc:
            error = str(exc)
        except Exception as exc:  # a worker must never die on one file
            error = f"could not read image: {type(exc).__name__}: {exc}"
        return {
            "index": index,
            "image": torch.zeros(3, size, size, dtype=torch.uint8),
            "error": error,
        }


def collate(items: list[dict]) -> dict:
    """Stack images; keep indices and errors as lists."""
    return {
        "index": [it["index"] for it in items],
        "image": torch.stack([it["image"] for it in items]),
        "error": [it["error"] for it in items],
    }


def image_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    pin_memory: bool = False,
    collate_fn: Callable[[list[dict]], dict] | None = None,
) -> DataLoader:
    """An in-order loader over ``dataset`` with ``workers`` decoding processes (items stacked
    by :func:`collate` unless ``collate_fn`` is given)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_fn or collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
