"""What happens in a synthetic motion clip: its class, objects and per-frame tracks.

Each clip has a background, zero to two small distractor objects that stay still or jitter
slightly, and one main object (a photo object or a drawn, rotationally asymmetric shape) that
moves left, right, up or down, grows, shrinks, rotates clockwise or counterclockwise over the
whole clip, or stays where it is. No pixels and no files here: :func:`sample_params` draws the
content as plain numbers, and :mod:`captioner.data.motion_render` paints it.

The members of each pair in :data:`ORDER_PAIRS` differ only in the direction in which the
same path is traversed: the segment (positions, scales or angles) is drawn first, with
identical random draws for both members, and the per-frame track is then played forwards or
backwards, so only the temporal order tells them apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from captioner.data.synth import (
    BACKGROUNDS,
    PALETTE,
    PHOTO_KINDS,
    PLAIN_COLOURS,
    SHAPE_KINDS,
    TEXTURE_TINTS,
    check_count,
)

__all__ = [
    "CLASSES",
    "MAIN_PALETTE",
    "MAIN_SHAPES",
    "ORDER_PAIRS",
    "main_track",
    "sample_params",
]

#: The activity classes, in label order (``classes.txt`` lists them in this order).
CLASSES: tuple[str, ...] = (
    "moving_left",
    "moving_right",
    "moving_up",
    "moving_down",
    "growing",
    "shrinking",
    "rotating_clockwise",
    "rotating_counterclockwise",
    "static",
)

#: Pairs of classes that only the order of the frames tells apart.
ORDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("moving_left", "moving_right"),
    ("moving_up", "moving_down"),
    ("growing", "shrinking"),
    ("rotating_clockwise", "rotating_counterclockwise"),
)

#: Drawn main-object shapes; none looks the same after a rotation of 90-180 degrees.
MAIN_SHAPES: tuple[str, ...] = ("arrow", "ell", "tee", "pacman")

# class -> (motion family, play the drawn track backwards). Both members of a pair share a
# family, so they consume the RNG identically and differ only in the direction flag.
_MOTION = {
    "moving_right": ("move_x", False),
    "moving_left": ("move_x", True),
    "moving_down": ("move_y", False),
    "moving_up": ("move_y", True),
    "growing": ("scale", False),
    "shrinking": ("scale", True),
    "rotating_counterclockwise": ("rotate", False),  # angles increase: counterclockwise
    "rotating_clockwise": ("rotate", True),
    "static": ("static", False),
}

_MAIN_PHOTO_P = 0.5  # probability that the main object is a photo crop rather than a shape
_SIDE_RANGE = (0.25, 0.45)  # main object's long side, as a fraction of the frame side
_TRAVEL_RANGE = (0.35, 0.60)  # distance moved, as a fraction of the frame side
_SCALE_START = (0.20, 0.26)  # smallest side when growing / shrinking
_SCALE_FACTOR = (1.8, 2.5)
_ROTATE_SIDE = (0.22, 0.30)
# Rotation turns the object about a pivot this far from its centre, like a clock hand: a spin
# in place barely changes a frozen CNN's pooled grid, so its direction was guesswork; a short
# arm or arc looked like a small straight move (1.1 confused them), so the orbit is wide.
_ROTATE_ARM = (0.15, 0.20)
_ROTATE_DEGREES = (150.0, 240.0)
_TILT = 20.0  # fixed tilt (degrees) of a main object that does not rotate
_JITTER = (0.002, 0.008)  # per-frame position jitter of the main object (fraction of side)
_ANGLE_JITTER = 1.0  # degrees
_DISTRACTOR_SIDE = (0.12, 0.22)
_DISTRACTOR_JITTER = (0.004, 0.012)
_MARGIN = 0.01

#: The main object's colours: the shapes' palette and three more.
MAIN_PALETTE: dict[str, tuple[int, int, int]] = {
    **PALETTE,
    "orange": (240, 128, 24),
    "purple": (128, 48, 170),
    "white": (240, 240, 236),
}
_MIN_CONTRAST = 100.0  # RGB distance between a shape's colour and the background's mean

_TRACK_DECIMALS = 5


# ----------------------------------------------------------------------------- sampling


def _background_colour(name: str) -> np.ndarray:
    if name in TEXTURE_TINTS:
        dark, light = TEXTURE_TINTS[name]
        return (np.asarray(dark, dtype=np.float64) + np.asarray(light, dtype=np.float64)) / 2
    return np.asarray(PLAIN_COLOURS[name], dtype=np.float64)


def _pick_colour(rng: np.random.Generator, names: tuple[str, ...], background: str) -> str:
    bg = _background_colour(background)
    visible = [
        n for n in names if np.linalg.norm(np.asarray(MAIN_PALETTE[n]) - bg) >= _MIN_CONTRAST
    ]
    choices = visible or list(names)
    return choices[int(rng.integers(len(choices)))]


def _main_object(rng: np.random.Generator, background: str) -> dict[str, Any]:
    if rng.random() < _MAIN_PHOTO_P:
        kind = PHOTO_KINDS[int(rng.integers(len(PHOTO_KINDS)))]
        return {"family": "photo", "kind": kind, "colour": None}
    kind = MAIN_SHAPES[int(rng.integers(len(MAIN_SHAPES)))]
    colour = _pick_colour(rng, tuple(MAIN_PALETTE), background)
    return {"family": "shape", "kind": kind, "colour": colour}


def _distractor_object(rng: np.random.Generator, background: str) -> dict[str, Any]:
    if rng.random() < 0.5:
        kind = PHOTO_KINDS[int(rng.integers(len(PHOTO_KINDS)))]
        return {"family": "photo", "kind": kind, "colour": None}
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    colour = _pick_colour(rng, tuple(PALETTE), background)
    return {"family": "shape", "kind": kind, "colour": colour}


def _ease(frames: int, strength: float) -> np.ndarray:
    """Progress 0 -> 1 over the clip, a blend of linear and smoothstep.

    Symmetric (``e(1 - u) = 1 - e(u)``), so a reversed track is the same motion played back.
    """
    u = np.linspace(0.0, 1.0, frames)
    return (1.0 - strength) * u + strength * u * u * (3.0 - 2.0 * u)


def _within(rng: np.random.Generator, half: float) -> float:
    """A centre coordinate that keeps an extent of ``half`` inside the frame."""
    lo, hi = half + _MARGIN, 1.0 - half - _MARGIN
    return float(rng.uniform(lo, hi)) if hi > lo else 0.5


def _main_base_track(rng: np.random.Generator, family: str, frames: int) -> np.ndarray:
    """The noiseless forward track, (T, 4): cx, cy, side, angle."""
    track = np.zeros((frames, 4))
    if family == "scale":
        small = rng.uniform(*_SCALE_START)
        big = small * rng.uniform(*_SCALE_FACTOR)
        track[:, 0] = _within(rng, big / 2)
        track[:, 1] = _within(rng, big / 2)
        track[:, 2] = small * (big / small) ** _ease(frames, rng.uniform())  # even steps in log
        track[:, 3] = rng.uniform(-_TILT, _TILT)
        return track
    if family == "rotate":
        side = rng.uniform(*_ROTATE_SIDE)
        start = rng.uniform(0.0, 360.0)
        sweep = rng.uniform(*_ROTATE_DEGREES)
        radius = side * 0.5 * np.sqrt(2.0)  # a square sprite's corner sweeps this circle
        arm = rng.uniform(*_ROTATE_ARM)
        pivot_x, pivot_y = _within(rng, radius + arm), _within(rng, radius + arm)
        angles = start + sweep * _ease(frames, rng.uniform())
        track[:, 0] = pivot_x + arm * np.cos(np.radians(angles))
        track[:, 1] = pivot_y - arm * np.sin(np.radians(angles))  # y grows downwards
        track[:, 2] = side
        track[:, 3] = angles
        return track
    side = rng.uniform(*_SIDE_RANGE)
    if family == "static":
        track[:, 0] = _within(rng, side / 2)
        track[:, 1] = _within(rng, side / 2)
    else:
        along, across = (0, 1) if family == "move_x" else (1, 0)
        travel = rng.uniform(_TRAVEL_RANGE[0], min(_TRAVEL_RANGE[1], 1 - side - 2 * _MARGIN))
        lo = rng.uniform(side / 2 + _MARGIN, 1.0 - side / 2 - _MARGIN - travel)
        track[:, along] = lo + travel * _ease(frames, rng.uniform())
        track[:, across] = _within(rng, side / 2)
    track[:, 2] = side
    track[:, 3] = rng.uniform(-_TILT, _TILT)
    return track


def _jitter(rng: np.random.Generator, frames: int, amplitude: float, degrees: float) -> np.ndarray:
    noise = np.zeros((frames, 4))
    noise[:, :2] = rng.uniform(-amplitude, amplitude, size=(frames, 2))
    noise[:, 3] = rng.uniform(-degrees, degrees, size=frames)
    return noise


def _as_list(track: np.ndarray) -> list[list[float]]:
    return np.round(track, _TRACK_DECIMALS).tolist()


def sample_params(rng: np.random.Generator, cls: str, frames: int = 24) -> dict[str, Any]:
    """Draw the content of one clip of class ``cls``: background, objects and per-frame tracks.

    Each object has a ``track`` of ``frames`` rows ``[cx, cy, side, angle]``: the centre and
    the long side as fractions of the frame side (origin top-left, y down) and the angle in
    degrees, counterclockwise on screen. ``motion`` summarises the main object's movement
    (``quantity`` is ``x``, ``y``, ``side``, ``angle`` or ``none``; ``start`` / ``end``).

    The members of an :data:`ORDER_PAIRS` pair consume ``rng`` identically: from the same RNG
    state they give the same objects with time-reversed tracks (distractors' included), so
    they render to the same frames in reverse order.
    """
    if cls not in _MOTION:
        raise ValueError(f"unknown motion class {cls!r}; expected one of {list(CLASSES)}")
    frames = check_count("frames", frames)
    if frames < 2:
        raise ValueError(f"frames must be at least 2 so that the object can move, got {frames}")
    family, backwards = _MOTION[cls]

    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    main = _main_object(rng, background)
    track = _main_base_track(rng, family, frames)
    track += _jitter(rng, frames, rng.uniform(*_JITTER), _ANGLE_JITTER)
    if backwards:
        track = track[::-1]
    main["track"] = _as_list(track)

    distractors = []
    for _ in range(int(rng.integers(0, 3))):
        obj = _distractor_object(rng, background)
        side = rng.uniform(*_DISTRACTOR_SIDE)
        base = np.array([_within(rng, side / 2), _within(rng, side / 2), side, 0.0])
        base[3] = rng.uniform(-30.0, 30.0)
        amplitude = rng.uniform(*_DISTRACTOR_JITTER) if rng.random() < 0.5 else 0.0
        jitter = _jitter(rng, frames, amplitude, 0.0)
        if backwards:  # the whole clip plays backwards, distractors' jitter included
            jitter = jitter[::-1]
        obj["track"] = _as_list(base[None, :] + jitter)
        distractors.append(obj)

    column = {"move_x": 0, "move_y": 1, "scale": 2, "rotate": 3}.get(family)
    quantity = {0: "x", 1: "y", 2: "side", 3: "angle", None: "none"}[column]
    motion: dict[str, Any] = {"quantity": quantity}
    if column is not None:
        rounded = main["track"]
        motion.update(start=rounded[0][column], end=rounded[-1][column])
    return {
        "class": cls,
        "frames": frames,
        "background": background,
        "main": main,
        "motion": motion,
        "distractors": distractors,
    }


def main_track(params: dict[str, Any]) -> np.ndarray:
    """The main object's per-frame ``[cx, cy, side, angle]`` as a (T, 4) float array."""
    return np.asarray(params["main"]["track"], dtype=np.float64)
