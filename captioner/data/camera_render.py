"""Pixels for a camera clip: each layer warped by the camera, composited far to near, then
degraded (motion blur, lighting, brightness drift, noise, JPEG).

Every layer (:mod:`captioner.data.camera_layers`) maps its pixels to frame-0 coordinates; a
frame at time ``tau`` shows it through the camera's matrix at ``tau`` (see
:mod:`captioner.data.camera_plan`), so the background's motion is exactly the recorded one.
Motion blur averages five renders spread over the exposure, centred on the frame's time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from captioner.data.camera_assets import CameraAssets
from captioner.data.camera_layers import (
    Layer,
    band_layer,
    frame_box,
    needed_extent,
    photo_canvas,
    pick_view,
    placement,
    shift_matrix,
    stamp_layer,
)
from captioner.data.camera_plan import camera_matrix, path_at
from captioner.data.synth import shading

__all__ = ["render_clip"]

_SUBFRAMES = 5  # renders averaged over a blurred frame's exposure (odd: one at the frame time)
_SHADOW = 0.35  # how much a cut-out's shadow darkens what lies under it
_PIVOT = 118.0  # grey level contrast turns about

Placed = tuple[tuple[slice, slice], np.ndarray] | None


@dataclass
class _Piece:
    """A layer and its pose: time -> 3x3 map from its pixels to frame pixels. ``index`` is the
    plan object it shows (None for the background and the near layer)."""

    layer: Layer
    pose: Callable[[float], np.ndarray]
    index: int | None = None
    box: tuple[int, int, int, int] | None = None
    area: float = 0.0


def _at(values: np.ndarray, tau: float) -> np.ndarray:
    i = min(max(math.floor(tau), 0), len(values) - 2)
    w = tau - i
    return values[i] * (1 - w) + values[i + 1] * w


def _object_pose(obj: Mapping[str, Any], src: Mapping[str, Any], tau: float) -> np.ndarray:
    """Stamp pixels -> frame-0 coordinates at the object's depth, at time ``tau``."""
    cx, cy = _at(obj["centre"], tau)
    scale = float(_at(obj["height"], tau)) / src["height"]
    a = math.radians(float(_at(obj["angle"], tau)))
    c, s = scale * math.cos(a), scale * math.sin(a)
    turn = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return shift_matrix(cx, cy) @ turn @ shift_matrix(-src["centre"][0], -src["centre"][1])


