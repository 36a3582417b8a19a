"""Where user-provided backbone weights are found, and how they are read (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from captioner.encoders.registry import EncoderError


def weights_dir() -> Path:
    """Where user-provided backbone weights live: $CAPTIONER_WEIGHTS, else the torch hub cache."""
    env = os.environ.get("CAPTIONER_WEIGHTS")
    return Path(env) if env else Path(torch.hub.get_dir()) / "checkpoints"


def local_weights(filenames: list[str], name: str) -> Path:
    folder = weights_dir()
    for filename in filenames:
        if (folder / filename).is_file():
            return folder / filename
    raise EncoderError(
        f"encoder {name!r} needs its ImageNet weights file {filenames[0]!r}, which is not on this "
        f"machine and is never downloaded at run time. Put it in {folder} (set $CAPTIONER_WEIGHTS "
        "to use another folder), or use the embedded default encoder 'efficientnet_lite0'."
    )


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
