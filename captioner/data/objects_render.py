"""Pixels for an object-bank scene: a background, soft shadows, the cut-outs, then a camera.

:func:`compose` pastes each stamp through its own alpha (so every pixel outside the objects
and their shadows is the background's), cuts objects at the border where their box reaches
past it, and records what is visible of each. :func:`camera_effects` then makes the picture
look taken rather than pasted: lighting and colour cast, contrast, blur and sensor noise; the
writer adds the JPEG quality. The RNG drives only the look, never what the captions say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from captioner.data.objects_bank import load_photo_background, stamp_image
from captioner.data.synth import render_background, shading

__all__ = ["Composite", "camera_effects", "compose", "render_object_background"]


@dataclass
class Composite:
    """A composed scene before the camera effects.

    ``pixels`` (h, w, 3) float in [0, 255]; ``background`` the same before anything was
    pasted; ``alphas`` (n, h, w) each object's visible alpha in [0, 1]; ``shadow`` (h, w) how
    much each pixel was darkened by shadows, in [0, 1].
    """

    pixels: np.ndarray
    background: np.ndarray
    alphas: np.ndarray
    shadow: np.ndarray


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    # Two muted colours blended along a random direction, as on a studio backdrop.
    a = rng.uniform(40, 230, 3).astype(np.float32)
    b = np.clip(a + rng.uniform(-70, 70, 3), 0, 255).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    field = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    return a + (b - a) * field[..., None]


def render_object_background(
    rng: np.random.Generator, background: Mapping[str, Any], size: int, files: Mapping[str, str]
) -> np.ndarray:
    """A ``size`` square background (h, w, 3) float for a scene's ``background`` entry.

    ``kind`` is ``photo`` (a random square crop of the file ``files[name]``), ``texture`` (a tinted
    scikit-image texture) or ``generated`` (``gradient``, ``light`` or ``dark``).
    """
    kind, name = background["kind"], background["name"]
    if kind == "texture":
        return render_background(rng, name, size)
    if kind == "generated":
        return _gradient(rng, size) if name == "gradient" else render_background(rng, name, size)
    photo = load_photo_background(files[name])
    h, w = photo.shape[:2]
    side = int(rng.integers(round(0.5 * min(h, w)), min(h, w) + 1))
    # Crops lean to the lower half, where the ground, the pier or the beach is.
    y0 = round((h - side) * rng.uniform(0.4, 1.0))
    x0 = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side])
    crop = crop.resize((size, size), Image.LANCZOS, reducing_gap=2.0)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.float32)


def _stamp_layer(
    rng: np.random.Generator, obj: dict[str, Any], path: str
) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = obj["box"]
    image = stamp_image(path).resize((x1 - x0, y1 - y0), Image.LANCZOS, reducing_gap=2.0)
    if obj["flip"]:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    rgba = np.asarray(image, dtype=np.float32)
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)  # exposure and white balance
    return np.clip(rgba[..., :3] * gain, 0, 255), rgba[..., 3] / 255.0


def _clip(box: list[int], size: int) -> tuple[slice, slice, slice, slice] | None:
    # (canvas rows, canvas cols, layer rows, layer cols) of the part of a box inside the frame
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    return (
        slice(cy0, cy1),
        slice(cx0, cx1),
        slice(cy0 - y0, cy1 - y0),
        slice(cx0 - x0, cx1 - x0),
    )


def compose(
    scene: dict[str, Any],
    rng: np.random.Generator,
    image_size: int,
    stamp_files: Mapping[str, str],
    background_files: Mapping[str, str],
) -> Composite:
    """Paint a scene: background, shadows, then each object through its alpha.

    Adds to each object its ``visible_box`` (None when nothing is in frame), ``mask_area``
    (visible alpha, in pixels) and ``visible_fraction`` (of its whole alpha).
    """
    s = image_size
    background = render_object_background(rng, scene["background"], s, background_files)
    canvas = background.copy()
    layers = [_stamp_layer(rng, o, stamp_files[o["stamp"]]) for o in scene["objects"]]
    alphas = np.zeros((len(layers), s, s), dtype=np.float32)
    for i, (obj, (_, alpha)) in enumerate(zip(scene["objects"], layers, strict=True)):
        part = _clip(obj["box"], s)
        if part is not None:
            rows, cols, lrows, lcols = part
            alphas[i, rows, cols] = alpha[lrows, lcols]

    # A soft shadow below and behind each object (light from above, slightly to one side).
    shadow = np.zeros((s, s), dtype=np.float32)
    side = rng.choice([-1.0, 1.0])
    for i, obj in enumerate(scene["objects"]):
        h = obj["box"][3] - obj["box"][1]
        dx, dy = round(side * rng.uniform(0.0, 0.06) * h), round(rng.uniform(0.02, 0.06) * h)
        moved = np.zeros((s, s), dtype=np.float32)
        src = alphas[i]
        ys, xs = slice(max(dy, 0), s + min(dy, 0)), slice(max(dx, 0), s + min(dx, 0))
        ys_src, xs_src = slice(max(-dy, 0), s - max(dy, 0)), slice(max(-dx, 0), s - max(dx, 0))
        moved[ys, xs] = src[ys_src, xs_src]
        np.maximum(shadow, moved * rng.uniform(0.25, 0.5), out=shadow)
    radius = max(1.0, 0.02 * s)
    blurred = Image.fromarray((shadow * 255.0 + 0.5).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(radius)
    )
    shadow = np.asarray(blurred, dtype=np.float32) / 255.0
    canvas *= 1.0 - shadow[..., None]

    for i, (obj, (rgb, alpha)) in enumerate(zip(scene["objects"], layers, strict=True)):
        part = _clip(obj["box"], s)
        full = float(alpha.sum())
        if part is None:
            obj.update(visible_box=None, mask_area=0.0, visible_fraction=0.0)
            continue
        rows, cols, lrows, lcols = part
        a = alpha[lrows, lcols][..., None]
        region = canvas[rows, cols]
        canvas[rows, cols] = region + (rgb[lrows, lcols] - region) * a
        visible = float(alphas[i].sum())
        obj["visible_box"] = [cols.start, rows.start, cols.stop, rows.stop]
        obj["mask_area"] = round(visible, 1)
        obj["visible_fraction"] = round(visible / full, 3) if full > 0 else 0.0
    return Composite(canvas, background, alphas, shadow)


def camera_effects(rng: np.random.Generator, pixels: np.ndarray) -> Image.Image:
    """Lighting, colour cast, contrast, blur and noise on a composed canvas: an RGB image."""
    h, w = pixels.shape[:2]
    out = pixels * shading(rng, w, h) * (1.0 + rng.uniform(-0.1, 0.1))  # light falls off
    out = out * rng.uniform(0.92, 1.08, 3)  # colour temperature
    mean = out.mean()
    out = mean + (out - mean) * rng.uniform(0.85, 1.12)
    image = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.6:
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(1, 6), (h, w, 3))
        image = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return image
