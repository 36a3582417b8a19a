"""The no-learning geometry rule: camera and object motion of a window, from motion features.

The honest baseline every learned motion figure is compared to. It reads the per-pair vectors
of :func:`captioner.video.motion.clip_motion` for one window (one shot: see
:func:`captioner.video.shots.split_windows`) and names

- the camera motion, one of :data:`CAMERA_MOTIONS`, and
- the motion of what moves on its own (the residual region), one of :data:`OBJECT_MOTIONS`,

each with a score in [0, 1] (how clearly the rule's evidence holds; not a calibrated
probability).

Conventions (the one place they are written; other modules import these constants). Image
coordinates: x to the right, y down; ``dx`` / ``dy`` are the content's shift between frames.

- ``pan_left``: the camera turns left, so the content moves RIGHT (``dx > 0``); ``pan_right``:
  content moves left (``dx < 0``).
- ``tilt_up``: the camera turns up, so the content moves DOWN (``dy > 0``); ``tilt_down``:
  content moves up.
- ``zoom_in``: the content grows (``log_scale > 0``); ``zoom_out``: it shrinks.
- ``roll``: the image turns about its centre (either way).
- ``handheld``: small shifts that change direction, with no consistent drift.
- ``static``: no camera motion at all.

Object motion is the region's own motion once the camera's is taken out, in image axes:
``left`` = towards the left edge, ``up`` = towards the top; ``approach`` = the region grows,
``recede`` = it shrinks. It is motion against the background: a walker whom a ``pan_left``
follows keeps their place in the frame and still reads as ``left``.

The rule compares every kind of motion as a displacement in fractions of the frame: a shift
as it is, a scale change or a turn by how far it moves a point half a frame from the centre
(for a region: half the region's size), so that a pan, a zoom and a roll meet one threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.video.motion import FIELD, MOTION_DIM
from captioner.video.residual import MIN_REGION_TRACKS
from captioner.video.tracking import MAX_CORNERS

CAMERA_MOTIONS = (
    "static",
    "handheld",
    "pan_left",
    "pan_right",
    "tilt_up",
    "tilt_down",
    "zoom_in",
    "zoom_out",
    "roll",
)
OBJECT_MOTIONS = ("none", "left", "right", "up", "down", "approach", "recede")

#: The content's shift (sign of dx, sign of dy) that each camera turn produces.
CONTENT_SHIFT = {
    "pan_left": (1, 0),
    "pan_right": (-1, 0),
    "tilt_up": (0, 1),
    "tilt_down": (0, -1),
}
#: The sign of the content's log scale change that each zoom produces.
CONTENT_SCALE = {"zoom_in": 1, "zoom_out": -1}
#: The region's shift (sign of dx, sign of dy) for each object direction.
OBJECT_SHIFT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
#: The sign of the region's log scale change for approach and recede.
OBJECT_SCALE = {"approach": 1, "recede": -1}

#: A camera move needs a net displacement per pair (fraction of the frame) of at least this.
STILL = 0.003
#: Below this mean displacement per pair the camera is static; from it up, a camera that moves
#: without drifting one way is handheld (chosen on rendered clips of seed 99: tracked jitter of
#: a still camera stays under 0.001 there, a hand's over 0.0012).
JITTER = 0.0012
#: A move is consistent when the net displacement is at least this share of the path.
CONSISTENT = 0.6
#: An object moves when its typical shift per pair reaches this (fraction of the frame) ...
OBJECT_MOVES = 0.004
#: ... or its typical scale change per pair (log) reaches this.
OBJECT_SCALES = 0.015
#: ... and a region was found in at least this share of the window's measured pairs.
OBJECT_PRESENT = 0.5


@dataclass(frozen=True)
class GeometryLabels:
    """The rule's reading of one window."""

    camera: str
    camera_score: float
    object: str
    object_score: float


def _margin(value: float, threshold: float) -> float:
    """0.5 at the threshold, towards 1 far above it, towards 0 far below."""
    r = value / threshold
    return r / (1.0 + r)


