"""A synthetic activity dataset whose label depends only on the order of the frames.

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
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
import zlib
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from captioner.data.scenes import (
    _PALETTE,
    _PLAIN_COLOURS,
    _TEXTURE_TINTS,
    BACKGROUNDS,
    PHOTO_KINDS,
    SHAPE_KINDS,
    _check_count,
    _photo_aspect,
    _render_background,
    _render_object,
    _shading,
    _write_json,
)

__all__ = [
    "BACKGROUNDS",
    "CLASSES",
    "GENERATOR_VERSION",
    "MAIN_SHAPES",
    "ORDER_PAIRS",
    "SPLITS",
    "generate_motion",
    "main_track",
    "render_clip",
    "sample_params",
]

logger = logging.getLogger(__name__)

GENERATOR_NAME = "captioner.data.motion"
GENERATOR_VERSION = "1.2"
SPLITS: tuple[str, ...] = ("train", "val", "test")

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

_MAIN_PALETTE = {
    **_PALETTE,
    "orange": (240, 128, 24),
    "purple": (128, 48, 170),
    "white": (240, 240, 236),
}
_MIN_CONTRAST = 100.0  # RGB distance between a shape's colour and the background's mean

_TRACK_DECIMALS = 5
_SUPERSAMPLE = 4
_SHADOW_STRENGTH = 0.35


# ----------------------------------------------------------------------------- sampling


def _background_colour(name: str) -> np.ndarray:
    if name in _TEXTURE_TINTS:
        dark, light = _TEXTURE_TINTS[name]
        return (np.asarray(dark, dtype=np.float64) + np.asarray(light, dtype=np.float64)) / 2
    return np.asarray(_PLAIN_COLOURS[name], dtype=np.float64)


def _pick_colour(rng: np.random.Generator, names: tuple[str, ...], background: str) -> str:
    bg = _background_colour(background)
    visible = [
        n for n in names if np.linalg.norm(np.asarray(_MAIN_PALETTE[n]) - bg) >= _MIN_CONTRAST
    ]
    choices = visible or list(names)
    return choices[int(rng.integers(len(choices)))]


def _main_object(rng: np.random.Generator, background: str) -> dict[str, Any]:
    if rng.random() < _MAIN_PHOTO_P:
        kind = PHOTO_KINDS[int(rng.integers(len(PHOTO_KINDS)))]
        return {"family": "photo", "kind": kind, "colour": None}
    kind = MAIN_SHAPES[int(rng.integers(len(MAIN_SHAPES)))]
    colour = _pick_colour(rng, tuple(_MAIN_PALETTE), background)
    return {"family": "shape", "kind": kind, "colour": colour}


def _distractor_object(rng: np.random.Generator, background: str) -> dict[str, Any]:
    if rng.random() < 0.5:
        kind = PHOTO_KINDS[int(rng.integers(len(PHOTO_KINDS)))]
        return {"family": "photo", "kind": kind, "colour": None}
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    colour = _pick_colour(rng, tuple(_PALETTE), background)
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
    frames = _check_count("frames", frames)
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


# ----------------------------------------------------------------------------- rendering


def _shape_polygon(kind: str) -> list[tuple[float, float]]:
    """Vertices in the unit square (x right, y down)."""
    if kind == "arrow":  # points right
        return [
            (0.04, 0.38),
            (0.56, 0.38),
            (0.56, 0.10),
            (0.96, 0.50),
            (0.56, 0.90),
            (0.56, 0.62),
            (0.04, 0.62),
        ]
    if kind == "ell":
        return [(0.08, 0.04), (0.42, 0.04), (0.42, 0.62), (0.92, 0.62), (0.92, 0.96), (0.08, 0.96)]
    if kind == "tee":
        return [
            (0.04, 0.06),
            (0.96, 0.06),
            (0.96, 0.38),
            (0.66, 0.38),
            (0.66, 0.96),
            (0.34, 0.96),
            (0.34, 0.38),
            (0.04, 0.38),
        ]
    if kind == "pacman":  # a disc with a wedge cut out, mouth to the right
        t = np.radians(np.linspace(35.0, 325.0, 40))
        return [(0.5, 0.5)] + [(0.5 + 0.46 * np.cos(a), 0.5 - 0.46 * np.sin(a)) for a in t]
    raise ValueError(f"unknown shape {kind!r}; expected one of {list(MAIN_SHAPES)}")


def _polygon_masks(kind: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased (full, inner) masks in [0, 1]; the difference is the darker outline."""
    big = side * _SUPERSAMPLE
    points = [(x * big, y * big) for x, y in _shape_polygon(kind)]
    edge = max(1, round(0.05 * side)) * _SUPERSAMPLE
    full = Image.new("L", (big, big), 0)
    ImageDraw.Draw(full).polygon(points, fill=255)
    inner = full.copy()
    ImageDraw.Draw(inner).line(points + [points[0]], fill=0, width=edge, joint="curve")
    masks = [
        np.asarray(m.resize((side, side), Image.BOX), dtype=np.float32) / 255 for m in (full, inner)
    ]
    return masks[0], np.minimum(masks[0], masks[1])


