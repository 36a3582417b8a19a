"""A synthetic activity dataset whose label depends only on the order of the frames: the writer.

Each clip shows a real texture (grass, gravel, brick from scikit-image, tinted, cropped and
flipped) or a plain background, zero to two small distractor objects that stay still or
jitter slightly, and one main object (a scikit-image photo crop or a drawn, rotationally
asymmetric shape) that moves left, right, up or down, grows, shrinks, rotates clockwise or
counterclockwise over the whole clip, or stays where it is.

The members of each pair in :data:`ORDER_PAIRS` differ only in the direction in which the
same path is traversed: the generator draws the segment (positions, scales or angles) first,
with identical random draws for both members, and then plays the per-frame track forwards or
backwards. A single frame, or the mean of all frames, therefore has the same distribution for
both members; only the temporal order tells them apart. With the same RNG state the two
members render to exactly time-reversed clips (see :func:`sample_params`).

Every clip draws from its own RNG derived from ``(seed, split, class, index)``, so changing
the size of one split (or of one class) leaves the other clips byte-identical.

The parts live beside this module: the clip's content in :mod:`captioner.data.motion_tracks`,
its pixels in :mod:`captioner.data.motion_render`, and what it shares with the scenes in
:mod:`captioner.data.synth`. This module writes the files and re-exports the public names
from there, so ``captioner.data.motion`` stays the one import for users.
"""

from __future__ import annotations

import logging
import os
import pathlib

import cv2
import numpy as np

from captioner.data.motion_render import render_clip
from captioner.data.motion_tracks import (
    CLASSES,
    MAIN_SHAPES,
    ORDER_PAIRS,
    main_track,
    sample_params,
)
from captioner.data.synth import BACKGROUNDS, check_count, seeded_rng, write_json
from captioner.progress import progress_bar

__all__ = [
    "BACKGROUNDS",
    "CLASSES",
    "GENERATOR_VERSION",
    "MAIN_SHAPES",
    "ORDER_PAIRS",
    "SPLITS",
    "clip_rng",
    "generate_motion",
    "main_track",
    "render_clip",
    "sample_params",
    "write_video",
]

logger = logging.getLogger(__name__)

GENERATOR_NAME = "captioner.data.motion"
GENERATOR_VERSION = "1.2"
SPLITS: tuple[str, ...] = ("train", "val", "test")


# ----------------------------------------------------------------------------- dataset


def clip_rng(seed: int, split: str, cls: str, index: int) -> np.random.Generator:
    """The RNG of one clip: the same four keys give the same clip in any process."""
    return seeded_rng(seed, split, cls, index)


_clip_rng = clip_rng  # the old private name, kept importable


_CODECS = {".mp4": "mp4v", ".webm": "VP90"}  # MPEG-4 Part 2; VP9, which browsers play


def write_video(path: pathlib.Path, frames: np.ndarray, fps: int) -> None:
    """Write RGB frames as MPEG-4 (``.mp4``) or VP9 WebM (``.webm``), through a temporary name
    so no half file stays."""
    codec = _CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"{path.name}: write .mp4 or .webm videos")
    tmp = path.with_name(path.stem + ".part" + path.suffix)  # FFmpeg picks the container by suffix
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(
            f"OpenCV could not open a {codec} video writer for {tmp}; install an OpenCV build "
            "with FFmpeg (the opencv-python-headless wheel has it) and check the folder is writable"
        )
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise RuntimeError(f"OpenCV wrote no data to {tmp}; its FFmpeg backend may lack {codec}")
    os.replace(tmp, path)


def _generate_split(
    out: pathlib.Path,
    split: str,
    count: int,
    seed: int,
    settings: dict[str, int],
    progress: bool,
) -> pathlib.Path:
    split_dir = out / split
    for cls in CLASSES:
        (split_dir / cls).mkdir(parents=True, exist_ok=True)
    # A copy beside the class folders, so a folder reader keeps the fixed label order.
    (split_dir / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    jobs = [(label, cls, index) for label, cls in enumerate(CLASSES) for index in range(count)]
    clips = []
    for label, cls, index in progress_bar(
        jobs,
        desc=f"motion {split}",
        unit="clip",
        enabled=progress and bool(jobs),
    ):
        rng = clip_rng(seed, split, cls, index)
        params = sample_params(rng, cls, settings["frames"])
        frames = render_clip(params, rng, settings["size"])
        file_name = f"{split}/{cls}/{index:06d}.mp4"
        write_video(out / file_name, frames, settings["fps"])
        clips.append(
            {"file": file_name, "class": cls, "label": label, "index": index, "params": params}
        )
    payload = {
        "info": {
            "description": "synthetic motion clips whose class depends only on frame order",
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "split": split,
            "per_class": count,
            "classes": list(CLASSES),
            "order_pairs": [list(pair) for pair in ORDER_PAIRS],
            **settings,
        },
        "clips": clips,
    }
    path = out / f"{split}.json"
    write_json(path, payload)
    logger.info("wrote %d %s clips to %s", len(clips), split, split_dir)
    return path


def generate_motion(
    out_dir: str | os.PathLike,
    seed: int,
    n_per_class: int,
    n_val_per_class: int | None = None,
    n_test_per_class: int | None = None,
    frames: int = 24,
    fps: int = 12,
    size: int = 128,
    progress: bool = True,
) -> dict[str, pathlib.Path]:
    """Write the synthetic motion dataset under ``out_dir``; return ``{split: json path}``.

    Clips go to ``out_dir/<split>/<class>/<index:06d>.mp4`` (MPEG-4 ``mp4v``, ``frames``
    frames of ``size`` x ``size`` at ``fps``). ``out_dir/classes.txt`` lists :data:`CLASSES`
    one per line (also copied into each split folder) and is returned under ``"classes"``;
    ``out_dir/<split>.json`` lists every clip's file, class, label and the parameters it was
    generated from. Val and test default to ``max(2, n_per_class // 4)`` clips per class.
    The same arguments give identical files, and a split's clips do not depend on the sizes
    of the other splits.
    """
    seed = check_count("seed", seed)
    n_train = check_count("n_per_class", n_per_class)
    default = max(2, n_train // 4)
    counts = {
        "train": n_train,
        "val": default
        if n_val_per_class is None
        else check_count("n_val_per_class", n_val_per_class),
        "test": default
        if n_test_per_class is None
        else check_count("n_test_per_class", n_test_per_class),
    }
    settings = {
        "frames": check_count("frames", frames),
        "fps": check_count("fps", fps),
        "size": check_count("size", size),
    }
    if settings["frames"] < 2:
        raise ValueError(f"frames must be at least 2 so that the object can move, got {frames}")
    if settings["fps"] < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if settings["size"] < 32 or settings["size"] % 2:
        raise ValueError(
            f"size must be an even number of pixels, at least 32 (MPEG-4 needs even sides), "
            f"got {size}"
        )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes_path = out / "classes.txt"
    classes_path.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    paths = {
        split: _generate_split(out, split, counts[split], seed, settings, progress)
        for split in SPLITS
    }
    return {**paths, "classes": classes_path}
