"""Greedy and beam search over a whole batch at once.

Both drive a decoder through ``init_state(features)`` and ``step(state, tokens)`` (see
``captioner.models.caption``); the search itself has no Python loop over images, only over time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from captioner.models.caption import CaptionDecoder


@dataclass
class Hypothesis:
    """One decoded sequence: word ids (no special tokens), its log-prob and its attention."""

    tokens: list[int]
    log_prob: float  # sum of token log-probs, including <end> when finished
    score: float  # log_prob after the length penalty: what the n-best list is sorted by
    finished: bool  # False when the length limit cut it before <end>
    attention: torch.Tensor | None = None  # (len(tokens), N) attention for each word


@dataclass(frozen=True)
class SearchConfig:
    """Decoding options. ``length_penalty`` alpha divides scores by ``((5 + len) / 6) ** alpha``."""

    beam_size: int = 3
    max_len: int = 20
    n_best: int = 1
    length_penalty: float = 0.0
    min_len: int = 1
    suppress: tuple[int, ...] = ()  # token ids never generated (e.g. <unk>)
    return_attention: bool = False

    def validate(self, vocab_size: int) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 1 <= self.n_best <= self.beam_size:
            raise ValueError(
                f"n_best must be between 1 and beam_size={self.beam_size}, got {self.n_best}"
            )
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        if self.beam_size > vocab_size:
            raise ValueError(f"beam_size {self.beam_size} exceeds the vocabulary size {vocab_size}")
        bad = [i for i in self.suppress if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(
                f"suppressed token ids {bad} are outside the vocabulary (size {vocab_size})"
            )


def _penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 0:
        return torch.ones_like(lengths, dtype=torch.float32)
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def _banned_mask(model: CaptionDecoder, cfg: SearchConfig, device: torch.device) -> torch.Tensor:
    c = model.config
    banned = torch.zeros(model.vocab_size, dtype=torch.bool, device=device)
    banned[[c.pad_id, c.start_id, *cfg.suppress]] = True
    banned[c.end_id] = False
    return banned


@torch.inference_mode()
def greedy_search(
    model: CaptionDecoder, features: torch.Tensor, cfg: SearchConfig | None = None
) -> list[Hypothesis]:
    """Most likely next word at each step, for a (B, N, C) batch of feature grids."""
    cfg = cfg or SearchConfig(beam_size=1)
    cfg.validate(model.vocab_size)
    c = model.config
    B = features.size(0)
    state = model.init_state(features)
    tokens = torch.full((B,), c.start_id, dtype=torch.long, device=features.device)
    banned = _banned_mask(model, cfg, features.device)
    done = torch.zeros(B, dtype=torch.bool, device=features.device)
    total = torch.zeros(B, device=features.device)
    seq, alphas = [], []
    for t in range(cfg.max_len):
        logp, state, alpha = model.step(state, tokens)
        logp = logp.masked_fill(banned, float("-inf"))
        if t < cfg.min_len:
            logp[:, c.end_id] = float("-inf")
        best, tokens = logp.max(dim=-1)
        total += torch.where(done, torch.zeros_like(best), best)
        tokens = tokens.masked_fill(done, c.pad_id)
        seq.append(tokens)
        if alpha is not None:
            alphas.append(alpha)
        done = done | (tokens == c.end_id)
        if bool(done.all()):
            break
    seq_t = torch.stack(seq, dim=1)  # (B, T)
    att_t = torch.stack(alphas, dim=1) if alphas and cfg.return_attention else None
    return [
        _hypothesis(seq_t[b], float(total[b]), att_t[b] if att_t is not None else None, c, cfg)
        for b in range(B)
    ]


def _hypothesis(
    seq: torch.Tensor, log_prob: float, attention: torch.Tensor | None, c, cfg: SearchConfig
) -> Hypothesis:
    ids = seq.tolist()
    finished = c.end_id in ids
    words = ids[: ids.index(c.end_id)] if finished else [i for i in ids if i != c.pad_id]
    length = len(words) + int(finished)
    score = log_prob / float(_penalty(torch.tensor(length), cfg.length_penalty))
    att = attention[: len(words)].float().cpu() if attention is not None else None
    return Hypothesis(words, log_prob, score, finished, att)


@torch.inference_mode()
def beam_search(
    model: CaptionDecoder, features: torch.Tensor, cfg: SearchConfig | None = None
) -> list[list[Hypothesis]]:
    """Beam search for a (B, N, C) batch; returns the ``n_best`` hypotheses per image, best first.

    Finished beams stay in the beam with their score frozen (their only continuation is
    ``<pad>`` at zero cost), so finished and live hypotheses compete for the K places. Images
    whose K beams have all finished leave the batch, so the remaining steps cost less. When the
    length limit is hit before any beam ends, the best unfinished beams are returned (marked
    ``finished=False``) instead of failing.
    """
    cfg = cfg or SearchConfig()
    cfg.validate(model.vocab_size)
    c = model.config
    B, K, V, T, dev = (
        features.size(0),
        cfg.beam_size,
        model.vocab_size,
        cfg.max_len,
        features.device,
    )
    state = model.init_state(features)
    state = state.select(torch.arange(B, device=dev).repeat_interleave(K))  # (B*K, ...)
    want_att = cfg.return_attention and state.memory is not None
    N = state.memory.size(1) if want_att else 0

    # Results, written as images finish: (B, K, T) tokens, (B, K) scores, (B, K, T, N) attention.
    out_seqs = torch.full((B, K, T), c.pad_id, dtype=torch.long, device=dev)
    out_scores = torch.zeros(B, K, device=dev)
    out_atts = torch.zeros(B, K, T, N, device=dev) if want_att else None

    alive = torch.arange(B, device=dev)  # images still searching
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all K beams start identical: expand only the first
    tokens = torch.full((B * K,), c.start_id, dtype=torch.long, device=dev)
    finished = torch.zeros(B, K, dtype=torch.bool, device=dev)
    seqs = torch.empty(B, K, 0, dtype=torch.long, device=dev)
    atts = torch.empty(B, K, 0, N, device=dev)
    banned = _banned_mask(model, cfg, dev)
    pad_only = torch.full((V,), float("-inf"), device=dev)
    pad_only[c.pad_id] = 0.0
    exact_stop = cfg.length_penalty == 0

    def flush(which: torch.Tensor, upto: int) -> None:
        ids = alive[which]
        out_seqs[ids, :, :upto] = seqs[which]
        out_scores[ids] = scores[which]
        if out_atts is not None:
            out_atts[ids, :, :upto] = atts[which]

    for t in range(T):
        A = alive.numel()
        logp, state, alpha = model.step(state, tokens)  # (A*K, V), (A*K, N)
        logp = logp.masked_fill(banned, float("-inf"))
        if t < cfg.min_len:
            logp[:, c.end_id] = float("-inf")
        logp = torch.where(finished.view(-1, 1), pad_only, logp).view(A, K, V)
        scores, top_idx = (scores.unsqueeze(-1) + logp).view(A, K * V).topk(K, dim=1)
        beam = torch.div(top_idx, V, rounding_mode="floor")  # (A, K) parent beam
        word = top_idx % V  # (A, K)

        seqs = torch.cat(
            [seqs.gather(1, beam.unsqueeze(-1).expand_as(seqs)), word.unsqueeze(-1)], 2
        )
        if want_att:
            parent = beam.view(A, K, 1, 1)
            step_att = alpha.float().view(A, K, 1, N).gather(1, parent.expand(A, K, 1, N))
            atts = torch.cat([atts.gather(1, parent.expand_as(atts)), step_att], dim=2)
        finished = finished.gather(1, beam) | (word == c.end_id)
        offsets = (torch.arange(A, device=dev) * K).unsqueeze(1)
        state = state.reorder_beams((beam + offsets).view(-1))
        tokens = word.view(-1)

        # Beams are sorted by score and a live beam's score only falls, so once the top n_best
        # beams have all finished nothing can overtake them (exact without a length penalty).
        done = finished[:, : cfg.n_best].all(dim=1) if exact_stop else finished.all(dim=1)
        if t == T - 1 or bool(done.all()):
            flush(torch.ones_like(done), t + 1)
            break
        if bool(done.any()):
            flush(done, t + 1)
            keep = (~done).nonzero().squeeze(1)
            rows = (keep.unsqueeze(1) * K + torch.arange(K, device=dev)).view(-1)
            state, tokens = state.select(rows), tokens.index_select(0, rows)
            alive, scores, finished = alive[keep], scores[keep], finished[keep]
            seqs, atts = seqs[keep], atts[keep]

    lengths = (out_seqs != c.pad_id).sum(dim=2)  # words + <end>
    ranked = out_scores / _penalty(lengths, cfg.length_penalty)
    order = ranked.argsort(dim=1, descending=True, stable=True)[:, : cfg.n_best]  # (B, n_best)
    seqs_cpu, scores_cpu, order_cpu = out_seqs.cpu(), out_scores.cpu(), order.cpu()
    atts_cpu = out_atts.cpu() if out_atts is not None else None
    results: list[list[Hypothesis]] = []
    for b in range(B):
        hyps = []
        for k in order_cpu[b].tolist():
            att = atts_cpu[b, k] if atts_cpu is not None else None
            hyps.append(_hypothesis(seqs_cpu[b, k], float(scores_cpu[b, k]), att, c, cfg))
        results.append(hyps)
    return results


def decode(
    model: CaptionDecoder, features: torch.Tensor, cfg: SearchConfig
) -> list[list[Hypothesis]]:
    """Greedy when ``beam_size`` is 1 (cheaper), else beam search; always n-best lists."""
    if cfg.beam_size == 1:
        return [[h] for h in greedy_search(model, features, cfg)]
    return beam_search(model, features, cfg)


def suppress_ids(itos: Sequence[str], words: Sequence[str]) -> tuple[int, ...]:
    """Ids of ``words`` present in the vocabulary; absent words are skipped, never guessed."""
    index = {w: i for i, w in enumerate(itos)}
    return tuple(index[w] for w in words if w in index)
