"""The pictures of a camera clip as layers: the background cut from a photo, a blurred near
strip, the stamp cut-outs; each a float32 image with halved copies and a warp into the frame.

A layer's pixels map to frame-0 coordinates (pixels from the frame centre) by its placement;
:mod:`captioner.data.camera_render` puts the camera's matrix on top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image

from captioner.data.camera_assets import texture_share
from captioner.data.objects_bank import load_photo_background, stamp_image
from captioner.data.synth import TEXTURE_TINTS, tint

__all__ = [
    "Layer",
    "View",
    "band_layer",
    "frame_box",
    "needed_extent",
    "photo_canvas",
    "pick_view",
    "placement",
    "shift_matrix",
    "stamp_layer",
]

_TRIES = 8  # views drawn before settling for the most textured one
_TEXTURED = 0.4  # share of textured cells a view needs

#: A photo and where a layer's extent lies on it: (name, file, photo px per frame px, x, y).
View = tuple[str, str, float, float, float]


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize`` with area averaging for any number of channels (it takes at most 4)."""
    parts = [
        cv2.resize(image[..., i : i + 4], (width, height), interpolation=cv2.INTER_AREA)
        for i in range(0, image.shape[2], 4)
    ]
    return np.concatenate([p.reshape(height, width, -1) for p in parts], axis=2)


