"""The encoder registry and the one builder: a name -> :class:`EncoderSpec` -> a frozen
:class:`~captioner.encoders.module.Encoder` with its hash-checked weights.

Each backbone family registers its specs (or, like ``timm:``, a resolver for a name prefix)
in its own module; :mod:`captioner.encoders` imports them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from captioner.encoders.module import Encoder
from captioner.encoders.preprocess import Preprocess

log = logging.getLogger(__name__)


class EncoderError(RuntimeError):
    """An encoder cannot be built: unknown name or weights not available offline."""


@dataclass(frozen=True)
class EncoderSpec:
    """A registered backbone: how to build it and the weights that go with it."""

    name: str
    build: Callable[[], nn.Module]
    feature_dim: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""


_REGISTRY: dict[str, EncoderSpec] = {}
_FAMILIES: dict[str, Callable[[str], EncoderSpec]] = {}


def register(spec: EncoderSpec) -> EncoderSpec:
    """Add a backbone to the registry (name must be unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def register_family(prefix: str, resolve: Callable[[str], EncoderSpec]) -> None:
    """Accept ``<prefix>:<model>`` names: ``resolve(model)`` makes the spec (e.g. ``timm:``)."""
    if prefix in _FAMILIES:
        raise ValueError(f"encoder family {prefix!r} is already registered")
    _FAMILIES[prefix] = resolve


def available() -> list[str]:
    """Names accepted by :func:`build_encoder` (plus ``timm:<model>``)."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    """Resolve an encoder name: a registered one, or ``timm:<model>`` for any timm model."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES:
        return _FAMILIES[prefix](rest)
    raise EncoderError(
        f"unknown encoder {name!r}: choose one of {', '.join(available())} or 'timm:<model name>'"
    )


def build_encoder(name: str = "efficientnet_lite0", trainable_blocks: int = 0) -> Encoder:
    """Build a registered encoder with its weights; frozen unless ``trainable_blocks`` > 0."""
    spec = get_spec(name)
    trunk = spec.build()
    head = getattr(trunk, "imagenet_head", None)
    encoder = Encoder(spec.name, trunk, spec.feature_dim, spec.preprocess, head=head)
    encoder.freeze(trainable_blocks)
    log.debug("built encoder %s (%s)", spec.name, spec.description)
    return encoder
