"""Caption decoders: soft-attention LSTM (Show, Attend and Tell) and NIC (Show and Tell).

Only torch here: no files, no vocabulary objects. Decoding (greedy, beam) lives in
``captioner.decoding`` and drives :meth:`CaptionDecoder.init_state` / :meth:`CaptionDecoder.step`,
the same arithmetic the teacher-forced :meth:`CaptionDecoder.forward` uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CaptionDecoderConfig:
    """Shapes and regularisation of a caption decoder."""

    vocab_size: int
    feature_dim: int = 1280
    proj_dim: int = 512  # encoder features are projected to this size first
    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.5
    attention: bool = True  # False: NIC, the image is the LSTM's first input, no attention
    alpha_c: float = 1.0  # weight of the doubly stochastic attention penalty
    # Learned position embeddings for the N grid cells (0 = none). Without them an attention
    # context says what was looked at but not where, and "left of" becomes guesswork.
    positions: int = 0
    pad_id: int = 0
    start_id: int = 1
    end_id: int = 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CaptionDecoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown caption decoder config keys: {sorted(unknown)}")
        return cls(**d)


class DecoderState(NamedTuple):
    """Recurrent state for B rows (images, or images x beams)."""

    h: torch.Tensor  # (B, H)
    c: torch.Tensor  # (B, H)
    memory: torch.Tensor | None  # (B, N, P) projected grid; None for NIC
    keys: torch.Tensor | None  # (B, N, A) attention keys

    def select(self, index: torch.Tensor) -> DecoderState:
        """Keep / repeat rows ``index`` (B' rows out)."""
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return DecoderState(pick(self.h), pick(self.c), pick(self.memory), pick(self.keys))

    def reorder_beams(self, index: torch.Tensor) -> DecoderState:
        """Reorder rows among the beams of each image: the image's memory rows are identical,
        so only h and c move (copying the grid every step would dominate beam search)."""
        return DecoderState(
            self.h.index_select(0, index), self.c.index_select(0, index), self.memory, self.keys
        )


class CaptionOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V)
    alphas: torch.Tensor | None  # (B, T, N)
    loss: torch.Tensor | None


