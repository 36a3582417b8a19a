"""What a camera clip shows, decided before any pixel is painted: the camera's path, the
cut-outs' tracks, the depth layers and the degradations (see :mod:`captioner.data.camera`).

Coordinates are pixels from the frame centre, x right and y down. The camera's state at a
(possibly fractional) frame time is the content's displacement ``shift`` since frame 0, its
``zoom`` (log of the magnification) and ``roll`` (degrees, counterclockwise on screen): a
point of the background at ``p`` in frame 0 is at ``exp(zoom) R(roll) p + shift`` later.
A layer nearer the camera moves ``rate`` times as far under the translation (parallax).
Objects live in frame-0 coordinates at their own depth, so a still object moves with its
layer and a moving one adds its own motion to the camera's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from captioner.video.geometry import CAMERA_MOTIONS, OBJECT_MOTIONS

__all__ = [
    "CAMERA_MOTIONS",
    "FOLLOWS",
    "OBJECT_MOTIONS",
    "camera_matrix",
    "frame_track",
    "frame_transforms",
    "motion_label",
    "path_at",
    "plan_clip",
]

#: The object direction a camera move keeps in frame when it follows a subject.
FOLLOWS: dict[str, str] = {
    "pan_left": "left",
    "pan_right": "right",
    "tilt_up": "up",
    "tilt_down": "down",
}

# Camera turning left moves the content right (+x); tilting up moves it down (+y).
_PANS = {"pan_left": (0, 1.0), "pan_right": (0, -1.0), "tilt_up": (1, 1.0), "tilt_down": (1, -1.0)}
_DIRECTIONS = {"left": (0, -1.0), "right": (0, 1.0), "up": (1, -1.0), "down": (1, 1.0)}
# Per-frame speeds from slow (speed 0) to fast (speed 1), log-spaced.
_PAN_SPEED = (0.006, 0.035)  # fraction of the frame side per frame
_ZOOM_SPEED = (0.008, 0.035)  # log-scale per frame
_ROLL_SPEED = (0.4, 2.5)  # degrees per frame
_FOLLOW_SHARE = 0.25
_PARALLAX_SHARE = 0.6
#: Thresholds of :func:`motion_label`: net shift (fraction of the side) and log-scale change.
MOVE_THRESHOLD = 0.08
SCALE_THRESHOLD = 0.2


def _log_lerp(bounds: tuple[float, float], u: float) -> float:
    lo, hi = bounds
    return lo * (hi / lo) ** u


def _smooth_noise(rng: np.random.Generator, frames: int, amplitude: float) -> np.ndarray:
    """A wobble that starts and ends at 0 (no drift) and peaks at ``amplitude``."""
    t = np.linspace(0.0, 1.0, frames)
    out = np.zeros(frames)
    for _ in range(3):
        out += rng.normal() * np.sin(2 * np.pi * (rng.uniform(0.7, 3.0) * t + rng.uniform()))
    out += 0.35 * rng.normal(size=frames)  # tremor on top of the slow sway
    out -= out[0] + (out[-1] - out[0]) * t
    peak = float(np.abs(out).max())
    return out * (amplitude / peak) if peak > 1e-9 else out


def _profile(rng: np.random.Generator, steps: int) -> np.ndarray:
    # Speeding up or slowing down a little over the clip, mean 1.
    return 1.0 + rng.uniform(-0.4, 0.4) * np.linspace(-1.0, 1.0, steps)


def _camera_path(
    rng: np.random.Generator, camera: str, frames: int, size: int, speed: float
) -> dict[str, np.ndarray]:
    shift = np.zeros((frames, 2))
    zoom = np.zeros(frames)
    roll = np.zeros(frames)
    step_px = 0.0  # how far the content moves per frame, for the hand's share below
    if camera == "handheld":
        amp = size * (0.004 + 0.008 * speed)
        shift[:, 0] = _smooth_noise(rng, frames, amp)
        shift[:, 1] = _smooth_noise(rng, frames, amp * rng.uniform(0.5, 1.0))
        roll = _smooth_noise(rng, frames, rng.uniform(0.1, 0.5))
        zoom = _smooth_noise(rng, frames, rng.uniform(0.001, 0.005))
    elif camera in _PANS:
        axis, sign = _PANS[camera]
        v = size * _log_lerp(_PAN_SPEED, speed)
        profile = _profile(rng, frames - 1)
        steps = np.zeros((frames - 1, 2))
        steps[:, axis] = sign * v * profile
        steps[:, 1 - axis] = v * rng.uniform(-0.12, 0.12) * profile
        shift[1:] = np.cumsum(steps, axis=0)
        step_px = v
    elif camera in ("zoom_in", "zoom_out"):
        rate = _log_lerp(_ZOOM_SPEED, speed) * (1.0 if camera == "zoom_in" else -1.0)
        zoom[1:] = np.cumsum(rate * _profile(rng, frames - 1))
        step_px = abs(rate) * size / 2
    elif camera == "roll":
        rate = _log_lerp(_ROLL_SPEED, speed) * rng.choice([-1.0, 1.0])
        roll[1:] = np.cumsum(rate * _profile(rng, frames - 1))
        step_px = math.radians(abs(rate)) * size / 2
    elif camera != "static":
        raise ValueError(f"unknown camera motion {camera!r}; expected one of {CAMERA_MOTIONS}")
    if step_px and rng.random() < 0.3:  # a hand-held move: some shake on top, never a drift
        for axis in (0, 1):
            shift[:, axis] += _smooth_noise(rng, frames, 0.25 * step_px)
    return {"shift": shift, "zoom": zoom, "roll": roll}


def path_at(path: Mapping[str, np.ndarray], tau: float) -> tuple[np.ndarray, float, float]:
    """The camera's (shift, zoom, roll) at frame time ``tau``, linear between frames and
    extrapolated before the first and after the last."""
    n = len(path["zoom"])
    i = min(max(math.floor(tau), 0), n - 2)
    w = tau - i
    return tuple(  # type: ignore[return-value]
        path[k][i] * (1 - w) + path[k][i + 1] * w for k in ("shift", "zoom", "roll")
    )


def camera_matrix(shift: np.ndarray, zoom: float, roll: float, rate: float = 1.0) -> np.ndarray:
    """3x3 map from frame-0 to frame coordinates (centred pixels) of a layer at ``rate``."""
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    m = math.exp(zoom)
    return np.array(
        [[m * c, m * s, rate * shift[0]], [-m * s, m * c, rate * shift[1]], [0.0, 0.0, 1.0]]
    )


def frame_transforms(
    path: Mapping[str, np.ndarray], size: int, cut: int | None
) -> list[list[float] | None]:
    """Per frame, the background's motion since the previous frame: ``[dx, dy, log_scale,
    rotation]`` (shift as a fraction of the side; rotation in radians, positive clockwise on
    screen, the convention of :mod:`captioner.video.motion`); ``[0, 0, 0, 0]`` for frame 0 and
    None at a cut."""
    out: list[list[float] | None] = [[0.0, 0.0, 0.0, 0.0]]
    for t in range(1, len(path["zoom"])):
        if cut is not None and t == cut:
            out.append(None)
            continue
        prev = camera_matrix(path["shift"][t - 1], path["zoom"][t - 1], path["roll"][t - 1])
        now = camera_matrix(path["shift"][t], path["zoom"][t], path["roll"][t])
        m = now @ np.linalg.inv(prev)
        scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))
        # the plan turns counterclockwise on screen; motion features count clockwise
        angle = -math.atan2(-m[1, 0], m[0, 0])
        out.append(
            [round(m[0, 2] / size, 6), round(m[1, 2] / size, 6), round(math.log(scale), 6),
             round(angle, 7)]
        )  # fmt: skip
    return out


def frame_track(
    obj: Mapping[str, Any], path: Mapping[str, np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """An object's centre (T, 2) and height (T,) in the frame, both as fractions of the side."""
    frames = len(path["zoom"])
    centres = np.empty((frames, 2))
    for t in range(frames):
        m = camera_matrix(path["shift"][t], path["zoom"][t], path["roll"][t], obj["rate"])
        centres[t] = m[:2, :2] @ obj["centre"][t] + m[:2, 2]
    heights = np.exp(path["zoom"]) * obj["height"]
    return centres / size + 0.5, heights / size


