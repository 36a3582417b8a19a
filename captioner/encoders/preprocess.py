"""How an image becomes an encoder's input tensor: resize, scale, normalise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


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


#: The torchvision / ImageNet statistics, for backbones whose weights the user provides.
IMAGENET = Preprocess(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
