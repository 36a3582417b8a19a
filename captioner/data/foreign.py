"""Generated pictures of kinds a photo captioner should call out of domain: pages of text,
screenshots, the night sky and microscopy slides.

``captioner calibrate --foreign N`` encodes N of each kind into a bundle's out-of-domain
reference set (see :class:`captioner.bundle.domain.DomainStats`). They are drawn here with
Pillow, NumPy and scikit-image's ``binary_blobs``: no picture is fetched, so the references
need no data source. The words of the text are random letters; nothing is meant to be
read. Seeded: the same ``seed`` gives the same pictures.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from captioner.drawing import font

__all__ = ["FOREIGN_KINDS", "foreign_pictures"]

SIDE = 448


def _word(r: random.Random) -> str:
    return "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(1, 10)))


def _grey(level: int) -> tuple[int, int, int]:
    return (level, level, level)


def text_page(r: random.Random) -> Image.Image:
    """A page of printed text: one or two columns, dark on light (sometimes light on dark)."""
    if r.random() < 0.2:
        bg, fg = _grey(r.randint(0, 40)), _grey(r.randint(180, 255))
    else:
        paper = 250 - r.randint(0, 40)
        bg, fg = (paper, paper - 2, paper - 10), _grey(r.randint(0, 60))
    image = Image.new("RGB", (SIDE, SIDE), bg)
    draw = ImageDraw.Draw(image)
    size = r.randint(9, 28)
    cols = r.choice([1, 1, 2])
    width = (SIDE - 40) // cols
    chars = int((width - 20) / (size * 0.55))
    y = r.randint(5, 40)
    while y < SIDE - size:
        for c in range(cols):
            line = ""
            while len(line) < chars:
                line += _word(r) + " "
            draw.text((20 + c * width, y), line[:chars], fill=fg, font=font(size))
        y += int(size * r.uniform(1.2, 1.8)) + (size * 2 if r.random() < 0.08 else 0)
    if r.random() < 0.5:
        image = image.rotate(r.uniform(-3, 3), fillcolor=bg)
    if r.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(r.uniform(0.3, 1.0)))
    return image


def screenshot(r: random.Random) -> Image.Image:
    """A desktop: a panel and overlapping windows with title bars, text and buttons."""

    def colour(lo: int, hi: int) -> tuple[int, int, int]:
        return (r.randint(lo, hi), r.randint(lo, hi), r.randint(lo, hi))

    image = Image.new("RGB", (SIDE, SIDE), colour(200, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, SIDE, r.randint(14, 30)), fill=colour(30, 120))
    for _ in range(r.randint(2, 6)):
        x0, y0 = r.randint(0, SIDE - 60), r.randint(30, SIDE - 60)
        x1, y1 = x0 + r.randint(60, 300), y0 + r.randint(40, 300)
        draw.rectangle((x0, y0, x1, y1), fill=colour(180, 255), outline=_grey(90))
        draw.rectangle((x0, y0, x1, y0 + 14), fill=colour(40, 200))
        y = y0 + 18
        small = font(r.randint(8, 14))
        while y < y1 - 10:
            draw.text((x0 + 4, y), " ".join(_word(r) for _ in range(3)), fill=_grey(20), font=small)
            y += r.randint(12, 20)
        for _ in range(r.randint(0, 4)):
            bx, by = r.randint(x0, max(x0, x1 - 40)), r.randint(y0, max(y0, y1 - 20))
            draw.rectangle((bx, by, bx + 36, by + 16), fill=colour(0, 255))
    return image


def night_sky(r: random.Random) -> Image.Image:
    """Stars of many brightnesses on a near-black sky, sometimes with galaxies or nebulae."""
    rng = np.random.default_rng(r.randint(0, 1 << 30))
    sky = np.zeros((SIDE, SIDE, 3), np.float32)
    sky += np.array([r.uniform(0, 0.03), r.uniform(0, 0.03), r.uniform(0, 0.06)], np.float32)
    n = r.randint(100, 1500)
    ys, xs = rng.integers(0, SIDE, n), rng.integers(0, SIDE, n)
    brightness = np.minimum(rng.pareto(2.0, n) * 0.2 + 0.1, 1.0)
    tint = rng.uniform(0.7, 1.0, (n, 3))
    np.add.at(sky, (ys, xs), brightness[:, None] * tint)
    image = Image.fromarray((np.clip(sky, 0, 1) * 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(r.uniform(0.4, 1.4)))
    sky = np.asarray(image).astype(np.float32) / 255 * r.uniform(1.5, 4)
    if r.random() < 0.5:
        glow = Image.new("RGB", (SIDE, SIDE))
        draw = ImageDraw.Draw(glow)
        for _ in range(r.randint(1, 30)):
            x, y, w = r.randint(0, SIDE), r.randint(0, SIDE), r.randint(2, 30)
            h = int(w * r.uniform(0.3, 1))
            draw.ellipse((x - w, y - h, x + w, y + h), fill=tuple(rng.integers(40, 200, 3)))
        glow = glow.filter(ImageFilter.GaussianBlur(r.uniform(2, 8)))
        sky += np.asarray(glow).astype(np.float32) / 255 * 0.6
    return Image.fromarray((np.clip(sky, 0, 1) * 255).astype(np.uint8))


def microscopy(r: random.Random) -> Image.Image:
    """A slide: stained tissue (H&E or IHC colours), fluorescent cells, or bright-field grey."""
    from scipy import ndimage
    from skimage.data import binary_blobs

    rng = np.random.default_rng(r.randint(0, 1 << 30))
    mode = r.choice(["he", "ihc", "fluorescence", "brightfield"])
    blobs = binary_blobs(
        SIDE,
        blob_size_fraction=r.uniform(0.02, 0.08),
        volume_fraction=r.uniform(0.1, 0.4),
        rng=rng,
    ).astype(np.float32)
    blobs = ndimage.gaussian_filter(blobs, r.uniform(0.5, 2.5))
    texture = ndimage.gaussian_filter(rng.random((SIDE, SIDE)).astype(np.float32), r.uniform(1, 4))
    texture = (texture - texture.min()) / (np.ptp(texture) + 1e-6)
    b, t = blobs[..., None], texture[..., None]
    if mode == "he":
        slide = np.array([0.95, 0.75, 0.85]) * (1 - 0.3 * t) * (1 - b)
        slide = slide + np.array([0.35, 0.2, 0.55]) * b
    elif mode == "ihc":
        stain = [0.45, 0.28, 0.15] if r.random() < 0.5 else [0.3, 0.35, 0.6]
        slide = np.array([0.9, 0.88, 0.85]) * (1 - 0.2 * t) * (1 - b) + np.array(stain) * b
    elif mode == "fluorescence":
        glow = np.array([r.random() * 0.3, r.uniform(0.5, 1), r.random() * 0.4])
        rng.shuffle(glow)
        slide = b * glow * (0.6 + 0.4 * t)
    else:
        grey = 0.6 + 0.3 * texture - 0.4 * blobs + 0.3 * ndimage.laplace(blobs)
        slide = np.repeat(grey[..., None], 3, axis=2)
    slide = slide + rng.normal(0, 0.02, slide.shape)
    return Image.fromarray((np.clip(slide, 0, 1) * 255).astype(np.uint8))


#: kind -> its drawing function (one picture from a seeded random source).
FOREIGN_KINDS: dict[str, Callable[[random.Random], Image.Image]] = {
    "text": text_page,
    "screenshot": screenshot,
    "night_sky": night_sky,
    "microscopy": microscopy,
}


def foreign_pictures(n: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """``n`` generated pictures of each kind of :data:`FOREIGN_KINDS`, as ``(kind, image)``."""
    out = []
    for kind, draw in FOREIGN_KINDS.items():
        r = random.Random(f"{kind}-{seed}")
        out.extend((kind, draw(r)) for _ in range(n))
    return out
