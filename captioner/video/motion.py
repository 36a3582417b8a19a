"""Motion between sampled frames: the camera's global transform, and what moves on top of it.

For each pair of consecutive frames, at low resolution (short side :data:`WORK_SIZE`, grey):

1. **Camera** (:mod:`~captioner.video.tracking`): corners tracked by pyramidal Lucas-Kanade,
   forward-backward checked, a similarity (shift, scale, rotation) fitted by RANSAC; the
   identity with ``no_texture`` set when there is too little texture spread over the frame.
2. **Residual** (:mod:`~captioner.video.residual`): DIS flow after the camera is taken out,
   on a :data:`GRID` x :data:`GRID` grid of cells and as one moving region (box, centroid,
   motion, divergence, and the similarity of the corner tracks on it).

Sign conventions, in image coordinates (x to the right, y down); shifts are fractions of the
frame's width (x) and height (y):

- ``dx > 0``: the content moves right; ``dy > 0``: it moves down.
- ``log_scale > 0``: the content grows (zoom in; for a region: it approaches).
- ``rotation > 0`` (radians): the content turns clockwise as seen on screen (from +x towards +y).

Each pair becomes one float32 vector of :data:`MOTION_DIM` values laid out as
:data:`MOTION_FIELDS` (:data:`FIELD` maps a name to its index). A clip of T frames gives T-1
rows: a motion exists only between two frames, and a padded first row would read as "a
textured, perfectly still pair", which is a claim, not an absence. Everything is numpy and
OpenCV on the CPU, deterministic (RANSAC in OpenCV seeds its own generator on every call).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from captioner.video.residual import GRID, MovingRegion, make_flow, residual_motion
from captioner.video.tracking import (
    MAX_CORNERS,
    WORK_SIZE,
    CameraMotion,
    camera_motion,
    work_frame,
)

__all__ = [
    "FIELD",
    "GRID",
    "MOTION_DIM",
    "MOTION_FIELDS",
    "WORK_SIZE",
    "CameraMotion",
    "MovingRegion",
    "PairMotion",
    "clip_motion",
    "pair_motion",
]

GLOBAL_FIELDS = (
    "dx",
    "dy",
    "log_scale",
    "rotation",
    "inlier_share",
    "track_share",  # tracks found / MAX_CORNERS
    "inlier_spread",  # share of the frame the inliers' box covers
    "no_texture",  # 1.0 when the transform could not be measured (identity reported)
)
CELL_FIELDS = tuple(
    f"cell{r}{c}_{q}" for r in range(GRID) for c in range(GRID) for q in ("dx", "dy", "mag")
)
REGION_FIELDS = (
    "region_present",
    "region_share",  # of the frame
    "region_cx",  # centroid, fractions of width / height from the top-left corner
    "region_cy",
    "region_x0",  # box: left, top, right, bottom
    "region_y0",
    "region_x1",
    "region_y1",
    "region_dx",  # mean residual motion of the region
    "region_dy",
    "region_log_scale",  # the region's divergence as a scale change: > 0 grows (approaches)
    "region_tracks",  # corner tracks agreeing on the region's own similarity / MAX_CORNERS
    "region_track_log_scale",  # that similarity's scale change (0 without enough tracks)
    "region_track_rotation",  # ... and its turn, clockwise on screen
    "background_residual",  # median residual magnitude: how much the transform leaves over
)
#: Names of the vector's entries, in order: 8 camera, 48 grid (row-major cells, each dx, dy,
#: magnitude), 15 region.
MOTION_FIELDS = GLOBAL_FIELDS + CELL_FIELDS + REGION_FIELDS
MOTION_DIM = len(MOTION_FIELDS)
#: Field name -> index in a motion vector.
FIELD = {name: i for i, name in enumerate(MOTION_FIELDS)}


@dataclass(frozen=True)
class PairMotion:
    """Motion between two frames: camera, residual grid (GRID, GRID, 3), moving region."""

    camera: CameraMotion
    cells: np.ndarray
    region: MovingRegion | None
    background_residual: float

    def vector(self) -> np.ndarray:
        """-> (MOTION_DIM,) float32 laid out as :data:`MOTION_FIELDS`."""
        c, r = self.camera, self.region
        head = [
            c.dx,
            c.dy,
            c.log_scale,
            c.rotation,
            c.inlier_share,
            c.tracks / MAX_CORNERS,
            c.spread,
            float(c.no_texture),
        ]
        if r is None:
            tail = [0.0] * (len(REGION_FIELDS) - 1)
        else:
            tail = [1.0, r.share, *r.centroid, *r.box, r.dx, r.dy, r.log_scale]
            tail += [r.tracks / MAX_CORNERS, r.track_log_scale, r.track_rotation]
        out = np.concatenate(
            [head, self.cells.reshape(-1), tail, [self.background_residual]]
        ).astype(np.float32)
        assert out.shape == (MOTION_DIM,)
        return out


def _pair(first: np.ndarray, second: np.ndarray, dis: cv2.DISOpticalFlow) -> PairMotion:
    camera = camera_motion(first, second)
    cells, region, level = residual_motion(first, second, camera, dis)
    return PairMotion(camera, cells, region, level)


def pair_motion(
    first: np.ndarray, second: np.ndarray, dis: cv2.DISOpticalFlow | None = None
) -> PairMotion:
    """Motion from frame ``first`` to ``second`` (RGB uint8 (H, W, 3), same size)."""
    if first.shape != second.shape:
        raise ValueError(f"frames differ in shape: {first.shape} and {second.shape}")
    return _pair(work_frame(first), work_frame(second), dis or make_flow())


def clip_motion(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames -> (T-1, MOTION_DIM) float32: one row per consecutive
    pair, row i the motion from frame i to frame i+1 (layout: :data:`MOTION_FIELDS`)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    out = np.zeros((max(len(frames) - 1, 0), MOTION_DIM), np.float32)
    if len(frames) < 2:
        return out
    dis = make_flow()  # one per call: DIS keeps buffers, so it is not shared across threads
    grey = [work_frame(f) for f in frames]
    for i in range(len(frames) - 1):
        out[i] = _pair(grey[i], grey[i + 1], dis).vector()
    return out