class _Scene:
    """The layers of one clip, shot by shot, in paint order (background first)."""

    def __init__(self, plan: Mapping[str, Any], assets: CameraAssets, rng: np.random.Generator):
        self.size = size = plan["size"]
        self.path = plan["path"]
        self.centre = shift_matrix((size - 1) / 2, (size - 1) / 2)
        frames, cut, near = plan["frames"], plan["cut"], plan["near"]
        self.cut = cut
        self.backgrounds: list[str] = []
        self.near_sources: list[str] = []
        near_stamp = None
        if near is not None and near["kind"] == "stamp":
            tallest = near["height"] * float(np.exp(self.path["zoom"]).max())
            file = assets.stamp_files[near["stamp"]]
            near_stamp = stamp_layer(rng, file, near["flip"], tallest, near["blur"])
            self.near_sources.append(near["stamp"])
        self.shots: list[list[_Piece]] = []
        for start, end in [(0, frames)] if cut is None else [(0, cut), (cut, frames)]:
            times = [t + o for t in range(start, end) for o in (-0.5, 0.0, 0.5)]
            pieces = [self._background(rng, assets, start, times)]
            if near is not None and near["kind"] == "band":
                pieces.append(self._band(rng, assets, near, start, times))
            elif near_stamp is not None:
                pieces.append(self._near_stamp(near_stamp, near, start))
            self.shots.append(pieces)
        self.look = (
            shading(rng, size, size) * rng.uniform(0.92, 1.08, 3).astype(np.float32),
            float(rng.uniform(0.85, 1.12)),
        )
        # The cut-outs draw last, so the same plan without them shows the same scene.
        objects = [self._object(rng, assets, i, obj) for i, obj in enumerate(plan["objects"])]
        for pieces in self.shots:
            pieces[1:1] = objects

    def camera(self, tau: float, rate: float = 1.0) -> np.ndarray:
        return camera_matrix(*path_at(self.path, tau), rate)

    def _background(
        self, rng: np.random.Generator, assets: CameraAssets, start: int, times: list[float]
    ) -> _Piece:
        ref = np.linalg.inv(self.camera(start))  # a new shot starts where its camera is
        box = needed_extent([self.camera(tau) @ ref for tau in times], self.size)
        # Canvas pixels per frame pixel: enough that the deepest zoom needs no upsampling.
        rho = min(max(1.0, *(math.exp(path_at(self.path, tau)[1]) for tau in times)), 2.0)
        pool = [b for b in assets.backgrounds if b[0] not in self.backgrounds]
        view = pick_view(rng, pool or assets.backgrounds, box, self.size)
        self.backgrounds.append(view[0])
        layer = Layer(photo_canvas(rng, view, box, rho))
        place = self.centre, ref @ placement(box, rho)
        return _Piece(layer, lambda tau: place[0] @ self.camera(tau) @ place[1])

    def _band(
        self,
        rng: np.random.Generator,
        assets: CameraAssets,
        near: Mapping[str, Any],
        start: int,
        times: list[float],
    ) -> _Piece:
        rate = near["rate"]
        ref = np.linalg.inv(self.camera(start, rate))
        box = needed_extent([self.camera(tau, rate) @ ref for tau in times], self.size)
        pool = [b for b in assets.backgrounds if b[0] != self.backgrounds[-1]]
        view = pick_view(rng, pool or assets.backgrounds, box, self.size)
        self.near_sources.append(view[0])
        layer = Layer(band_layer(rng, photo_canvas(rng, view, box, 1.0), box, near, self.size))
        place = ref @ placement(box, 1.0)
        return _Piece(layer, lambda tau: self.centre @ self.camera(tau, rate) @ place)

    def _object(
        self, rng: np.random.Generator, assets: CameraAssets, index: int, obj: Mapping[str, Any]
    ) -> _Piece:
        tallest = float(np.max(np.exp(self.path["zoom"]) * obj["height"]))
        shadow = max(1.0, 0.02 * self.size)
        file = assets.stamp_files[obj["stamp"]]
        layer, src = stamp_layer(rng, file, obj["flip"], tallest, shadow=shadow)

        def pose(tau: float) -> np.ndarray:
            return self.centre @ self.camera(tau, obj["rate"]) @ _object_pose(obj, src, tau)

        return _Piece(layer, pose, index, src["box"], src["area"])

    def _near_stamp(
        self, stamp: tuple[Layer, dict[str, Any]], near: Mapping[str, Any], start: int
    ) -> _Piece:
        layer, src = stamp
        rate = near["rate"]
        scale = near["height"] / src["height"]
        place = (
            np.linalg.inv(self.camera(start, rate))
            @ shift_matrix(*near["centre"])
            @ np.diag([scale, scale, 1.0])
            @ shift_matrix(-src["centre"][0], -src["centre"][1])
        )
        return _Piece(layer, lambda tau: self.centre @ self.camera(tau, rate) @ place)

    def compose(self, t: int, tau: float, seen: list[dict[str, list]] | None) -> np.ndarray:
        """The sharp picture at time ``tau`` of frame ``t``'s shot (H, W, 3) float32; with
        ``seen``, each object's box, visible and occluded shares are appended to it."""
        pieces = self.shots[0 if self.cut is None or t < self.cut else 1]
        first = pieces[0].layer.warp(pieces[0].pose(tau), self.size, cv2.BORDER_REFLECT)
        assert first is not None
        canvas = first[1].copy()
        alphas: list[np.ndarray] = []
        for piece in pieces[1:]:
            matrix = piece.pose(tau)
            placed = piece.layer.warp(matrix, self.size)
            _over(canvas, placed)
            if seen is not None:
                alphas.append(_full_alpha(placed, self.size))
                if piece.index is not None:
                    seen[piece.index]["boxes"].append(frame_box(matrix, piece.box, self.size))
        if seen is not None:
            for k, piece in enumerate(pieces[1:]):
                if piece.index is not None:
                    area = piece.area * abs(np.linalg.det(piece.pose(tau)[:2, :2]))
                    visible, occluded = _visibility(alphas[k], alphas[k + 1 :], area)
                    seen[piece.index]["visible"].append(visible)
                    seen[piece.index]["occluded"].append(occluded)
        return canvas