class CaptionDecoder(nn.Module):
    """LSTM caption decoder over a (B, N, C) feature grid."""

    def __init__(self, config: CaptionDecoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.project = nn.Sequential(nn.Linear(c.feature_dim, c.proj_dim), nn.ReLU())
        if c.positions:
            self.pos = nn.Parameter(torch.randn(c.positions, c.proj_dim) * 0.02)
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.drop = nn.Dropout(c.dropout)
        if c.attention:
            self.init_h = nn.Linear(c.proj_dim, c.hidden_dim)
            self.init_c = nn.Linear(c.proj_dim, c.hidden_dim)
            self.att_mem = nn.Linear(c.proj_dim, c.attention_dim)
            self.att_hid = nn.Linear(c.hidden_dim, c.attention_dim)
            self.att_out = nn.Linear(c.attention_dim, 1)
            self.gate = nn.Linear(c.hidden_dim, c.proj_dim)
            self.lstm = nn.LSTMCell(c.embed_dim + c.proj_dim, c.hidden_dim)
        else:
            self.image_in = nn.Linear(c.proj_dim, c.embed_dim)
            self.lstm = nn.LSTMCell(c.embed_dim, c.hidden_dim)
        self.out = nn.Linear(c.hidden_dim, c.vocab_size)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def init_state(self, features: torch.Tensor) -> DecoderState:
        """(B, N, C) encoder grid -> the state before the ``<start>`` token."""
        memory = self.project(features)  # (B, N, P)
        if self.config.positions:
            if features.size(1) != self.config.positions:
                raise ValueError(
                    f"the decoder was trained on a grid of {self.config.positions} cells but got "
                    f"{features.size(1)}: use the encoder and input size from its bundle"
                )
            memory = memory + self.pos
        mean = memory.mean(dim=1)  # (B, P)
        if self.config.attention:
            h = torch.tanh(self.init_h(mean))
            c = torch.tanh(self.init_c(mean))
            return DecoderState(h, c, memory, self.att_mem(memory))
        zeros = mean.new_zeros(mean.size(0), self.config.hidden_dim)
        h, c = self.lstm(self.drop(self.image_in(mean)), (zeros, zeros))
        return DecoderState(h, c, None, None)

    def _attend(self, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.att_out(torch.tanh(state.keys + self.att_hid(state.h).unsqueeze(1)))
        alpha = scores.squeeze(-1).softmax(dim=-1)  # (B, N)
        context = torch.bmm(alpha.unsqueeze(1), state.memory).squeeze(1)  # (B, P)
        return torch.sigmoid(self.gate(state.h)) * context, alpha

    def _advance(
        self, state: DecoderState, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        emb = self.embed(tokens)  # (B, E)
        if self.config.attention:
            context, alpha = self._attend(state)
            x = torch.cat([emb, context], dim=-1)
        else:
            x, alpha = emb, None
        h, c = self.lstm(self.drop(x), (state.h, state.c))
        logits = self.out(self.drop(h))  # (B, V)
        return logits, DecoderState(h, c, state.memory, state.keys), alpha

    def step(
        self, state: DecoderState, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Feed one token per row: -> log-probs (B, V), next state, attention (B, N) or None."""
        logits, state, alpha = self._advance(state, tokens)
        return F.log_softmax(logits.float(), dim=-1), state, alpha

    def forward(
        self,
        features: torch.Tensor,
        captions: torch.Tensor | None = None,
        sample_prob: float = 0.0,
    ) -> CaptionOutput:
        """Teacher-forced pass over ``captions`` (B, T) = ``<start> w1 .. wn <end> <pad>..``.

        Returns logits (B, T-1, V) predicting ``captions[:, 1:]``, attention (B, T-1, N) and, since
        targets are the captions themselves, the loss (cross-entropy without padding plus the
        doubly stochastic attention penalty). With ``sample_prob`` > 0 (scheduled sampling), each
        input word after the first is replaced by the model's own previous guess with that
        probability.
        """
        if captions is None:
            raise ValueError("forward needs captions for teacher forcing; use captioner.decoding")
        state = self.init_state(features)
        inputs, targets = captions[:, :-1], captions[:, 1:]
        logits, alphas = [], []
        for t in range(inputs.size(1)):
            tokens = inputs[:, t]
            if sample_prob > 0 and t > 0:
                guess = logits[-1].detach().argmax(dim=-1)
                swap = (torch.rand_like(tokens, dtype=torch.float) < sample_prob) & (
                    tokens != self.config.pad_id
                )
                tokens = torch.where(swap, guess, tokens)
            step_logits, state, alpha = self._advance(state, tokens)
            logits.append(step_logits)
            if alpha is not None:
                alphas.append(alpha)
        all_logits = torch.stack(logits, dim=1)  # (B, T-1, V)
        all_alphas = torch.stack(alphas, dim=1) if alphas else None  # (B, T-1, N)
        return CaptionOutput(all_logits, all_alphas, self.loss(all_logits, all_alphas, targets))

    def loss(
        self, logits: torch.Tensor, alphas: torch.Tensor | None, targets: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy over real tokens + alpha_c * mean_i (1 - sum_t alpha_ti)^2 (Xu et al.)."""
        mask = targets != self.config.pad_id
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        ce = (ce * mask.flatten()).sum() / mask.sum().clamp(min=1)
        if alphas is None or self.config.alpha_c == 0:
            return ce
        coverage = (alphas.float() * mask.unsqueeze(-1)).sum(dim=1)  # (B, N)
        return ce + self.config.alpha_c * ((1.0 - coverage) ** 2).mean()

    def sequence_log_prob(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Sum of log-probs of ``captions[:, 1:]`` (ignoring padding), per row: (B,)."""
        out = self.forward(features, captions)
        logp = F.log_softmax(out.logits.float(), dim=-1)
        targets = captions[:, 1:]
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (picked * (targets != self.config.pad_id)).sum(dim=1)