def _object_pixels(
    rng: np.random.Generator, obj: dict[str, Any], long_side: int, background_mean: float
) -> tuple[np.ndarray, np.ndarray]:
    """The object's RGB (h, w, 3) float32 and alpha (h, w), its long side ``long_side`` px."""
    if obj["family"] == "shape" and obj["kind"] in MAIN_SHAPES:
        full, inner = _polygon_masks(obj["kind"], long_side)
        fill = np.asarray(_MAIN_PALETTE[obj["colour"]], dtype=np.float32) + rng.uniform(-12, 12, 3)
        fill = fill[None, None, :] * _shading(rng, long_side, long_side)
        edge = fill * 0.55
        return np.clip(edge + (fill - edge) * inner[..., None], 0, 255), full
    if obj["family"] == "shape":
        w = h = long_side
    else:
        aspect = _photo_aspect(obj["kind"])  # width / height
        w, h = (
            (long_side, max(1, round(long_side / aspect)))
            if aspect >= 1
            else (max(1, round(long_side * aspect)), long_side)
        )
    # scenes draws its shapes and photo cut-outs into a box; reuse it for the same look.
    rgb, alpha = _render_object(rng, {**obj, "box": [0, 0, w, h]}, background_mean)
    return rgb.astype(np.float32), alpha.astype(np.float32)