def _check(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != MOTION_DIM:
        raise ValueError(f"features must be (pairs, {MOTION_DIM}), got shape {features.shape}")
    return features


def _drift(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, K) displacements -> per component: the typical step (median: one odd pair does
    not make a move) and its consistency, net displacement / path length (1: all one way)."""
    path = np.abs(v).mean(axis=0)
    consistency = np.abs(v.mean(axis=0)) / np.maximum(path, 1e-12)
    return np.median(v, axis=0), np.where(path > 0, consistency, 0.0)


def _name(k: int, sign: int, shifts: dict, scales: dict) -> str:
    """The label of a signed component: k = 0 (dx), 1 (dy) or 2 (scale), read off the tables."""
    if k == 2:
        return next(n for n, s in scales.items() if s == sign)
    want = (sign, 0) if k == 0 else (0, sign)
    return next(n for n, s in shifts.items() if s == want)


def camera_label(features: np.ndarray) -> tuple[str, float]:
    """(pairs, MOTION_DIM) motion features of one window -> (camera motion, score).

    Pairs without texture are left out; with none left the answer is ``("static", 0.0)``:
    nothing was seen to move, and nothing could have been. The score is scaled by the share of
    pairs measured: two measured pairs among twenty (a textured thing moving over a plain wall)
    are too little to say how the camera moves."""
    name, score, measured = _camera(_check(features))
    return name, score * measured


def _camera(f: np.ndarray) -> tuple[str, float, float]:
    total = max(len(f), 1)
    f = f[f[:, FIELD["no_texture"]] < 0.5]
    measured = len(f) / total
    if len(f) == 0:
        return "static", 0.0, 0.0
    v = np.stack(
        [
            f[:, FIELD["dx"]],
            f[:, FIELD["dy"]],
            0.5 * f[:, FIELD["log_scale"]],
            0.5 * f[:, FIELD["rotation"]],
        ],
        axis=1,
    )  # (pairs, 4) displacement equivalents
    moving = float(np.median(np.abs(v).max(axis=1)))
    if moving < JITTER:
        return "static", 1.0 - _margin(moving, JITTER), measured
    net, consistency = _drift(v)
    k = int(np.argmax(np.abs(net)))
    if abs(net[k]) >= STILL and consistency[k] >= CONSISTENT:
        sign = 1 if net[k] > 0 else -1
        name = "roll" if k == 3 else _name(k, sign, CONTENT_SHIFT, CONTENT_SCALE)
        return name, float(consistency[k] * _margin(abs(net[k]), STILL)), measured
    # Moving, but not one way: the larger the jitter and the less it drifts, the surer.
    whole = float(np.linalg.norm(v.mean(axis=0)) / np.linalg.norm(v, axis=1).mean())
    return "handheld", float((1.0 - whole) * _margin(moving, JITTER)), measured


def object_label(features: np.ndarray) -> tuple[str, float]:
    """(pairs, MOTION_DIM) motion features of one window -> (object motion, score).

    Pairs without a measured camera count too: their residual is measured against a still
    camera, which is how a textured thing moving over a plain wall is seen at all."""
    f = _check(features)
    if len(f) == 0:
        return "none", 0.0
    present = f[:, FIELD["region_present"]] > 0.5
    share = float(present.mean())
    if share < OBJECT_PRESENT:
        return "none", 1.0 - share
    r = f[present]
    # The region's scale change: from the corner tracks on it where there are enough (sharp),
    # else from the residual flow's divergence (which the background around an edge dilutes).
    tracked = r[:, FIELD["region_tracks"]] * MAX_CORNERS >= MIN_REGION_TRACKS - 0.5
    scale = np.where(
        tracked, r[:, FIELD["region_track_log_scale"]], r[:, FIELD["region_log_scale"]]
    )
    half = 0.5 * np.sqrt(
        np.clip(r[:, FIELD["region_x1"]] - r[:, FIELD["region_x0"]], 0, 1)
        * np.clip(r[:, FIELD["region_y1"]] - r[:, FIELD["region_y0"]], 0, 1)
    )
    v = np.stack([r[:, FIELD["region_dx"]], r[:, FIELD["region_dy"]], half * scale], axis=1)
    net, consistency = _drift(v)  # (3,) each: shift x, shift y, edge shift from scaling
    # A component counts when it clears its own bar; the largest (as a displacement) wins.
    bars = np.array([OBJECT_MOVES, OBJECT_MOVES, OBJECT_SCALES])
    typical = np.array([abs(net[0]), abs(net[1]), abs(float(np.median(scale)))])
    clears = (typical >= bars) & (consistency >= CONSISTENT)
    if not clears.any():
        # Something moves, but not one way (or too little): no direction to name.
        return "none", float(1.0 - share * _margin(float((typical / bars).max()), 1.0))
    k = int(np.argmax(np.where(clears, np.abs(net), -1.0)))
    name = _name(k, 1 if net[k] > 0 else -1, OBJECT_SHIFT, OBJECT_SCALE)
    return name, float(share * consistency[k] * _margin(typical[k], bars[k]))


def geometry_labels(features: np.ndarray) -> GeometryLabels:
    """(pairs, MOTION_DIM) motion features of one window -> camera and object labels."""
    camera, camera_score = camera_label(features)
    obj, object_score = object_label(features)
    return GeometryLabels(camera, camera_score, obj, object_score)
