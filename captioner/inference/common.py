"""What both tasks' pipelines share: device and precision policy, encoding, opening bundles."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from captioner.bundle import (
    Bundle,
    BundleError,
    load_bundle,
    load_state_strict,
    shipped_bundle_dir,
)
from captioner.encoders import Encoder, build_encoder

log = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", bound=torch.nn.Module)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a CUDA request without CUDA is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'")
    return dev


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA; nothing on the CPU, so the CPU path runs the same code in fp32.

    This is the one precision policy: serving, batch jobs, evaluation and validation during
    training all run the model under it, so reported scores measure what is served.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def precision_name(device: torch.device) -> str:
    """How :func:`autocast` runs the model on ``device``, for reports and evaluation results."""
    return "fp16-autocast" if device.type == "cuda" else "fp32"


def prepare_encoder(encoder: Encoder, device: torch.device) -> Encoder:
    """Eval mode on ``device``, channels_last (depthwise convs run ~2x faster in it, CPU too)."""
    return encoder.eval().to(device, memory_format=torch.channels_last)


@torch.inference_mode()
def encode_images(encoder: Encoder, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, N, C) features: the one encoding path for inference and caches."""
    x = images.to(device, non_blocking=True)
    x = encoder.preprocess.normalize(x).contiguous(memory_format=torch.channels_last)
    with autocast(device):
        grid, _ = encoder(x)
    return grid


def open_bundle(bundle: str | os.PathLike | Bundle, task: str) -> Bundle:
    """Load (hash-checked) a bundle and check it is for ``task``."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if b.task != task:
        article = "an" if task[0] in "aeiou" else "a"
        raise BundleError(f"{b.path} is a {b.task!r} bundle, not {article} {task} bundle")
    return b


def manifest_part(b: Bundle, read: Callable[[], T]) -> T:
    """``read()`` a part of a bundle's manifest (a config, a vocabulary); what it refuses
    becomes a BundleError naming the bundle."""
    try:
        return read()
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{b.path}/manifest.json is incomplete or invalid: {exc}") from exc


def bundle_module(b: Bundle, module: M, weights: str, what: str) -> M:
    """``module`` with the bundle's weights from ``weights`` loaded strictly (BundleError on a
    mismatch), ready for :func:`prepare_encoder`-style placement by its pipeline."""
    load_state_strict(module, b.weights[weights], what)
    return module


def bundle_encoder(b: Bundle) -> Encoder:
    """The bundle's encoder with its own preprocessing and, if fine-tuned, its own weights.

    Preprocessing travels with the bundle: a mismatch would give every image one caption.
    """
    entry = b.spec.encoder
    encoder = build_encoder(entry.name)
    encoder.preprocess = entry.preprocess
    if "encoder.safetensors" in b.weights:
        load_state_strict(encoder.trunk, b.weights["encoder.safetensors"], "encoder")
    rows, cols = encoder.grid_shape
    log.info(
        "%s: encoder %s at %d px, a %dx%d grid of %d-d features",
        b.path.name,
        entry.name,
        entry.preprocess.size,
        rows,
        cols,
        encoder.feature_dim,
    )
    return encoder


def default_bundle_dir(task: str = "caption") -> Path:
    """The shipped bundle: ``$CAPTIONER_<TASK>_BUNDLE``, else the one installed with the package
    (``weights/<task>-default`` in a source checkout)."""
    env = os.environ.get(f"CAPTIONER_{task.upper()}_BUNDLE")
    if env:
        return Path(env)
    return shipped_bundle_dir(task)
