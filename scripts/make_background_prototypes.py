"""Write captioner/data/background_prototypes.safetensors: what each background looks like.

A background phrase the caption model learned ("on grass", "on a wooden pier") is kept only
when the picture shows that background (see captioner/inference/grounding.py). The evidence
is the cosine similarity of the picture's border cells to a prototype: the mean border feature
of the very backgrounds the training pictures were pasted on, through the encoder that ships
with the default bundle. The synthetic scenes' backgrounds are rendered by the scene
generator; the object bank's photographs come from the Debian wallpaper packages
(``captioner data objects`` fetches them into the package cache; ``--packages`` to point
elsewhere). Run once; the file is package data (about 40 KB).

    python scripts/make_background_prototypes.py [--packages DIR...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from captioner.data.objects_bank import background_table, load_photo_background, package_backgrounds
from captioner.data.objects_fetch import package_cache
from captioner.data.scene_grammar import _BACKGROUND_PHRASES, sample_scene
from captioner.data.scene_render import render_scene
from captioner.encoders import build_encoder
from captioner.inference.common import encode_images
from captioner.inference.grounding import PROTOTYPES, border_mean, phrase_key

ENCODER = "efficientnet_lite0"
SIZE = 224


def _crops(rgb: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    h, w = rgb.shape[:2]
    out = []
    for _ in range(n):
        side = int(min(h, w) * rng.uniform(0.5, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(rgb[y : y + side, x : x + side]).resize((SIZE, SIZE))
        out.append(np.asarray(crop))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="*", default=None, help="unpacked package folders")
    parser.add_argument("--out", default=str(Path("captioner") / "data" / PROTOTYPES))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pictures: dict[str, list[np.ndarray]] = {}
    for _ in range(400):  # scenes of the training generator: their border is the background
        scene = sample_scene(rng, image_size=SIZE)
        img = np.asarray(render_scene(scene, rng, SIZE).convert("RGB"))
        short = _BACKGROUND_PHRASES[scene["background"]][0]
        pictures.setdefault(phrase_key(short), []).append(img)
    cache = package_cache()
    folders = args.packages or [str(p) for p in cache.iterdir() if p.is_dir()]
    for entry, path in package_backgrounds(folders):
        if entry.short:
            pictures.setdefault(phrase_key(entry.short), []).extend(
                _crops(load_photo_background(path), rng, 8)
            )
    if not any(e.source != "skimage" and e.short for e, _ in package_backgrounds(folders)):
        raise SystemExit(f"no wallpaper packages under {folders}: run captioner data objects once")
    skipped = {phrase_key(e.short) for e in background_table() if e.short} - set(pictures)
    encoder = build_encoder(ENCODER).eval()
    keys, rows = [], []
    with torch.inference_mode():
        for key, imgs in sorted(pictures.items()):
            batch = torch.stack([encoder.preprocess.to_uint8(Image.fromarray(i)) for i in imgs])
            grid = encode_images(encoder, batch, torch.device("cpu")).float()
            border = torch.stack([border_mean(g) for g in grid])
            proto = torch.nn.functional.normalize(border.mean(0), dim=0)
            keys.append(key)
            rows.append(proto)
    meta = {"encoder": ENCODER, "phrases": json.dumps(keys), "missing": json.dumps(sorted(skipped))}
    save_file({"prototypes": torch.stack(rows).half().contiguous()}, args.out, metadata=meta)
    print(f"wrote {args.out}: {len(keys)} backgrounds {keys}; missing {sorted(skipped)}")


if __name__ == "__main__":
    main()
