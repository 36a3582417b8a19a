"""Camera and object motion over real photographs: training clips with exact motion labels.

A virtual camera moves over a background photograph (Debian's wallpaper packages
``plasma-workspace-wallpapers``, ``gnome-backgrounds`` and ``desktop-base``, and
scikit-image's photographs) while zero to two Tux Paint stamp cut-outs
(``tuxpaint-stamps-default``, through their alpha) stay or move. Nothing is committed: the
packages are fetched at generation time as ``captioner data objects`` fetches them.

Camera motions (:data:`CAMERA_MOTIONS`), as the picture shows them:

- ``static``: no motion at all;
- ``handheld``: small random jitter (shift, a little roll and scale) with no drift: the
  camera ends where it started;
- ``pan_left`` / ``pan_right``: the camera turns left / right, so the content moves RIGHT /
  LEFT in the frame;
- ``tilt_up`` / ``tilt_down``: the camera turns up / down, so the content moves DOWN / UP;
- ``zoom_in`` / ``zoom_out``: the content grows / shrinks about the centre;
- ``roll``: the content turns about the centre (either way).

Object motions (:data:`OBJECT_MOTIONS`) say how the main cut-out moves against the
background, in the frame's directions: ``none``, ``left``, ``right``, ``up``, ``down``,
``approach`` (grows) and ``recede`` (shrinks). They are what is left once the camera's motion
is taken out, so a pan that follows a walking subject (``follow``: it stays near the centre
while the background slides by) is a pan plus an object moving the camera's way. How the
subject moves in the frame's pixels is in ``object_in_frame`` (by
:func:`~captioner.data.camera_plan.motion_label`: for a followed subject it is ``none``,
for a still one under a zoom it is ``approach`` or ``recede``). Movers may bob as they walk;
a second cut-out may stand still or cross the first; either may pass behind the other.

Depth: in a share of the pans, tilts and hand-held clips the cut-outs are nearer than the
background and a blurred near layer (a strip of another photo with a wavy edge, or a big
blurred stamp) nearer still; under the camera's shift each moves ``rate`` times as far as the
background (parallax; zooms and rolls have none). Degradations: motion blur along the motion
(five renders over the exposure), lighting, colour cast, brightness drift and flicker, sensor
noise, JPEG, then MPEG-4. The speed is drawn per clip, from slow to fast. A share of the clips
(``cuts``) cuts to another photograph at frame ``cut``; the camera keeps moving.

Output under ``out_dir``:

- ``<split>/<camera>/<index:06d>.mp4``: the clips, one folder per camera motion, with
  ``classes.txt`` beside them (and at the top), so the folder trains an activity model
  (``captioner train activity --data OUT/train``) as a ``captioner data motion`` folder does;
- ``<split>/objects.csv``: ``path,label`` with the object motion, for the same clips;
- ``<split>.json``: ``{"info": {...}, "clips": [record, ...]}``, a record per clip with
  ``path`` (relative to ``out_dir``), ``index``, ``camera``, ``object``, ``object_in_frame``,
  ``moves`` (the moving stamp's category from the object bank's noun table, or null), ``cut``
  (the first frame of the new shot, or null), ``follow``, ``speed`` (0 slow .. 1 fast),
  ``transforms``, ``objects`` (each with ``category``, ``stamp``, ``motion``, ``in_frame``,
  ``bob``, ``rate``, per-frame ``track`` ``[cx, cy, height]`` as fractions of the side,
  ``boxes``, ``visible`` and ``occluded``), ``layers`` and ``degradations``.

``transforms[t]`` is the background's motion from frame ``t-1`` to frame ``t`` (``[0, 0, 0,
0]`` for frame 0, null at a cut) as ``[dx, dy, log_scale, rotation]``: a background point at
``p`` pixels from the frame centre (x right, y down) in frame ``t-1`` is at ``exp(log_scale)
R p + (dx W, dy H)`` in frame ``t``, where ``R`` turns ``rotation`` radians clockwise on
screen, as :mod:`captioner.video.motion` measures it (``x' = x cos a - y sin a``, ``y' = x
sin a + y cos a``). So ``dx > 0`` for
``pan_left``, ``dy > 0`` for ``tilt_up``, ``log_scale > 0`` for ``zoom_in``.

Every clip draws from its own RNG derived from ``(seed, split, index)``, and its camera
motion is ``CAMERA_MOTIONS[index % 9]``: a split's clips do not depend on the others' sizes,
and the same arguments give byte-identical files. The parts live beside this module:
:mod:`~captioner.data.camera_plan` (what moves how), :mod:`~captioner.data.camera_render`
(pixels), :mod:`~captioner.data.camera_assets` (pictures).
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import pathlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from captioner.data.camera_assets import CAMERA_PACKAGES, CameraAssets, load_camera_assets
from captioner.data.camera_plan import (
    CAMERA_MOTIONS,
    OBJECT_MOTIONS,
    frame_track,
    frame_transforms,
    motion_label,
    plan_clip,
)
from captioner.data.camera_render import render_clip
from captioner.data.motion import write_video
from captioner.data.objects_fetch import STAMPS_PACKAGE
from captioner.data.synth import check_count, seeded_rng, write_json
from captioner.files import atomic_write_text
from captioner.progress import progress_bar

__all__ = [
    "CAMERA_MOTIONS",
    "GENERATOR_VERSION",
    "OBJECT_MOTIONS",
    "SPLITS",
    "CameraAssets",
    "clip_record",
    "generate_camera",
    "load_camera_assets",
    "plan_clip",
    "render_clip",
]

logger = logging.getLogger(__name__)

GENERATOR_NAME = "captioner.data.camera"
GENERATOR_VERSION = "1.0"
SPLITS: tuple[str, ...] = ("train", "val", "test")


def clip_record(plan: dict[str, Any], info: dict[str, Any], path: str) -> dict[str, Any]:
    """The JSON record of one rendered clip (see the module docstring for the fields)."""
    size = plan["size"]
    objects = []
    main_in_frame = "none"
    for obj, seen in zip(plan["objects"], info["objects"], strict=True):
        centres, heights = frame_track(obj, plan["path"], size)
        in_frame = motion_label(centres, heights)
        if obj["main"]:
            main_in_frame = in_frame
        track = np.concatenate([centres, heights[:, None]], axis=1)
        objects.append(
            {
                "category": obj["category"],
                "stamp": obj["stamp"],
                "main": obj["main"],
                "motion": obj["motion"],
                "in_frame": in_frame,
                "bob": obj["bob"],
                "follow": obj["follow"],
                "rate": round(obj["rate"], 3),
                "track": np.round(track, 4).tolist(),
                **seen,
            }
        )
    near = plan["near"]
    return {
        "path": path,
        "camera": plan["camera"],
        "object": plan["object"],
        "object_in_frame": main_in_frame,
        "moves": plan["moves"],
        "cut": plan["cut"],
        "follow": plan["follow"],
        "speed": round(plan["speed"], 3),
        "transforms": frame_transforms(plan["path"], size, plan["cut"]),
        "objects": objects,
        "layers": {
            "parallax": plan["parallax"],
            "backgrounds": info["backgrounds"],
            "near": None
            if near is None
            else {"kind": near["kind"], "rate": round(near["rate"], 3), "source": info["near"]},
        },
        "degradations": {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in plan["degrade"].items()
        },
    }


# ----------------------------------------------------------------------------- one clip

_WORKER: dict[str, Any] = {}


def _init_worker(assets: CameraAssets, settings: dict[str, Any], out: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # one clip per process; OpenCV's own threads would only contend
    _WORKER.update(assets=assets, settings=settings, out=pathlib.Path(out))


def _make_clip(job: tuple[str, int]) -> dict[str, Any]:
    """Plan, render and write one clip; its record."""
    split, index = job
    assets: CameraAssets = _WORKER["assets"]
    s = _WORKER["settings"]
    camera = CAMERA_MOTIONS[index % len(CAMERA_MOTIONS)]
    rng = seeded_rng(s["seed"], split, index)
    plan = plan_clip(rng, camera, assets.categories, s["frames"], s["size"], s["cuts"])
    frames, info = render_clip(plan, assets, rng)
    rel = f"{split}/{camera}/{index:06d}.mp4"
    write_video(_WORKER["out"] / rel, frames, s["fps"])
    return {"index": index, **clip_record(plan, info, rel)}


def _run(
    jobs: list[tuple[str, int]],
    assets: CameraAssets,
    settings: dict[str, Any],
    out: pathlib.Path,
    workers: int,
) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        _init_worker(assets, settings, str(out))
        yield from map(_make_clip, jobs)
        return
    # spawn, not fork: a forked child can hang in OpenCV's thread pool left by the parent.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(assets, settings, str(out))
    ) as pool:
        yield from pool.map(_make_clip, jobs, chunksize=4)


# ----------------------------------------------------------------------------- dataset


def _write_split(
    out: pathlib.Path,
    split: str,
    count: int,
    assets: CameraAssets,
    settings: dict[str, Any],
    workers: int,
    progress: bool,
) -> pathlib.Path:
    split_dir = out / split
    for camera in CAMERA_MOTIONS:
        (split_dir / camera).mkdir(parents=True, exist_ok=True)
    (split_dir / "classes.txt").write_text("\n".join(CAMERA_MOTIONS) + "\n", encoding="utf-8")
    jobs = [(split, index) for index in range(count)]
    clips = list(
        progress_bar(
            _run(jobs, assets, settings, out, workers),
            total=count,
            desc=f"camera {split}",
            unit="clip",
            enabled=progress and count > 0,
        )
    )
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["path", "label"])
    for clip in clips:
        writer.writerow([clip["path"].split("/", 1)[1], clip["object"]])
    atomic_write_text(split_dir / "objects.csv", table.getvalue())
    payload = {
        "info": {
            "description": "a virtual camera and moving cut-outs over real photographs",
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "split": split,
            "count": count,
            **settings,
            "camera_motions": list(CAMERA_MOTIONS),
            "object_motions": list(OBJECT_MOTIONS),
            "transforms": "[dx, dy, log_scale, rotation] from the previous frame: shift as a "
            "fraction of the side, rotation in radians clockwise on screen",
            "backgrounds": len(assets.backgrounds),
            "stamps": len(assets.stamp_files),
            "sources": {
                "backgrounds": "scikit-image data; Debian packages " + ", ".join(CAMERA_PACKAGES),
                "objects": f"Debian package {STAMPS_PACKAGE} (GPL-2)",
            },
        },
        "clips": clips,
    }
    path = out / f"{split}.json"
    write_json(path, payload)
    logger.info("wrote %d %s clips to %s", count, split, split_dir)
    return path


def generate_camera(
    out_dir: str | os.PathLike,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    frames: int = 16,
    size: int = 160,
    fps: int = 12,
    cuts: float = 0.1,
    stamps: str | os.PathLike | None = None,
    backgrounds: str | os.PathLike | None = None,
    packages: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
    assets: CameraAssets | None = None,
) -> dict[str, pathlib.Path]:
    """Write the camera-motion dataset under ``out_dir``; return ``{split: json path,
    "classes": path}``.

    ``stamps`` / ``backgrounds`` / ``packages`` say where the Debian packages were unpacked
    (see :func:`~captioner.data.camera_assets.load_camera_assets`; default: fetched), or
    ``assets`` gives them loaded. ``workers`` processes render clips side by side (1: this
    process); the files do not depend on it.
    """
    settings = {
        "seed": check_count("seed", seed),
        "frames": check_count("frames", frames),
        "size": check_count("size", size),
        "fps": check_count("fps", fps),
        "cuts": float(cuts),
    }
    counts = {
        s: check_count(f"n_{s}", n) for s, n in zip(SPLITS, (n_train, n_val, n_test), strict=True)
    }
    workers = check_count("workers", workers)
    if settings["frames"] < 4:
        raise ValueError(f"frames must be at least 4 to show a motion, got {frames}")
    if settings["size"] < 64 or settings["size"] % 2:
        raise ValueError(
            f"size must be an even number of pixels, at least 64 (MPEG-4 needs even sides), "
            f"got {size}"
        )
    if settings["fps"] < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    if not 0.0 <= settings["cuts"] <= 1.0:
        raise ValueError(f"cuts is the share of clips with a scene cut, 0 to 1; got {cuts}")
    if packages is not None and (stamps is not None or backgrounds is not None):
        raise ValueError(
            "give --packages (one folder for every package) or --stamps/--backgrounds, not both"
        )
    if assets is None:
        assets = load_camera_assets(stamps, backgrounds, packages)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = out / "classes.txt"
    classes.write_text("\n".join(CAMERA_MOTIONS) + "\n", encoding="utf-8")
    paths = {
        split: _write_split(out, split, counts[split], assets, settings, workers, progress)
        for split in SPLITS
    }
    return {**paths, "classes": classes}
