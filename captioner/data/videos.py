"""Labelled video lists: UCF101 layout, a plain folder per class, or a CSV of ``path,label``."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from captioner.media import MediaError
from captioner.video import DEFAULT_VIDEO_LIMITS, VIDEO_SUFFIXES, VideoLimits, decode_clip

_LAYOUTS = (
    "expected one folder per class holding " + ", ".join(sorted(VIDEO_SUFFIXES)) + " files, "
    "a CSV with path,label columns, or a UCF101 folder with a trainlist/testlist file"
)


@dataclass(frozen=True)
class VideoRecord:
    path: Path
    label: int


@dataclass
class VideoDataset:
    records: list[VideoRecord]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.records)


def _resolve_classes(found: list[str], classes: list[str] | None, where: Path) -> list[str]:
    if classes is None:
        return found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(
            f"{where} has classes the model does not know: {unknown[:10]}; "
            f"known classes: {classes[:20]}"
        )
    return list(classes)


def _read_class_index(path: Path) -> list[str]:
    """UCF101 ``classInd.txt``: ``<1-based index> <name>`` per line."""
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{n}: expected '<index> <class name>', got {line!r}")
        pairs.append((int(parts[0]), parts[1]))
    return [name for _, name in sorted(pairs)]


def load_video_dataset(
    source: str | os.PathLike,
    split_list: str | os.PathLike | None = None,
    classes: list[str] | None = None,
) -> VideoDataset:
    """Read a labelled video collection.

    - a CSV file with ``path`` and ``label`` columns (paths relative to the CSV's folder);
    - a folder with one sub-folder per class (class order from ``classes.txt`` or
      ``classInd.txt`` when present, else sorted names);
    - UCF101: the folder of class folders plus ``split_list`` (``trainlist01.txt`` /
      ``testlist01.txt``, paths relative to the folder; labels from the class folder) and
      ``classInd.txt`` in the folder or beside the list.

    ``classes`` (e.g. from a trained bundle) fixes the label order; unknown names are an error.
    """
    src = Path(source)
    if src.is_file():
        return _from_csv(src, classes)
    if not src.is_dir():
        raise FileNotFoundError(f"no such video folder or CSV file: {src}")
    found = _folder_classes(src, split_list)
    names = _resolve_classes(found, classes, src)
    index = {name: i for i, name in enumerate(names)}
    if split_list is not None:
        records = []
        for n, line in enumerate(Path(split_list).read_text().splitlines(), 1):
            if not line.strip():
                continue
            rel = line.split()[0]
            cls = Path(rel).parts[0]
            if cls not in index:
                raise ValueError(f"{split_list}:{n}: class folder {cls!r} is not a known class")
            records.append(VideoRecord(src / rel, index[cls]))
    else:
        stray = sorted(
            d.name
            for d in src.iterdir()
            if d.is_dir()
            and d.name not in index
            and not d.name.startswith(".")
            and any(f.suffix.lower() in VIDEO_SUFFIXES for f in d.rglob("*"))
        )
        if stray:
            raise ValueError(
                f"{src}: class folders {stray[:10]} hold videos but are not in the class list "
                f"({names[:10]}...): add them to classes.txt / classInd.txt or remove them"
            )
        records = [
            VideoRecord(f, index[d.name])
            for d in sorted(p for p in src.iterdir() if p.is_dir())
            if d.name in index
            for f in sorted(d.rglob("*"))
            if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
        ]
    if not records:
        raise ValueError(f"no videos found under {src}: {_LAYOUTS}")
    return VideoDataset(records, names)


def _folder_classes(root: Path, split_list: str | os.PathLike | None) -> list[str]:
    for candidate in (root / "classes.txt",):
        if candidate.is_file():
            return [ln.strip() for ln in candidate.read_text().splitlines() if ln.strip()]
    places = [root / "classInd.txt"]
    if split_list is not None:
        places.append(Path(split_list).parent / "classInd.txt")
    for candidate in places:
        if candidate.is_file():
            return _read_class_index(candidate)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"{root} has no class folders: {_LAYOUTS}")
    return names


def _from_csv(path: Path, classes: list[str] | None) -> VideoDataset:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a video list CSV needs 'path' and 'label' columns")
        rows = [(row["path"], row["label"]) for row in reader if row.get("path")]
    found = sorted({label for _, label in rows})
    names = _resolve_classes(found, classes, path)
    index = {name: i for i, name in enumerate(names)}
    records = [VideoRecord(path.parent / p, index[label]) for p, label in rows]
    if not records:
        raise ValueError(f"{path} lists no videos")
    return VideoDataset(records, names)


class ClipFiles(Dataset):
    """Videos -> ``samples`` clips of ``num_frames`` frames each, as (K, T, 3, S, S) uint8.

    Sample 0 takes segment centres (the test-time clip); samples 1.. take a random frame in each
    segment (TSN), seeded per video, so training can draw a different clip each epoch from the
    cache. Unreadable videos, and videos over ``limits`` (a classifier's, for
    ``captioner activity``), become ``error`` strings.
    """

    def __init__(
        self,
        paths: list[Path],
        num_frames: int,
        size: int,
        samples: int = 1,
        seed: int = 0,
        *,
        limits: VideoLimits = DEFAULT_VIDEO_LIMITS,
    ):
        self.paths, self.num_frames, self.size = paths, num_frames, size
        self.samples, self.seed, self.limits = samples, seed, limits

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        try:
            clips = []
            for k in range(self.samples):
                rng = np.random.default_rng([self.seed, index, k]) if k else None
                mode = "segments" if k else "uniform"
                clip = decode_clip(
                    self.paths[index], self.num_frames, self.size, mode, rng, limits=self.limits
                )
                clips.append(torch.from_numpy(clip.frames).permute(0, 3, 1, 2))  # (T, 3, S, S)
            return {"index": index, "image": torch.stack(clips), "error": ""}
        except MediaError as exc:
            error = str(exc)
        except Exception as exc:  # one corrupt file must not kill a loader worker
            error = f"could not read video: {type(exc).__name__}: {exc}"
        shape = (self.samples, self.num_frames, 3, self.size, self.size)
        return {"index": index, "image": torch.zeros(shape, dtype=torch.uint8), "error": error}
