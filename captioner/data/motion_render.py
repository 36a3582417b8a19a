"""Pixels for a synthetic motion clip: sprites warped along their tracks over a background.

:func:`render_clip` paints the clip that :func:`captioner.data.motion_tracks.sample_params`
describes. Each object is painted once (shapes and photos as in the scenes, plus the main
shapes drawn here), then placed, scaled and turned per frame with a soft drop shadow.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from captioner.data.motion_tracks import MAIN_PALETTE, MAIN_SHAPES
from captioner.data.synth import (
    SUPERSAMPLE,
    check_count,
    object_size,
    render_background,
    render_object,
    shading,
)

__all__ = ["render_clip"]

_SHADOW_STRENGTH = 0.35


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
    big = side * SUPERSAMPLE
    points = [(x * big, y * big) for x, y in _shape_polygon(kind)]
    edge = max(1, round(0.05 * side)) * SUPERSAMPLE
    full = Image.new("L", (big, big), 0)
    ImageDraw.Draw(full).polygon(points, fill=255)
    inner = full.copy()
    ImageDraw.Draw(inner).line([*points, points[0]], fill=0, width=edge, joint="curve")
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
        fill = np.asarray(MAIN_PALETTE[obj["colour"]], dtype=np.float32) + rng.uniform(-12, 12, 3)
        fill = fill[None, None, :] * shading(rng, long_side, long_side)
        edge = fill * 0.55
        return np.clip(edge + (fill - edge) * inner[..., None], 0, 255), full
    w, h = object_size(obj, long_side)
    # The scenes' shapes and photo cut-outs, painted into a box as there, for the same look.
    rgb, alpha = render_object(rng, {**obj, "box": [0, 0, w, h]}, background_mean)
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
    size = check_count("size", size)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    background = render_background(rng, params["background"], size).astype(np.float32)
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
