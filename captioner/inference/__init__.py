"""THE pipeline: bytes / paths / PIL images in, plain results out, for both tasks.

This is the only room that puts encoder, decoder, decoding and media together. The CLI jobs,
the HTTP service, evaluation, validation during training and the export runner all call it,
so there is one path from an input to its result and one precision policy.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from captioner.bundle import load_bundle
from captioner.inference.activity import (
    ActivityClassifier,
    ActivityResult,
    ClipInput,
    VideoSource,
    clip_probabilities,
    prepare_clip,
    window_indices,
)
from captioner.inference.caption import (
    Captioner,
    CaptionPipeline,
    CaptionResult,
    ImageSource,
    is_single_image,
)
from captioner.inference.common import (
    autocast,
    default_bundle_dir,
    encode_images,
    precision_name,
    prepare_encoder,
    resolve_device,
)

__all__ = [
    "ActivityClassifier",
    "ActivityResult",
    "CaptionPipeline",
    "CaptionResult",
    "Captioner",
    "ClipInput",
    "ImageSource",
    "VideoSource",
    "autocast",
    "clip_probabilities",
    "default_bundle_dir",
    "encode_images",
    "is_single_image",
    "load",
    "precision_name",
    "prepare_clip",
    "prepare_encoder",
    "resolve_device",
    "window_indices",
]


def load(
    path: str | os.PathLike | None = None, device: str | torch.device = "auto"
) -> Captioner | ActivityClassifier:
    """Load a bundle folder -> the ready model for its task (default: the shipped captioner)."""
    folder = Path(path) if path is not None else default_bundle_dir("caption")
    bundle = load_bundle(folder)
    if bundle.task == "caption":
        return Captioner.from_bundle(bundle, device=device)
    return ActivityClassifier.from_bundle(bundle, device=device)
