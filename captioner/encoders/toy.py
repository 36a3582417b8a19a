"""A toy backbone for fast tests: seeded random convs, no ImageNet features."""

from __future__ import annotations

import torch
from torch import nn

from captioner.encoders.registry import EncoderSpec, register

TOY_FEATURE_DIM = 32


def _toy_trunk() -> nn.Module:
    """Three strided convs (7x7 grid at 224 px); every build has the same seeded weights."""
    g = torch.Generator().manual_seed(0)
    blocks = []
    for cin, cout, k in ((3, 16, 4), (16, 32, 4), (32, TOY_FEATURE_DIM, 2)):
        conv = nn.utils.skip_init(nn.Conv2d, cin, cout, k, stride=k)  # leaves global RNG alone
        std = (2 / (cin * k * k)) ** 0.5  # He init: activations keep their scale
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
            conv.bias.copy_(torch.randn(cout, generator=g) * 0.1)
        blocks.append(nn.Sequential(conv, nn.ReLU()))
    return nn.Sequential(*blocks)


register(
    EncoderSpec(
        name="toy",
        build=_toy_trunk,
        feature_dim=TOY_FEATURE_DIM,
        description="seeded random convs for fast tests, no ImageNet features: 7x7x32 at 224 px",
    )
)
