"""Activity recognition over per-frame CNN features (LRCN), with a mean-pool baseline.

Frames arrive as encoder grids (B, T, N, C). A globally pooled vector is nearly blind to where
things are, so it cannot tell moving left from moving right; each frame keeps a coarse spatial
grid (the 7x7 grid average-pooled to ``grid`` x ``grid`` cells, channels reduced per cell) as the
recurrent input. ``head="mean"`` averages the same frame embeddings over time instead: the
order-blind baseline that shows what the recurrent layer adds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from captioner.models.grid import square_side


@dataclass(frozen=True)
class ActivityModelConfig:
    """Shapes of an activity model."""

    num_classes: int
    feature_dim: int = 1280
    grid: int = 3  # frames keep a grid x grid layout of cells
    cell_dim: int = 32  # channels per cell after reduction
    embed_dim: int = 256  # frame embedding size
    hidden_dim: int = 256
    layers: int = 1
    rnn: str = "lstm"  # lstm | gru
    bidirectional: bool = False
    head: str = "rnn"  # rnn (many-to-one) | mean (order-blind baseline)
    dropout: float = 0.3
    # The recurrent input also gets each frame's change from the previous one: what moved is
    # then explicit instead of having to be inferred from two similar embeddings.
    deltas: bool = False
    # Label of each class played backwards (a permutation), when every class has one: the
    # prediction then averages the clip and its reversal (test-time augmentation, exact for
    # order pairs such as left/right). None: no reversal.
    reverse_map: list[int] | None = None

    def __post_init__(self) -> None:
        if self.reverse_map is not None and sorted(self.reverse_map) != list(
            range(self.num_classes)
        ):
            raise ValueError("reverse_map must be a permutation of the class indices")
        if self.rnn not in ("lstm", "gru"):
            raise ValueError(f"rnn must be 'lstm' or 'gru', got {self.rnn!r}")
        if self.head not in ("rnn", "mean"):
            raise ValueError(f"head must be 'rnn' or 'mean', got {self.head!r}")
        if self.num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {self.num_classes}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ActivityModelConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown activity model config keys: {sorted(unknown)}")
        return cls(**d)


class ActivityOutput(NamedTuple):
    logits: torch.Tensor  # (B, K)
    loss: torch.Tensor | None


class ActivityModel(nn.Module):
    """Frame grids -> class logits through an LSTM/GRU (or a temporal mean, the baseline)."""

    def __init__(self, config: ActivityModelConfig):
        super().__init__()
        self.config = c = config
        self.reduce = nn.Sequential(nn.Linear(c.feature_dim, c.cell_dim), nn.ReLU())
        self.frame = nn.Sequential(
            nn.Linear(c.grid * c.grid * c.cell_dim, c.embed_dim), nn.ReLU(), nn.Dropout(c.dropout)
        )
        if c.head == "rnn":
            rnn_cls = nn.LSTM if c.rnn == "lstm" else nn.GRU
            self.rnn = rnn_cls(
                c.embed_dim * (2 if c.deltas else 1),
                c.hidden_dim,
                num_layers=c.layers,
                batch_first=True,
                bidirectional=c.bidirectional,
                dropout=c.dropout if c.layers > 1 else 0.0,
            )
            out_dim = c.hidden_dim * (2 if c.bidirectional else 1)
        else:
            out_dim = c.embed_dim
        self.classifier = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(out_dim, c.num_classes))

    def embed_frames(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C) grids -> (B, T, E) frame embeddings that keep a coarse layout."""
        B, T, N, C = features.shape
        side = square_side(N)
        x = features.reshape(B * T, side, side, C).permute(0, 3, 1, 2)  # (BT, C, s, s)
        x = F.adaptive_avg_pool2d(x.float(), self.config.grid)  # (BT, C, g, g)
        x = self.reduce(x.flatten(2).transpose(1, 2))  # (BT, g*g, cell)
        return self.frame(x.flatten(1)).view(B, T, -1)  # (B, T, E)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> ActivityOutput:
        """(B, T, N, C) frame grids -> logits (B, K), plus the loss when labels are given."""
        frames = self.embed_frames(features)
        if self.config.head == "mean":
            summary = frames.mean(dim=1)
        else:
            if self.config.deltas:
                change = frames - torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
                frames = torch.cat([frames, change], dim=-1)  # (B, T, 2E)
            out, _ = self.rnn(frames)  # (B, T, H*)
            if self.config.bidirectional:
                h = self.config.hidden_dim
                summary = torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=-1)
            else:
                summary = out[:, -1]
        logits = self.classifier(summary)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ActivityOutput(logits, loss)

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C) frame grids -> class probabilities (B, K), for inference.

        With ``reverse_map`` the clip played backwards is classified too and its probabilities,
        moved to the classes they stand for forwards, are averaged with the clip's own.
        """
        probs = self(features).logits.float().softmax(-1)
        if self.config.reverse_map is None:
            return probs
        backwards = self(features.flip(1)).logits.float().softmax(-1)  # in reversed classes
        # Class k forwards is class reverse_map[k] backwards.
        return 0.5 * (probs + backwards[:, self.config.reverse_map])