def motion_label(centres: np.ndarray, heights: np.ndarray) -> str:
    """The :data:`OBJECT_MOTIONS` word for a track (fractions of the side): a net shift of at
    least :data:`MOVE_THRESHOLD` or a log-size change of at least :data:`SCALE_THRESHOLD`,
    whichever is larger against its threshold; the net change is the least-squares slope over
    the clip, so a walking bob does not count."""
    t = np.arange(len(heights), dtype=np.float64)
    span = t[-1] - t[0]
    move = np.polyfit(t, centres, 1)[0] * span  # (2,)
    grow = float(np.polyfit(t, np.log(heights), 1)[0] * span)
    axis = int(np.argmax(np.abs(move)))
    moved = abs(move[axis]) / MOVE_THRESHOLD
    grown = abs(grow) / SCALE_THRESHOLD
    if max(moved, grown) < 1.0:
        return "none"
    if grown >= moved:
        return "approach" if grow > 0 else "recede"
    if axis == 0:
        return "right" if move[0] > 0 else "left"
    return "down" if move[1] > 0 else "up"


def _own_motion(
    rng: np.random.Generator, motion: str, frames: int, size: int, bob: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Relative track (centre (T, 2) from 0, height scale (T,), angle (T,)) and base height."""
    t = np.linspace(0.0, 1.0, frames)
    u = rng.uniform()
    centre = np.zeros((frames, 2))
    grow = np.ones(frames)
    height = rng.uniform(0.28, 0.5) * size
    ease = t + rng.uniform(-0.15, 0.15) * np.sin(np.pi * t)  # not quite constant speed
    if motion in _DIRECTIONS:
        axis, sign = _DIRECTIONS[motion]
        dist = size * ((0.2 + 0.4 * u) if axis == 0 else (0.15 + 0.3 * u))
        centre[:, axis] = sign * dist * (ease - 0.5)
        centre[:, 1 - axis] = rng.uniform(-0.03, 0.03) * size * t
    elif motion in ("approach", "recede"):
        factor = 1.35 + 1.05 * u
        height = (
            rng.uniform(0.2, 0.32) * size
            if motion == "approach"
            else rng.uniform(0.45, 0.65) * size
        )
        grow = factor ** (ease if motion == "approach" else -ease)
        centre[:, 1] = rng.uniform(0.0, 0.04) * size * t * (1 if motion == "approach" else -1)
    elif motion != "none":
        raise ValueError(f"unknown object motion {motion!r}; expected one of {OBJECT_MOTIONS}")
    angle = np.zeros(frames)
    if bob:
        period = rng.uniform(3.0, 6.0)
        phase = rng.uniform(0, np.pi)
        steps = np.arange(frames)
        centre[:, 1] -= (
            rng.uniform(0.03, 0.07) * height * grow * np.abs(np.sin(np.pi * steps / period + phase))
        )
        angle = rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * steps / (2 * period) + phase)
    return centre, grow, angle, height


def _centre_in_frame(
    rng: np.random.Generator,
    obj: dict[str, Any],
    path: Mapping[str, np.ndarray],
    size: int,
    jitter: bool = True,
) -> None:
    """Move a track so that its path through the frame is centred (plus a random offset)."""
    centres, heights = frame_track(obj, path, size)
    low, high = centres.min(axis=0), centres.max(axis=0)
    slack = np.maximum(0.0, 0.8 - (high - low) - heights.max() * 0.5) / 2
    target = -(low + high - 1.0) / 2 + (rng.uniform(-slack, slack) if jitter else 0.0)
    mid = len(heights) // 2
    m = camera_matrix(path["shift"][mid], path["zoom"][mid], path["roll"][mid], obj["rate"])
    obj["centre"] = obj["centre"] + np.linalg.solve(m[:2, :2], target * size)


def _follow(
    rng: np.random.Generator, obj: dict[str, Any], path: Mapping[str, np.ndarray], size: int
) -> None:
    """Make the object stay where it is in the frame (its bob aside): the camera follows it."""
    spot = rng.uniform(-0.12, 0.12, 2) * size
    bobs = obj["centre"] - obj["centre"][0]
    for t in range(len(path["zoom"])):
        m = camera_matrix(path["shift"][t], path["zoom"][t], path["roll"][t], obj["rate"])
        obj["centre"][t] = np.linalg.solve(m[:2, :2], spot + bobs[t] - m[:2, 2])


def _pick_stamp(rng: np.random.Generator, stamps: Mapping[str, Sequence[str]]) -> tuple[str, str]:
    categories = sorted(stamps)
    category = categories[int(rng.integers(len(categories)))]
    keys = stamps[category]
    return category, keys[int(rng.integers(len(keys)))]


def _objects(
    rng: np.random.Generator,
    motion: str,
    path: Mapping[str, np.ndarray],
    stamps: Mapping[str, Sequence[str]],
    frames: int,
    size: int,
    parallax: bool,
    most: int,
    follow: bool,
) -> list[dict[str, Any]]:
    if most == 0 or not stamps:
        return []
    if motion == "none":
        count = int(rng.integers(0, 3)) if most > 1 else int(rng.integers(0, 2))
        motions = ["none"] * count
    else:
        motions = [motion]
        if most > 1 and rng.random() < 0.4:
            crossing = motion in ("left", "right") and rng.random() < 0.5
            motions.append(("right" if motion == "left" else "left") if crossing else "none")
    objects = []
    for i, own in enumerate(motions):
        bob = own != "none" and own not in ("up", "down") and rng.random() < 0.5
        follows = i == 0 and follow
        category, key = _pick_stamp(rng, stamps)
        # A followed subject's own track is only its bob: the camera's path gives the rest.
        centre, grow, angle, height = _own_motion(
            rng, "none" if follows else own, frames, size, bob
        )
        obj = {
            "stamp": key,
            "category": category,
            "motion": own,
            "main": i == 0,
            "bob": bool(bob),
            "flip": bool(rng.random() < 0.5),
            "rate": float(rng.uniform(1.05, 1.5)) if parallax else 1.0,
            "centre": centre,
            "height": height * grow,
            "angle": angle + rng.uniform(-4, 4),
            "follow": follows,
        }
        if follows:
            _follow(rng, obj, path, size)
        else:
            _centre_in_frame(rng, obj, path, size, jitter=len(motions) == 1 or own == "none")
        objects.append(obj)
    if len(objects) == 2 and objects[1]["motion"] != "none":  # crossing: on one line, to meet
        objects[1]["centre"][:, 1] += (
            objects[0]["centre"][:, 1].mean() - objects[1]["centre"][:, 1].mean()
        ) + rng.uniform(-0.06, 0.06) * size
    # Paint order: far to near (by rate); with no parallax, either may pass in front.
    order = sorted(range(len(objects)), key=lambda i: (objects[i]["rate"], rng.random()))
    return [objects[i] for i in order]


def _near_layer(rng: np.random.Generator, size: int, stamps: Mapping[str, Sequence[str]]) -> dict:
    kind = "band" if rng.random() < 0.6 or not stamps else "stamp"
    near: dict[str, Any] = {
        "kind": kind,
        "rate": float(rng.uniform(1.6, 2.6)),
        "blur": float(rng.uniform(1.0, 3.0) * size / 160),
    }
    if kind == "band":
        near["side"] = str(rng.choice(["bottom", "bottom", "left", "right"]))
        near["depth"] = float(rng.uniform(0.12, 0.28))  # how far into the frame it reaches
    else:
        near["category"], near["stamp"] = _pick_stamp(rng, stamps)
        near["height"] = float(rng.uniform(0.6, 1.0) * size)
        near["centre"] = [
            float(rng.choice([-1, 1]) * rng.uniform(0.38, 0.55) * size),
            float(rng.uniform(0.2, 0.5) * size),
        ]
        near["flip"] = bool(rng.random() < 0.5)
    return near


def _degradations(rng: np.random.Generator, degrade: bool) -> dict[str, Any]:
    if not degrade:
        return {"blur": 0.0, "noise": 0.0, "jpeg": None, "brightness": 0.0, "flicker": 0.0}
    return {
        "blur": float(rng.uniform(0.3, 1.0)) if rng.random() < 0.5 else 0.0,
        "noise": float(rng.uniform(1.0, 6.0)) if rng.random() < 0.6 else 0.0,
        "jpeg": int(rng.integers(25, 86)) if rng.random() < 0.4 else None,
        "brightness": float(rng.uniform(-0.25, 0.25)) if rng.random() < 0.5 else 0.0,
        "flicker": float(rng.uniform(0.005, 0.02)) if rng.random() < 0.15 else 0.0,
    }


def plan_clip(
    rng: np.random.Generator,
    camera: str,
    stamps: Mapping[str, Sequence[str]],
    frames: int = 16,
    size: int = 160,
    cuts: float = 0.1,
    *,
    object_motion: str | None = None,
    objects: int = 2,
    parallax: bool | None = None,
    follow: bool | None = None,
    degrade: bool = True,
) -> dict[str, Any]:
    """Draw one clip's content: camera path, objects, layers, cut and degradations.

    ``stamps`` maps each category to its stamp keys. ``object_motion`` (default: drawn),
    ``objects`` (at most this many cut-outs), ``parallax``, ``follow`` (a pan or tilt that
    keeps the subject in place; default: drawn) and ``degrade`` pin parts of the draw, for
    tests and for clean renders. Arrays are numpy; the writer
    turns the plan into the JSON record.
    """
    if camera not in CAMERA_MOTIONS:
        raise ValueError(f"unknown camera motion {camera!r}; expected one of {CAMERA_MOTIONS}")
    speed = float(rng.uniform())
    path = _camera_path(rng, camera, frames, size, speed)
    if parallax is None:
        parallax = camera not in ("static", "zoom_in", "zoom_out", "roll") and bool(
            rng.random() < _PARALLAX_SHARE
        )
    if follow is None:
        follow = camera in FOLLOWS and object_motion is None and rng.random() < _FOLLOW_SHARE
    elif follow and camera not in FOLLOWS:
        raise ValueError(f"only a pan or a tilt can follow a subject, not {camera!r}")
    if follow:
        object_motion = FOLLOWS[camera]
    elif object_motion is None:
        object_motion = OBJECT_MOTIONS[int(rng.integers(len(OBJECT_MOTIONS)))]
    elif object_motion not in OBJECT_MOTIONS:
        raise ValueError(f"unknown object motion {object_motion!r}; expected {OBJECT_MOTIONS}")
    most = max(objects, 1) if follow else objects
    placed = _objects(rng, object_motion, path, stamps, frames, size, parallax, most, follow)
    follow = follow and bool(placed)
    near = _near_layer(rng, size, stamps) if parallax and rng.random() < 0.7 else None
    cut = int(rng.integers(3, frames - 2)) if frames >= 6 and rng.random() < cuts else None
    main = next((o for o in placed if o["main"]), None)
    moving = main is not None and main["motion"] != "none"
    return {
        "camera": camera,
        "speed": speed,
        "frames": frames,
        "size": size,
        "path": path,
        "parallax": bool(parallax),
        "objects": placed,
        "object": main["motion"] if moving else "none",
        "moves": main["category"] if moving else None,
        "follow": follow,
        "near": near,
        "cut": cut,
        "degrade": _degradations(rng, degrade),
    }
