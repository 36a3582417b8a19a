"""CNN backbones that turn images into a spatial feature grid and a pooled vector.

Laid out as timm lays out its models: :mod:`~captioner.encoders.registry` (the specs, the
registry and :func:`build_encoder`, the single builder: resolve the spec, construct, load the
hash-checked weights, freeze), :mod:`~captioner.encoders.preprocess` (:class:`Preprocess`),
:mod:`~captioner.encoders.module` (:class:`Encoder`, :class:`ImageNetHead`), and one module
per backbone family: :mod:`~captioner.encoders.efficientnet_lite` (the embedded default),
:mod:`~captioner.encoders.torchvision_resnet`, :mod:`~captioner.encoders.timm_models`
(``timm:<model>``) and :mod:`~captioner.encoders.toy`. Importing this package registers every
family; every public name is re-exported here, so ``from captioner.encoders import ...`` is
the way to use them. The optional ONNX Runtime form of an encoder (the CPU fast path, the
``[export]`` extra) is used as :mod:`captioner.encoders.onnx`, which imports onnxruntime only
when it runs.
"""

from captioner.encoders import efficientnet_lite, timm_models, torchvision_resnet, toy
from captioner.encoders.efficientnet_lite import LITE0_SHA256, load_lite0_classifier
from captioner.encoders.module import Encoder, ImageNetHead
from captioner.encoders.preprocess import IMAGENET, Preprocess
from captioner.encoders.registry import (
    EncoderError,
    EncoderSpec,
    available,
    build_encoder,
    get_spec,
    register,
    register_family,
)
from captioner.encoders.toy import TOY_FEATURE_DIM
from captioner.encoders.weights import weights_dir
from captioner.files import sha256_file

__all__ = [
    "IMAGENET",
    "LITE0_SHA256",
    "TOY_FEATURE_DIM",
    "Encoder",
    "EncoderError",
    "EncoderSpec",
    "ImageNetHead",
    "Preprocess",
    "available",
    "build_encoder",
    "efficientnet_lite",
    "get_spec",
    "load_lite0_classifier",
    "register",
    "register_family",
    "sha256_file",
    "timm_models",
    "torchvision_resnet",
    "toy",
    "weights_dir",
]
