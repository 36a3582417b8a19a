"""timm backbones: the trunk wrapper every timm model uses (the default encoder included), and
``timm:<model>`` for any timm model with a local weights file."""

from __future__ import annotations

import torch
from torch import nn

from captioner.encoders.module import ImageNetHead
from captioner.encoders.preprocess import IMAGENET, Preprocess
from captioner.encoders.registry import EncoderError, EncoderSpec, register_family
from captioner.encoders.weights import load_state_file, local_weights


class TimmTrunk(nn.Module):
    """A timm model reduced to its final feature map."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.imagenet_head: ImageNetHead | None = None  # set where the classifier is known

    @property
    def blocks(self) -> nn.Module | None:  # a property, so the state dict has no duplicate keys
        return getattr(self.model, "blocks", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _timm_spec(model_name: str) -> EncoderSpec:
    """Any timm model, weights from ``<weights_dir>/<model>.safetensors`` (or .pth)."""

    def build() -> nn.Module:
        import timm

        names = [model_name + suffix for suffix in (".safetensors", ".pth", ".bin")]
        path = local_weights(names, f"timm:{model_name}")
        model = timm.create_model(model_name, pretrained=False)
        model.load_state_dict(load_state_file(path), strict=True)
        model.reset_classifier(0, global_pool="")
        return TimmTrunk(model)

    import timm

    cfg = timm.create_model(model_name, pretrained=False).pretrained_cfg
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    pre = Preprocess(
        size=size,
        mean=tuple(cfg.get("mean", IMAGENET.mean)),
        std=tuple(cfg.get("std", IMAGENET.std)),
        interpolation=cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bicubic", "bilinear")
        else "bicubic",
    )
    feature_dim = timm.create_model(model_name, pretrained=False, num_classes=0).num_features
    return EncoderSpec(
        name=f"timm:{model_name}",
        build=build,
        feature_dim=feature_dim,
        preprocess=pre,
        description=f"timm {model_name} with a local weights file",
    )


def _resolve(model_name: str) -> EncoderSpec:
    """``timm:<model>``: any model timm knows."""
    import timm

    if model_name not in timm.list_models():
        raise EncoderError(f"timm has no model {model_name!r}; see timm.list_models()")
    return _timm_spec(model_name)


register_family("timm", _resolve)
