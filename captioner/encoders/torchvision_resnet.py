"""torchvision ResNets, with an ImageNet weights file the user provides locally."""

from __future__ import annotations

from torch import nn

from captioner.encoders.preprocess import IMAGENET
from captioner.encoders.registry import EncoderSpec, register
from captioner.encoders.weights import load_state_file, local_weights


class _ResNetTrunk(nn.Sequential):
    """A torchvision ResNet without its pooling and classifier."""

    @property
    def blocks(self) -> nn.Sequential:  # layer1..layer4, for partial unfreezing
        return nn.Sequential(*list(self.children())[4:8])


def _torchvision_resnet(arch: str, filename: str) -> EncoderSpec:
    def build() -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        model.load_state_dict(load_state_file(local_weights([filename], arch)), strict=True)
        return _ResNetTrunk(*list(model.children())[:-2])  # drop avgpool and fc

    return EncoderSpec(
        name=arch,
        build=build,
        feature_dim=2048,
        preprocess=IMAGENET,
        description=f"torchvision {arch} (IMAGENET1K_V2 file {filename} provided locally)",
    )


register(_torchvision_resnet("resnet50", "resnet50-11ad3fa6.pth"))
register(_torchvision_resnet("resnet101", "resnet101-cd907fc2.pth"))