def _over(canvas: np.ndarray, placed: Placed) -> None:
    if placed is None:
        return
    (rows, cols), pixels = placed
    part = canvas[rows, cols]
    if pixels.shape[2] == 5:
        part *= 1.0 - _SHADOW * pixels[..., 4:5]
    part *= 1.0 - pixels[..., 3:4]
    part += pixels[..., :3]


def _full_alpha(placed: Placed, size: int) -> np.ndarray:
    alpha = np.zeros((size, size), dtype=np.float32)
    if placed is not None:
        (rows, cols), pixels = placed
        alpha[rows, cols] = pixels[..., 3]
    return alpha


def _visibility(
    alpha: np.ndarray, in_front: Sequence[np.ndarray], area: float
) -> tuple[float, float]:
    """(visible, occluded): the seen share of the whole cut-out, and the share of its
    in-frame part that the layers in front hide."""
    front = np.ones_like(alpha)
    for a in in_front:
        front *= 1.0 - a
    inside = float(alpha.sum())
    seen = float((alpha * front).sum())
    visible = min(seen / area, 1.0) if area else 0.0
    return round(visible, 3), round(1.0 - seen / inside, 3) if inside else 0.0


def _degrade(
    image: np.ndarray,
    t: int,
    frames: int,
    degrade: Mapping[str, Any],
    look: tuple[np.ndarray, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Lighting and colour cast, contrast, brightness drift and flicker, noise, JPEG."""
    light, contrast = look
    image = _PIVOT + (image * light - _PIVOT) * contrast
    gain = 1.0 + degrade["brightness"] * t / max(frames - 1, 1)
    if degrade["flicker"]:
        gain += degrade["flicker"] * rng.normal()
    image *= gain
    if degrade["noise"]:
        image += rng.normal(0.0, degrade["noise"], image.shape)
    pixels = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if degrade["jpeg"] is not None:
        quality = [cv2.IMWRITE_JPEG_QUALITY, degrade["jpeg"]]
        _, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels[..., ::-1]), quality)
        pixels = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return pixels


def render_clip(
    plan: Mapping[str, Any], assets: CameraAssets, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Paint ``plan`` (from :func:`~captioner.data.camera_plan.plan_clip`): frames (T, S, S, 3)
    uint8 RGB, and what the draw chose: ``backgrounds`` (one per shot), ``near`` (the near
    layer's sources) and per object its per-frame ``boxes`` (fractions of the side, None out
    of frame), ``visible`` and ``occluded`` shares.

    ``rng`` picks only the look (photos and views, tints, lighting, noise), never the motion.
    """
    frames, size, degrade = plan["frames"], plan["size"], plan["degrade"]
    scene = _Scene(plan, assets, rng)
    spread = degrade["blur"] / 2
    offsets = np.linspace(-spread, spread, _SUBFRAMES) if spread else np.zeros(1)
    seen: list[dict[str, list]] = [
        {"boxes": [], "visible": [], "occluded": []} for _ in plan["objects"]
    ]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        total = np.zeros((size, size, 3), dtype=np.float32)
        for offset in offsets:
            total += scene.compose(t, t + float(offset), seen if offset == 0.0 else None)
        out[t] = _degrade(total / len(offsets), t, frames, degrade, scene.look, rng)
    info = {"backgrounds": scene.backgrounds, "near": scene.near_sources, "objects": seen}
    return out, info
