"""What an export folder is: its format names, version, file names and errors, shared by the
writer and the runner."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from captioner.encoders.onnx import DEFAULT_OPSET, ONNX_EXTRA

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
EXPORT_VERSION = 1
HEAD_FILE = "head.safetensors"
META_FILE = "export.json"
ONNX_PACKAGES = ONNX_EXTRA

Tensors = tuple[torch.Tensor, ...]

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_VERSION",
    "FORMATS",
    "HEAD_FILE",
    "META_FILE",
    "ONNX_PACKAGES",
    "SUFFIX",
    "ExportError",
    "Tensors",
    "known_warnings",
]


class ExportError(ValueError):
    """An export cannot be written or read: unknown format, missing package, bad export folder."""


@contextlib.contextmanager
def known_warnings() -> Iterator[None]:
    """Hide warnings that say nothing about this export: TorchScript's deprecation notice, the
    tracer's note that the grid size is baked in (it is fixed by the bundle anyway) and the
    ONNX exporter's note that every input shares the one "batch" dimension."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
        yield
