"""The learned motion stream: a small recurrent net over a window's per-pair motion vectors.

Input: (B, P, D) motion features, one row per measured frame pair of a window (the layout of
``captioner.video.motion``, D = 71; this module knows only the number). The raw features are
normalised by a mean and a std stored in the model (buffers, computed on the training data, so
they travel with the weights), embedded per pair, read by a GRU or LSTM (both ways by default),
pooled over time (mean and max) and given to two heads: how the camera moves and how the
thing that moves on its own moves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MotionModelConfig:
    """Shapes of a motion model."""

    input_dim: int = 71
    camera_classes: int = 9
    object_classes: int = 7
    embed_dim: int = 64
    hidden_dim: int = 64
    layers: int = 1
    rnn: str = "gru"  # gru | lstm
    bidirectional: bool = True
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.rnn not in ("lstm", "gru"):
            raise ValueError(f"rnn must be 'lstm' or 'gru', got {self.rnn!r}")
        if min(self.camera_classes, self.object_classes) < 2:
            raise ValueError("each head needs at least 2 classes")
        if min(self.input_dim, self.embed_dim, self.hidden_dim, self.layers) < 1:
            raise ValueError("input_dim, embed_dim, hidden_dim and layers must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MotionModelConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown motion model config keys: {sorted(unknown)}")
        return cls(**d)


class MotionOutput(NamedTuple):
    camera: torch.Tensor  # (B, camera_classes) logits
    object: torch.Tensor  # (B, object_classes) logits
    loss: torch.Tensor | None  # the two heads' cross-entropies, summed, when targets are given


class MotionModel(nn.Module):
    """(B, P, D) motion features -> camera and object-motion logits."""

    def __init__(self, config: MotionModelConfig):
        super().__init__()
        self.config = c = config
        self.register_buffer("mean", torch.zeros(c.input_dim))
        self.register_buffer("std", torch.ones(c.input_dim))
        self.embed = nn.Sequential(nn.Linear(c.input_dim, c.embed_dim), nn.ReLU())
        rnn = nn.LSTM if c.rnn == "lstm" else nn.GRU
        self.rnn = rnn(
            c.embed_dim,
            c.hidden_dim,
            num_layers=c.layers,
            batch_first=True,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.layers > 1 else 0.0,
        )
        pooled = 2 * c.hidden_dim * (2 if c.bidirectional else 1)  # mean and max over time
        self.drop = nn.Dropout(c.dropout)
        self.camera_head = nn.Linear(pooled, c.camera_classes)
        self.object_head = nn.Linear(pooled, c.object_classes)

    @torch.no_grad()
    def set_normalization(self, features: torch.Tensor) -> None:
        """Store the mean and std of (N, D) training rows (a constant column gets std 1)."""
        rows = features.reshape(-1, self.config.input_dim).double()
        std = rows.std(0)
        self.mean.copy_(rows.mean(0).float())
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).float())

    def forward(
        self,
        features: torch.Tensor,
        camera: torch.Tensor | None = None,
        obj: torch.Tensor | None = None,
    ) -> MotionOutput:
        """(B, P, D) features [+ (B,) camera and object targets] -> logits [and loss]."""
        if features.dim() != 3 or features.size(-1) != self.config.input_dim:
            raise ValueError(
                f"expected (batch, pairs, {self.config.input_dim}) features, "
                f"got {tuple(features.shape)}"
            )
        if features.size(1) == 0:
            raise ValueError("a window needs at least one measured pair")
        x = ((features - self.mean) / self.std).clamp(-10.0, 10.0)
        out, _ = self.rnn(self.embed(x))  # (B, P, H * directions)
        pooled = self.drop(torch.cat([out.mean(1), out.amax(1)], dim=-1))
        cam, ob = self.camera_head(pooled), self.object_head(pooled)
        loss = None
        if camera is not None and obj is not None:
            loss = F.cross_entropy(cam, camera) + F.cross_entropy(ob, obj)
        return MotionOutput(cam, ob, loss)

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P, D) features -> (B, camera_classes), (B, object_classes) softmax probabilities."""
        out = self(features)
        return out.camera.softmax(-1), out.object.softmax(-1)
