"""Shared fixtures: a tiny seeded caption bundle, a small synthetic dataset, a loaded Captioner.

The tiny bundle names the seeded ``toy`` encoder (no ImageNet features, built in milliseconds);
tests that need real features use the shipped bundles or build EfficientNet-Lite0 themselves.
Everything is generated under pytest's temporary folders; nothing is read from or written to
the user's home cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from captioner.bundle import EncoderEntry, Manifest, save_bundle
from captioner.encoders import TOY_FEATURE_DIM, get_spec
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig
from captioner.vocab import SPECIALS, Vocabulary

TINY_WORDS = (
    "a",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "star",
    "cat",
    "cup",
    "on",
    "grass",
    "brick",
    "small",
    "large",
    "two",
)


def tiny_vocab() -> Vocabulary:
    """20 tokens: the four specials and sixteen scene words."""
    return Vocabulary([*SPECIALS, *TINY_WORDS])


def tiny_decoder_config(
    vocab_size: int, feature_dim: int = TOY_FEATURE_DIM
) -> CaptionDecoderConfig:
    return CaptionDecoderConfig(
        vocab_size=vocab_size,
        feature_dim=feature_dim,
        proj_dim=32,
        embed_dim=16,
        hidden_dim=32,
        attention_dim=16,
        dropout=0.0,
    )


def tiny_manifest(
    config: CaptionDecoderConfig, vocab: Vocabulary, encoder: str = "toy"
) -> Manifest:
    """A caption manifest like the ones ``train_caption`` writes, over a registered encoder."""
    spec = get_spec(encoder)
    return Manifest(
        task="caption",
        name="tiny-test",
        version="1",
        encoder=EncoderEntry(encoder, spec.preprocess, spec.feature_dim),
        model=config.to_dict(),
        vocabulary=vocab.to_dict(),
        decoding={"beam_size": 3, "max_len": 12, "length_penalty": 0.0},
    )


def tiny_decoder_state(config: CaptionDecoderConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights whose output layer is scaled up so the image matters.

    With default-scale weights a random decoder emits nearly the same caption for every image;
    larger projection and output weights make the caption depend on the features.
    """
    torch.manual_seed(seed)
    decoder = CaptionDecoder(config)
    with torch.no_grad():
        decoder.project[0].weight.mul_(8.0)
        decoder.init_h.weight.mul_(4.0)
        decoder.out.weight.mul_(6.0)
        decoder.out.bias.zero_()
    return {k: v.detach().clone() for k, v in decoder.state_dict().items()}


def write_tiny_bundle(folder: Path, seed: int = 0) -> Path:
    vocab = tiny_vocab()
    config = tiny_decoder_config(len(vocab))
    weights = {"decoder.safetensors": tiny_decoder_state(config, seed)}
    return save_bundle(folder, tiny_manifest(config, vocab), weights)


def make_image(seed: int, size: int = 96) -> Image.Image:
    """A distinct RGB test picture: a coloured background with a few random shapes."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        x1, y1 = x0 + int(rng.integers(10, size // 2)), y0 + int(rng.integers(10, size // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return img


def save_stamp(path: Path, w: int, h: int, colour: tuple[int, int, int]) -> None:
    """A stand-in Tux Paint stamp: a noisy ``colour`` ellipse on a transparent PNG."""
    rng = np.random.default_rng(w * h)
    rgb = np.clip(np.asarray(colour) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    alpha = Image.new("L", (w, h), 0)
    ImageDraw.Draw(alpha).ellipse((1, 1, w - 2, h - 2), fill=255)
    image = Image.fromarray(rgb).convert("RGBA")
    image.putalpha(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def save_image(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(seed).save(path, fmt)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A caption bundle with a small seeded random decoder over the toy encoder's features."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def scene_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic scenes dataset (COCO format): 40 train, 8 val, 8 test images."""
    from captioner.data.scenes import generate_scenes

    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, seed=3, n_train=40, n_val=8, n_test=8, n_novel=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_captioner(tiny_bundle: Path):
    """The tiny bundle loaded on the CPU once per session."""
    import captioner

    return captioner.load(tiny_bundle, device="cpu")


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point the feature cache at a temporary folder so no test writes under ~/.cache."""
    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
