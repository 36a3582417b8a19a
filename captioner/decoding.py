"""Greedy and beam search over a whole batch at once.

Both drive a decoder through ``init_state(features)`` and ``step(state, tokens)`` (see
``captioner.models.caption``); the search itself has no Python loop over images, only over time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from captioner.bundle.manifest import Decoding
from captioner.models.caption import CaptionDecoder

NEG_INF = float("-inf")
_DEFAULTS = Decoding()  # a bundle's defaults, when it says nothing: the same for a bare search


def check_n_best(n_best: int, beam_size: int, option: str = "n_best") -> None:
    """The one check of ``n_best`` against the beam (ValueError naming ``option``): the beam
    keeps ``beam_size`` hypotheses, so it cannot give more alternatives than that. The CLI
    and the service call it before any work, with the beam the request will use."""
    if n_best < 1:
        raise ValueError(f"{option} must be at least 1, got {n_best}")
    if n_best > beam_size:
        raise ValueError(
            f"{option} {n_best} is more than the beam size ({beam_size}), which is as many "
            "alternatives as the search keeps: ask for fewer, or a wider beam"
        )


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
    """Decoding options.

    ``max_len`` counts words: a caption has at most ``max_len`` words followed by ``<end>``, so
    the search takes up to ``max_len + 1`` steps, the last of which can only be ``<end>`` (the
    same limit training applies to its targets). ``min_len`` is the fewest words before
    ``<end>``. ``length_penalty`` alpha divides scores by ``((5 + len) / 6) ** alpha``, where
    ``len`` counts the words plus ``<end>``.
    """

    beam_size: int = _DEFAULTS.beam_size
    max_len: int = _DEFAULTS.max_len
    n_best: int = 1
    length_penalty: float = _DEFAULTS.length_penalty
    min_len: int = 1
    suppress: tuple[int, ...] = ()  # token ids never generated (e.g. <unk>)
    return_attention: bool = False

    def validate(self, vocab_size: int) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        check_n_best(self.n_best, self.beam_size)
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        if self.beam_size > vocab_size:
            raise ValueError(f"beam_size {self.beam_size} exceeds the vocabulary size {vocab_size}")
        bad = [i for i in self.suppress if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(
                f"suppressed token ids {bad} are outside the vocabulary (size {vocab_size})"
            )


def _penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _banned_mask(model: CaptionDecoder, cfg: SearchConfig, device: torch.device) -> torch.Tensor:
    c = model.config
    banned = torch.zeros(model.vocab_size, dtype=torch.bool, device=device)
    banned[[c.pad_id, c.start_id, *cfg.suppress]] = True
    banned[c.end_id] = False
    return banned


def _step_log_probs(
    logp: torch.Tensor, t: int, banned: torch.Tensor, cfg: SearchConfig, end_id: int
) -> torch.Tensor:
    """Mask step ``t`` (0-based, = words so far): banned ids, ``<end>`` before ``min_len``
    words, and everything but ``<end>`` once ``max_len`` words are out."""
    logp = logp.masked_fill(banned, NEG_INF)
    if t < cfg.min_len:
        logp[:, end_id] = NEG_INF
    if t == cfg.max_len:
        end = logp[:, end_id].clone()
        logp = torch.full_like(logp, NEG_INF)
        logp[:, end_id] = end
    return logp


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
    for t in range(cfg.max_len + 1):
        logp, state, alpha = model.step(state, tokens)
        best, tokens = _step_log_probs(logp, t, banned, cfg, c.end_id).max(dim=-1)
        # A row with nothing allowed (only possible at the last step) stays unfinished.
        stuck = done | torch.isinf(best)
        total += torch.where(stuck, torch.zeros_like(best), best)
        tokens = tokens.masked_fill(stuck, c.pad_id)
        seq.append(tokens)
        if alpha is not None:
            alphas.append(alpha)
        done = stuck | (tokens == c.end_id)
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
    score = log_prob / _penalty(length, cfg.length_penalty)
    att = attention[: len(words)].float().cpu() if attention is not None else None
    return Hypothesis(words, log_prob, score, finished, att)


@torch.inference_mode()
def beam_search(
    model: CaptionDecoder, features: torch.Tensor, cfg: SearchConfig | None = None
) -> list[list[Hypothesis]]:
    """Beam search for a (B, N, C) batch; returns the ``n_best`` hypotheses per image, best first.

    Each image keeps K live beams and, apart from them, its K best finished hypotheses, so a
    finished caption is never pushed out by live beams that score higher now and worse later.
    Without a length penalty an image stops as soon as no live beam can beat its ``n_best``-th
    finished hypothesis (a live score only falls), which makes the result exact for the
    candidates the beam kept; with a penalty it stops once its K finished hypotheses all
    outscore the best live beam by raw log-prob. Finished hypotheses always rank first; only
    when fewer than ``n_best`` finished, the best live beams of the last step fill the list,
    marked ``finished=False``.
    """
    cfg = cfg or SearchConfig()
    cfg.validate(model.vocab_size)
    c = model.config
    B, K, V, L, dev = (
        features.size(0),
        cfg.beam_size,
        model.vocab_size,
        cfg.max_len,
        features.device,
    )
    alpha_lp = cfg.length_penalty
    state = model.init_state(features)
    state = state.select(torch.arange(B, device=dev).repeat_interleave(K))  # (B*K, ...)
    want_att = cfg.return_attention and state.memory is not None
    N = state.memory.size(1) if want_att else 0

    alive = torch.arange(B, device=dev)  # images still searching
    # Live beams: (A, K) raw log-probs, (A, K, t) words, (A, K, t, N) attention.
    scores = torch.full((B, K), NEG_INF, device=dev)
    scores[:, 0] = 0.0  # all K beams start identical: expand only the first
    seqs = torch.empty(B, K, 0, dtype=torch.long, device=dev)
    atts = torch.empty(B, K, 0, N, device=dev)
    tokens = torch.full((B * K,), c.start_id, dtype=torch.long, device=dev)
    # Finished pool, sorted by final score: (A, K) score, raw log-prob, words; words padded to L.
    pool = _Pool.empty(B, K, L, N, c.pad_id, dev)
    banned = _banned_mask(model, cfg, dev)
    results: list[list[Hypothesis] | None] = [None] * B

    for t in range(L + 1):
        A = alive.numel()
        logp, state, alpha = model.step(state, tokens)  # (A*K, V), (A*K, N)
        logp = _step_log_probs(logp, t, banned, cfg, c.end_id).view(A, K, V)
        total = scores.unsqueeze(-1) + logp  # (A, K, V)
        # (A, K, t + 1, N): each beam's words so far, then what it looked at for this step
        words_att = torch.cat([atts, alpha.float().view(A, K, 1, N)], 2) if want_att else None
        ended = total[:, :, c.end_id].clone()  # (A, K): each live beam closed with <end> now
        pool.add(ended, ended / _penalty(t + 1, alpha_lp), seqs, words_att)
        prev = (scores, seqs, atts)  # the fallback if this step leaves too few finished

        total[:, :, c.end_id] = NEG_INF
        scores, top_idx = total.view(A, K * V).topk(K, dim=1)
        beam = torch.div(top_idx, V, rounding_mode="floor")  # (A, K) parent beam
        word = top_idx % V  # (A, K)
        seqs = torch.cat(
            [seqs.gather(1, beam.unsqueeze(-1).expand_as(seqs)), word.unsqueeze(-1)], 2
        )
        if want_att:
            parent = beam.view(A, K, 1, 1)
            atts = words_att.gather(1, parent.expand(A, K, t + 1, N))
        offsets = (torch.arange(A, device=dev) * K).unsqueeze(1)
        state = state.reorder_beams((beam + offsets).view(-1))
        tokens = word.view(-1)

        best_live = scores[:, 0]  # -inf when no beam can go on
        if alpha_lp == 0:  # exact: a live score only falls
            done = pool.score[:, cfg.n_best - 1] >= best_live
        else:  # a longer caption may still win after the penalty: heuristic, as before -
            # stop once K finished all lead every live beam by raw log-prob
            done = pool.log_prob.min(dim=1).values >= best_live
        if t == L:
            done = torch.ones_like(done)
        if bool(done.any()):
            rows = done.nonzero().squeeze(1)
            for i, hyps in zip(rows.tolist(), pool.results(rows, prev, cfg, c), strict=True):
                results[int(alive[i])] = hyps
            if bool(done.all()):
                break
            keep = (~done).nonzero().squeeze(1)
            rows_k = (keep.unsqueeze(1) * K + torch.arange(K, device=dev)).view(-1)
            state, tokens = state.select(rows_k), tokens.index_select(0, rows_k)
            alive, scores, seqs, atts = alive[keep], scores[keep], seqs[keep], atts[keep]
            pool = pool.keep(keep)
    return [r if r is not None else [] for r in results]


@dataclass
class _Pool:
    """The K best finished hypotheses of each searching image, best first."""

    score: torch.Tensor  # (A, K) after the length penalty; -inf = empty slot
    log_prob: torch.Tensor  # (A, K)
    words: torch.Tensor  # (A, K, L) word ids, padded
    length: torch.Tensor  # (A, K) number of words
    att: torch.Tensor | None  # (A, K, L, N) attention per word, when wanted
    pad_id: int

    @classmethod
    def empty(cls, B: int, K: int, L: int, N: int, pad_id: int, dev: torch.device) -> _Pool:
        return cls(
            torch.full((B, K), NEG_INF, device=dev),
            torch.full((B, K), NEG_INF, device=dev),
            torch.full((B, K, L), pad_id, dtype=torch.long, device=dev),
            torch.zeros(B, K, dtype=torch.long, device=dev),
            torch.zeros(B, K, L, N, device=dev) if N else None,
            pad_id,
        )

    def add(
        self,
        log_prob: torch.Tensor,
        score: torch.Tensor,
        words: torch.Tensor,
        att: torch.Tensor | None,
    ) -> None:
        """Offer (A, K) new finished hypotheses with (A, K, t) words; keep the best K."""
        A, K, L = self.words.shape
        t = words.size(2)
        both = torch.cat([self.score, score], dim=1)  # (A, 2K)
        # Stable: on a tie the hypothesis already in the pool (the shorter one) stays ahead.
        order = both.sort(dim=1, descending=True, stable=True).indices[:, :K]  # (A, K)
        new_words = F.pad(words, (0, L - t), value=self.pad_id)
        new_len = torch.full_like(self.length, t)
        self.score = both.gather(1, order)
        self.log_prob = torch.cat([self.log_prob, log_prob], 1).gather(1, order)
        self.length = torch.cat([self.length, new_len], 1).gather(1, order)
        idx = order.unsqueeze(-1)
        self.words = torch.cat([self.words, new_words], 1).gather(1, idx.expand(A, K, L))
        if self.att is not None and att is not None:
            new_att = F.pad(att[:, :, :t], (0, 0, 0, L - t))  # the <end> step's map is not kept
            n = self.att.size(3)
            self.att = torch.cat([self.att, new_att], 1).gather(
                1, idx.unsqueeze(-1).expand(A, K, L, n)
            )

    def keep(self, rows: torch.Tensor) -> _Pool:
        pick = lambda x: x.index_select(0, rows)  # noqa: E731
        return _Pool(
            pick(self.score),
            pick(self.log_prob),
            pick(self.words),
            pick(self.length),
            pick(self.att) if self.att is not None else None,
            self.pad_id,
        )

    def results(
        self, rows: torch.Tensor, prev: tuple, cfg: SearchConfig, c
    ) -> list[list[Hypothesis]]:
        """n-best lists for pool ``rows``: finished first, then the live beams ``prev`` held."""
        want_att = self.att is not None
        score, log_prob, words, length = (
            x.index_select(0, rows).cpu()
            for x in (self.score, self.log_prob, self.words, self.length)
        )
        att = self.att.index_select(0, rows).cpu() if self.att is not None else None
        live_lp, live_words, live_att = (x.index_select(0, rows).cpu() for x in prev)
        out = []
        for r in range(rows.numel()):
            hyps = []
            for k in range(score.size(1)):
                if len(hyps) == cfg.n_best or score[r, k] == NEG_INF:
                    break
                n = int(length[r, k])
                a = att[r, k, :n] if att is not None else None
                hyps.append(
                    Hypothesis(
                        words[r, k, :n].tolist(), float(log_prob[r, k]), float(score[r, k]), True, a
                    )
                )
            # Too few finished: the unfinished beams, best first (live beams are sorted).
            for k in range(cfg.n_best - len(hyps)):
                a = live_att[r, k] if want_att else None
                seq = live_words[r, k]
                hyps.append(_hypothesis(seq, float(live_lp[r, k]), a, c, cfg))
            out.append(hyps)
        return out


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
