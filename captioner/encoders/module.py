"""The encoder module: a backbone trunk -> (grid (B, N, C), pooled (B, C)), freezing and partial
unfreezing, and the backbone's own ImageNet head."""

from __future__ import annotations

import torch
from torch import nn

from captioner.encoders.preprocess import Preprocess
from captioner.models.grid import grid_shape


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

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.trunk(images)  # (B, C, h, w)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, N, C)
        return grid, grid.mean(dim=1)

    @property
    def grid_cells(self) -> int:
        """Number of cells N in the (B, N, C) grid at the current input size.

        Measured with one dummy pass per input size (cached): a backbone's stride is not
        declared anywhere, so the trunk itself says how many cells it makes.
        """
        size = self.preprocess.size
        cells: dict[int, int] = self.__dict__.setdefault("_grid_cells", {})
        if size not in cells:
            # In eval mode, so that no trainable BatchNorm updates its statistics on the zeros.
            modes = [(m, m.training) for m in self.modules()]
            self.eval()
            x = torch.zeros(1, 3, size, size, device=next(self.trunk.parameters()).device)
            with torch.inference_mode():
                fmap = self.trunk(x)
            for m, mode in modes:
                m.training = mode
            cells[size] = int(fmap.size(-2)) * int(fmap.size(-1))
        return cells[size]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the feature grid at the current input size (the one layout rule,
        :func:`captioner.models.grid.grid_shape`)."""
        return grid_shape(self.grid_cells)

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
    model = getattr(trunk, "model", trunk)  # timm models sit inside TimmTrunk
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
