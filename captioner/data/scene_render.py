"""Pixels for a synthetic scene: the background, soft drop shadows, then the objects.

:func:`render_scene` turns a scene from :func:`captioner.data.scene_grammar.sample_scene`
into an image; its RNG drives only the look (texture crop, tints, shading, flips), never what
the captions describe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from captioner.data.synth import render_background, render_object

__all__ = ["render_scene"]


def render_scene(
    scene: dict[str, Any], rng: np.random.Generator, image_size: int = 224
) -> Image.Image:
    """Render a scene from :func:`sample_scene` as an RGB image (``image_size`` square).

    ``rng`` drives only the look (texture crop, tints, shading, flips), never the content.
    """
    canvas = render_background(rng, scene["background"], image_size)
    layers = [render_object(rng, obj, float(canvas.mean())) for obj in scene["objects"]]

    # Soft drop shadows first, so objects look like they rest on the background.
    shadow = np.zeros((image_size, image_size), dtype=np.float32)
    offset = max(2, round(0.015 * image_size))
    for obj, (_, alpha) in zip(scene["objects"], layers, strict=True):
        x0, y0, x1, y1 = obj["box"]
        sx0, sy0 = x0 + offset, y0 + offset
        sx1, sy1 = min(x1 + offset, image_size), min(y1 + offset, image_size)
        region = shadow[sy0:sy1, sx0:sx1]
        np.maximum(region, alpha[: sy1 - sy0, : sx1 - sx0], out=region)
    shadow_image = Image.fromarray((shadow * 255.0 + 0.5).astype(np.uint8))
    blurred = np.asarray(shadow_image.filter(ImageFilter.BoxBlur(offset)), dtype=np.float32)
    canvas *= 1.0 - (0.35 / 255.0) * blurred[..., None]

    for obj, (rgb, alpha) in zip(scene["objects"], layers, strict=True):
        x0, y0, x1, y1 = obj["box"]
        a = alpha[..., None]
        region = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = region + (rgb - region) * a
    pixels = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