class _Sprite:
    """An object's premultiplied RGBA and soft shadow, with halved copies for small sizes."""

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray, blur: int) -> None:
        pad = 2 * blur + 2
        rgba = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=2)
        rgba = np.pad(rgba, ((pad, pad), (pad, pad), (0, 0)))
        self.long_side = max(alpha.shape)
        self.levels: list[tuple[np.ndarray, np.ndarray, float]] = []
        scale = 1.0
        while True:
            shadow = cv2.blur(rgba[..., 3], (2 * blur + 1, 2 * blur + 1))
            self.levels.append((np.ascontiguousarray(rgba), shadow, scale))
            h, w = rgba.shape[:2]
            if self.long_side * scale < 16 or min(h, w) < 8:
                break
            rgba = cv2.resize(rgba, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
            scale *= 0.5
            blur = max(1, blur // 2)

    def level_for(self, target: float) -> tuple[np.ndarray, np.ndarray, float]:
        """The smallest copy still at least as large as ``target`` pixels (long side)."""
        chosen = self.levels[0]
        for level in self.levels:
            if self.long_side * level[2] >= target:
                chosen = level
        return chosen


def _paste(
    canvas: np.ndarray,
    sprite: _Sprite,
    state: np.ndarray,
    size: int,
    shadow_offset: float,
) -> None:
    """Composite one object onto ``canvas`` (H, W, 3) float32 in place, shadow first."""
    cx, cy, side, angle = state
    target = side * size
    rgba, shadow, level_scale = sprite.level_for(target)
    h, w = rgba.shape[:2]
    s = target / (sprite.long_side * level_scale)
    c, n = s * np.cos(np.radians(angle)), s * np.sin(np.radians(angle))
    linear = np.array([[c, n], [-n, c]])  # positive angle turns counterclockwise on screen
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    for layer, offset in ((shadow, shadow_offset), (rgba, 0.0)):
        shift = np.array([cx * size - 0.5 + offset, cy * size - 0.5 + offset]) - linear @ centre
        corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
        placed = corners @ linear.T + shift
        x0, y0 = np.maximum(np.floor(placed.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(placed.max(axis=0)).astype(int) + 1, size)
        if x1 <= x0 or y1 <= y0:
            continue
        matrix = np.hstack([linear, (shift - [x0, y0])[:, None]])
        warped = cv2.warpAffine(
            layer,
            matrix,
            (int(x1 - x0), int(y1 - y0)),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        region = canvas[y0:y1, x0:x1]
        if layer is shadow:
            region *= 1.0 - _SHADOW_STRENGTH * warped[..., None]
        else:
            region *= 1.0 - warped[..., 3:4]
            region += warped[..., :3]


def render_clip(params: dict[str, Any], rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Render the clip described by :func:`sample_params` as RGB frames, (T, size, size, 3) uint8.

    ``rng`` drives only the look (texture crop and tint, shading, photo flips), never the
    content or the motion.
    """
    size = _check_count("size", size)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    background = _render_background(rng, params["background"], size).astype(np.float32)
    mean = float(background.mean())
    blur = max(1, round(0.02 * size))
    objects = [*params["distractors"], params["main"]]  # the main object is drawn on top
    tracks = [np.asarray(obj["track"], dtype=np.float64) for obj in objects]
    sprites = []
    for obj, track in zip(objects, tracks, strict=True):
        long_side = max(4, int(np.ceil(track[:, 2].max() * size)))
        sprites.append(_Sprite(*_object_pixels(rng, obj, long_side, mean), blur))
    shadow_offset = max(1.0, 0.015 * size)

    frames = np.empty((len(tracks[0]), size, size, 3), dtype=np.uint8)
    for t in range(len(frames)):
        canvas = background.copy()
        for sprite, track in zip(sprites, tracks, strict=True):
            _paste(canvas, sprite, track[t], size, shadow_offset)
        np.clip(canvas + 0.5, 0, 255, out=canvas)
        frames[t] = canvas.astype(np.uint8)
    return frames


# ----------------------------------------------------------------------------- dataset


def _clip_rng(seed: int, split: str, cls: str, index: int) -> np.random.Generator:
    # crc32, not hash(): Python's string hash changes between processes.
    return np.random.default_rng(
        [seed, zlib.crc32(split.encode("ascii")), zlib.crc32(cls.encode("ascii")), index]
    )


def _write_video(path: pathlib.Path, frames: np.ndarray, fps: int) -> None:
    """Write RGB frames as MPEG-4 (``mp4v``), through a temporary name so no half file stays."""
    tmp = path.with_name(path.stem + ".part" + path.suffix)  # FFmpeg picks the container by suffix
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(
            f"OpenCV could not open an mp4v video writer for {tmp}; install an OpenCV build with "
            "FFmpeg (the opencv-python-headless wheel has it) and check the folder is writable"
        )
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise RuntimeError(f"OpenCV wrote no data to {tmp}; its FFmpeg backend may lack MPEG-4")
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
    for label, cls, index in tqdm(
        jobs,
        desc=f"motion {split}",
        unit="clip",
        file=sys.stderr,
        disable=not progress or not jobs,
    ):
        rng = _clip_rng(seed, split, cls, index)
        params = sample_params(rng, cls, settings["frames"])
        frames = render_clip(params, rng, settings["size"])
        file_name = f"{split}/{cls}/{index:06d}.mp4"
        _write_video(out / file_name, frames, settings["fps"])
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
    _write_json(path, payload)
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
    seed = _check_count("seed", seed)
    n_train = _check_count("n_per_class", n_per_class)
    default = max(2, n_train // 4)
    counts = {
        "train": n_train,
        "val": default
        if n_val_per_class is None
        else _check_count("n_val_per_class", n_val_per_class),
        "test": default
        if n_test_per_class is None
        else _check_count("n_test_per_class", n_test_per_class),
    }
    settings = {
        "frames": _check_count("frames", frames),
        "fps": _check_count("fps", fps),
        "size": _check_count("size", size),
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
