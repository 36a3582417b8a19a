"""Image files -> preprocessed uint8 tensors in DataLoader workers, with per-file errors.

One dataset serves the batch-captioning CLI and the feature cache: decoding and resizing run
in worker processes, overlapped with the model, and a file that cannot be read becomes an
error record instead of stopping the run.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from captioner.encoders import Preprocess
from captioner.media import DEFAULT_LIMITS, IMAGE_SUFFIXES, ImageLimits, MediaError, decode_image


def expand_paths(
    inputs: Iterable[str | os.PathLike], suffixes: frozenset[str] = IMAGE_SUFFIXES
) -> tuple[list[Path], list[str]]:
    """Files, folders (recursive, ``suffixes`` only, sorted) and glob patterns -> file paths.

    Returns the paths in a stable order without duplicates, and a list of the inputs that
    matched nothing (for the caller to report).
    """
    seen: set[Path] = set()
    out: list[Path] = []
    unmatched: list[str] = []

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in inputs:
        text = str(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                unmatched.append(text)
            for f in found:
                add(f)
        elif p.exists():
            add(p)  # an explicitly named file is tried whatever its suffix
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                unmatched.append(text)
            for m in matches:
                add(m)
        else:
            unmatched.append(text)
    return out, unmatched


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
