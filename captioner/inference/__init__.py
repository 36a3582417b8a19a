"""THE pipeline: bytes / paths / PIL images in, plain results out, for both tasks.

This is the only room that puts encoder, decoder, decoding and media together. The CLI jobs,
the HTTP service, evaluation, validation during training and the export runner all call it,
so there is one path from an input to its result and one precision policy.
"""

from __future__ import annotations

import os

import torch

from captioner.bundle import BundleError, load_bundle
from captioner.decoding import check_n_best
from captioner.inference.activity import (
    ActivityClassifier,
    ClipInput,
    VideoSource,
    check_timeline,
    clip_probabilities,
    prepare_clip,
    window_indices,
)
from captioner.inference.caption import (
    Captioner,
    CaptionPipeline,
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
from captioner.inference.motion_model import MotionReader, motion_reader
from captioner.inference.registry import ModelInfo, bundle_path, list_models
from captioner.inference.results import (
    ActivityResult,
    CaptionResult,
    ErrorResult,
    error_record,
)

__all__ = [
    "ActivityClassifier",
    "ActivityResult",
    "CaptionPipeline",
    "CaptionResult",
    "Captioner",
    "ClipInput",
    "ErrorResult",
    "ImageSource",
    "ModelInfo",
    "MotionReader",
    "VideoSource",
    "autocast",
    "bundle_path",
    "check_n_best",
    "check_timeline",
    "clip_probabilities",
    "default_bundle_dir",
    "encode_images",
    "error_record",
    "is_single_image",
    "list_models",
    "load",
    "motion_reader",
    "precision_name",
    "prepare_clip",
    "prepare_encoder",
    "resolve_device",
    "window_indices",
]


def load(
    path: str | os.PathLike | None = None, device: str | torch.device = "auto"
) -> Captioner | ActivityClassifier:
    """A model name or a bundle folder -> the ready model for its task (default: the captioner).

    Names: ``"caption"``, ``"activity"`` (each task's default model) and the shipped bundles'
    ``"caption-default"``, ``"activity-default"`` (:func:`list_models`). An existing folder is
    always a folder; an unknown name is a BundleError listing the names.
    """
    bundle = load_bundle(bundle_path(path, "caption"))
    if bundle.task == "motion":
        raise BundleError(
            f"{bundle.path} is a motion bundle, a part of the activity pipeline: load an "
            "activity model with it (ActivityClassifier.from_bundle(..., motion=PATH))"
        )
    if bundle.task == "caption":
        return Captioner.from_bundle(bundle, device=device)
    return ActivityClassifier.from_bundle(bundle, device=device)