def shift_matrix(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


class Layer:
    """A float32 image (h, w, C), premultiplied where it has alpha, with halved copies so that
    no warp shrinks it by more than two (bilinear sampling would alias)."""

    def __init__(self, pixels: np.ndarray, levels: int = 3) -> None:
        h, w = pixels.shape[:2]
        self.levels = [(pixels, 1.0, 1.0)]
        image = pixels
        while len(self.levels) < levels and min(image.shape[:2]) >= 32:
            image = _resize(image, (image.shape[1] + 1) // 2, (image.shape[0] + 1) // 2)
            self.levels.append((image, image.shape[1] / w, image.shape[0] / h))

    def warp(
        self, matrix: np.ndarray, size: int, border: int = cv2.BORDER_CONSTANT
    ) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Warp by ``matrix`` (3x3, level-0 pixels to frame pixels): the frame region the
        layer covers and its pixels there (rows, cols, C); None when it is out of frame."""
        scale = math.sqrt(abs(np.linalg.det(matrix[:2, :2])))
        image, sx, sy = self.levels[0]
        for level in self.levels[1:]:
            if level[1] >= scale:
                image, sx, sy = level
        to_level0 = np.array(
            [[1 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1 / sy, 0.5 / sy - 0.5], [0.0, 0.0, 1.0]]
        )
        m = matrix @ to_level0
        x0 = y0 = 0
        x1 = y1 = size
        if border == cv2.BORDER_CONSTANT:  # only the part of the frame the layer reaches
            h, w = image.shape[:2]
            corners = np.array(
                [[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]]
            )
            placed = corners @ m[:2].T
            x0, y0 = np.maximum(np.floor(placed.min(axis=0)).astype(int), 0)
            x1, y1 = np.minimum(np.ceil(placed.max(axis=0)).astype(int) + 1, size)
            if x1 <= x0 or y1 <= y0:
                return None
            m = shift_matrix(-x0, -y0) @ m
        out = cv2.warpAffine(
            image, m[:2], (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR, borderMode=border
        )
        return (slice(y0, y1), slice(x0, x1)), out.reshape(out.shape[0], out.shape[1], -1)


def needed_extent(mats: Sequence[np.ndarray], size: int) -> tuple[float, float, float, float]:
    """The frame-0 box (centred pixels) a layer must cover to fill the frame under ``mats``."""
    h = size / 2 + 1.0
    corners = np.array([[-h, -h, 1.0], [h, -h, 1.0], [-h, h, 1.0], [h, h, 1.0]])
    points = np.concatenate([(np.linalg.inv(m) @ corners.T)[:2].T for m in mats])
    (x0, y0), (x1, y1) = points.min(axis=0) - 2, points.max(axis=0) + 2
    return float(x0), float(y0), float(x1), float(y1)


def pick_view(
    rng: np.random.Generator,
    backgrounds: Sequence[tuple[str, str]],
    extent: tuple[float, float, float, float],
    size: int,
) -> View:
    """A photo and where ``extent`` (frame-0 box) lies on it, preferring textured views."""
    ex0, ey0, ex1, ey1 = extent
    width, height = ex1 - ex0, ey1 - ey0
    best: tuple[float, View] | None = None
    for _ in range(_TRIES):
        name, path = backgrounds[int(rng.integers(len(backgrounds)))]
        ph, pw = load_photo_background(path).shape[:2]
        short = min(ph, pw)
        fit = min(pw / width, ph / height)
        lo = max(0.9, 0.3 * short / size)  # show at most a third ... three quarters of it
        hi = max(lo, 0.75 * short / size)
        k = float(rng.uniform(min(lo, fit), min(hi, fit)))
        x = float(rng.uniform(0, max(pw - width * k, 0)))
        y = float(rng.uniform(0, max(ph - height * k, 0)))
        # The frame-0 view on the photo: frame-0 (-size/2, -size/2) is extent-relative.
        vx, vy = x + (-size / 2 - ex0) * k, y + (-size / 2 - ey0) * k
        share = texture_share(path, (vx, vy, vx + size * k, vy + size * k))
        if best is None or share > best[0]:
            best = (share, (name, path, k, x, y))
        if share >= _TEXTURED:
            break
    assert best is not None
    return best[1]


def photo_canvas(
    rng: np.random.Generator,
    view: View,
    extent: tuple[float, float, float, float],
    rho: float,
) -> np.ndarray:
    """The extent cut from the photo at ``rho`` canvas pixels per frame pixel, RGB float32."""
    name, path, k, x, y = view
    photo = load_photo_background(path)
    ex0, ey0, ex1, ey1 = extent
    cw = min(max(1, math.ceil((ex1 - ex0) * k)), photo.shape[1] - int(x))
    ch = min(max(1, math.ceil((ey1 - ey0) * k)), photo.shape[0] - int(y))
    crop = photo[int(y) : int(y) + ch, int(x) : int(x) + cw].astype(np.float32)
    w, h = math.ceil((ex1 - ex0) * rho), math.ceil((ey1 - ey0) * rho)
    shrink = w < cw
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    stem = name.rpartition(":")[2].rpartition(".")[0]
    if name.startswith("skimage:") and stem in TEXTURE_TINTS:  # grey textures get a colour
        dark, light = (
            np.asarray(c, np.float32) * rng.uniform(0.85, 1.15) for c in TEXTURE_TINTS[stem]
        )
        crop = tint(crop[..., 0] / 255.0, dark, light)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32)


def placement(extent: tuple[float, float, float, float], rho: float) -> np.ndarray:
    """Canvas pixels -> frame-0 centred coordinates."""
    return np.array([[1 / rho, 0.0, extent[0]], [0.0, 1 / rho, extent[1]], [0.0, 0.0, 1.0]])


def band_layer(
    rng: np.random.Generator,
    rgb: np.ndarray,
    extent: tuple[float, float, float, float],
    near: Mapping[str, Any],
    size: int,
) -> np.ndarray:
    """A blurred strip of another photo along one side, its inner edge wavy: RGBA."""
    h, w = rgb.shape[:2]
    xs = extent[0] + np.arange(w, dtype=np.float32)
    ys = extent[1] + np.arange(h, dtype=np.float32)
    along = xs if near["side"] == "bottom" else ys
    wave = np.zeros_like(along)
    for amp in (0.06, 0.03):
        wave += (
            amp
            * size
            * rng.uniform(0.5, 1.5)
            * np.sin(2 * np.pi * along / (rng.uniform(0.3, 1.2) * size) + rng.uniform(0, 2 * np.pi))
        )
    edge = size / 2 - near["depth"] * size
    if near["side"] == "bottom":
        inside = ys[:, None] - (edge + wave[None, :])
    elif near["side"] == "left":
        inside = -(edge + wave[:, None]) - xs[None, :]
    else:
        inside = xs[None, :] - (edge + wave[:, None])
    alpha = np.clip(inside / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)
    gain = rng.uniform(0.45, 0.9)  # the near thing is in shade
    rgba = np.concatenate([rgb * gain * alpha[..., None], alpha[..., None]], axis=2)
    return cv2.GaussianBlur(rgba, (0, 0), near["blur"])


def stamp_layer(
    rng: np.random.Generator,
    path: str,
    flip: bool,
    height: float,
    blur: float = 0.0,
    shadow: float = 0.0,
) -> tuple[Layer, dict[str, Any]]:
    """A cut-out at ``height`` pixels, premultiplied RGBA (+ a soft shadow channel, offset
    down and right, when ``shadow`` is its blur), and where its opaque box lies."""
    image = stamp_image(path)
    target = max(4, math.ceil(height))
    width = max(1, round(image.width * target / image.height))
    image = image.resize((width, target), Image.LANCZOS, reducing_gap=2.0)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    rgba = np.asarray(image, dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    rgb = rgba[..., :3] * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    pad = math.ceil(3 * max(blur, shadow) + 0.06 * target) + 2
    layers = [np.clip(rgb, 0, 255) * alpha[..., None], alpha[..., None]]
    pixels = np.pad(np.concatenate(layers, axis=2), ((pad, pad), (pad, pad), (0, 0)))
    if blur > 0:
        pixels = cv2.GaussianBlur(pixels, (0, 0), blur)
    if shadow > 0:
        drop = cv2.GaussianBlur(pixels[..., 3], (0, 0), shadow)
        dx, dy = round(0.02 * target), round(0.04 * target)
        drop = np.roll(np.roll(drop, dy, axis=0), dx, axis=1)
        pixels = np.concatenate([pixels, drop[..., None]], axis=2)
    box = {
        "box": (pad, pad, pad + width, pad + target),  # the stamp's own pixels, unpadded
        "centre": (pad + (width - 1) / 2, pad + (target - 1) / 2),
        "height": float(target),
        "area": float(alpha.sum()),
    }
    return Layer(np.ascontiguousarray(pixels, dtype=np.float32)), box


def frame_box(matrix: np.ndarray, box: tuple[int, int, int, int], size: int) -> list[float] | None:
    """The frame box (x0, y0, x1, y1 as fractions) of a stamp's own pixels; None when out."""
    x0, y0, x1, y1 = box
    corners = np.array(
        [
            [x0 - 0.5, y0 - 0.5, 1],
            [x1 - 0.5, y0 - 0.5, 1],
            [x0 - 0.5, y1 - 0.5, 1],
            [x1 - 0.5, y1 - 0.5, 1],
        ]
    )
    placed = corners @ matrix[:2].T + 0.5
    lo = np.clip(placed.min(axis=0), 0, size)
    hi = np.clip(placed.max(axis=0), 0, size)
    if np.any(hi <= lo):
        return None
    return [round(float(v) / size, 4) for v in (*lo, *hi)]
