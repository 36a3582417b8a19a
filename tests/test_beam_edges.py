"""Beam search at its edges, on toy decoders whose log-probs the tests write by hand."""

from __future__ import annotations

import math

import pytest

from captioner.decoding import SearchConfig, beam_search, decode, greedy_search
from tests.toy_decoder import (
    END,
    FIRST_WORD,
    ToyDecoder,
    brute_force,
    images,
    log_prob,
    random_logits,
)

A, B = FIRST_WORD, FIRST_WORD + 1  # the two words of the hand-written models
LOW = -9.0


def short_b_or_long_a(image: int, words: tuple[int, ...]) -> list[float]:
    """ "b <end>" is the best caption (log-prob about -2.1), but "a ..." leads early: "a" costs
    0.13 at first and 0.69 a word after it, and a caption of a's only ends at a cost of 9."""
    pad_start = [LOW, LOW]
    if not words:
        return [*pad_start, LOW, 2.0, 0.0]
    if words == (B,):
        return [*pad_start, 5.0, LOW, LOW]
    if words[0] == A:
        return [*pad_start, LOW, 1.0, 1.0]
    return [*pad_start, 0.0, 0.0, 0.0]


def words_then_end(length: int):
    """Wants exactly ``length`` words "a", then <end>."""

    def logits(image: int, words: tuple[int, ...]) -> list[float]:
        if len(words) < length:
            return [LOW, LOW, -5.0, 5.0]
        return [LOW, LOW, 5.0, -5.0]

    return logits


def test_a_finished_caption_beats_an_unfinished_one_at_the_length_limit():
    # With max_len=3 the search runs out of words on "a a a"/"a a b" (-1.5 so far, never
    # finished) while "b <end>" (-2.1) is finished: the finished one must be returned.
    model = ToyDecoder(5, short_b_or_long_a)
    cfg = SearchConfig(beam_size=2, n_best=2, max_len=3)
    (hyps,) = beam_search(model, images(0), cfg)
    assert hyps[0].tokens == [B]
    assert hyps[0].finished
    assert hyps[0].log_prob == pytest.approx(log_prob(model, 0, [B]), abs=1e-5)
    assert hyps[1].finished  # finished hypotheses first in the n-best list too
    assert hyps[0].score >= hyps[1].score


def test_a_finished_caption_is_not_evicted_by_live_beams_that_fade():
    # The two children of "a" (-0.8) outscore "b <end>" (-2.1) at step 2 and push it out of a
    # beam of two; later every "a ..." caption costs more than 2.1.
    model = ToyDecoder(5, short_b_or_long_a)
    best_lp, best_words = brute_force(model, 0, max_len=8)[0]
    assert best_words == (B,)
    (hyps,) = beam_search(model, images(0), SearchConfig(beam_size=2, max_len=8))
    assert hyps[0].tokens == [B]
    assert hyps[0].finished
    assert hyps[0].log_prob == pytest.approx(best_lp, abs=1e-5)
    # it stopped once no live beam could beat "b <end>", long before the limit
    assert model.calls < 8


def test_each_image_keeps_its_own_finished_list_in_a_batch():
    random_image = random_logits(5, seed=3)

    def two_models(image: int, words: tuple[int, ...]) -> list[float]:
        return short_b_or_long_a(image, words) if image == 0 else random_image(image, words)

    model = ToyDecoder(5, two_models)
    cfg = SearchConfig(beam_size=2, n_best=2, max_len=6)
    batched = beam_search(model, images(1, 0, 2), cfg)
    assert batched[1][0].tokens == [B]
    for i, image in enumerate((1, 0, 2)):
        (alone,) = beam_search(model, images(image), cfg)
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        assert [h.log_prob for h in alone] == pytest.approx([h.log_prob for h in batched[i]])


@pytest.mark.parametrize("search", ["beam", "greedy"])
def test_a_caption_of_exactly_max_len_words_can_finish(search):
    # Training keeps captions of up to max_len words plus <end>; decoding must allow them.
    model = ToyDecoder(4, words_then_end(5))
    cfg = SearchConfig(beam_size=2 if search == "beam" else 1, max_len=5)
    hyp = beam_search(model, images(0), cfg)[0][0] if search == "beam" else None
    hyp = hyp or greedy_search(model, images(0), cfg)[0]
    assert hyp.tokens == [A] * 5
    assert hyp.finished
    assert hyp.log_prob == pytest.approx(log_prob(model, 0, [A] * 5), abs=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_never_more_than_max_len_words(beam_size):
    model = ToyDecoder(4, words_then_end(50))  # would go on far past the limit
    cfg = SearchConfig(beam_size=beam_size, n_best=beam_size, max_len=4)
    for hyps in decode(model, images(0, 1), cfg):
        assert all(len(h.tokens) <= 4 and h.finished for h in hyps)
        if beam_size == 1:  # greedy: the most likely word until only <end> is left
            assert hyps[0].tokens == [A] * 4
        else:  # every caption pays about 10 for <end>, so the shortest is the most likely
            assert hyps[0].log_prob == pytest.approx(brute_force(model, 0, 4)[0][0], abs=1e-4)
    assert model.calls <= 5


def test_unfinished_only_when_nothing_ended():
    def never_ends(image: int, words: tuple[int, ...]) -> list[float]:
        return [LOW, LOW, -math.inf, 0.5, 0.0]

    model = ToyDecoder(5, never_ends)
    (hyps,) = beam_search(model, images(0), SearchConfig(beam_size=3, n_best=3, max_len=3))
    assert [h.finished for h in hyps] == [False] * 3
    assert hyps[0].tokens == [A] * 3
    assert all(len(h.tokens) == 3 for h in hyps)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_when_the_beam_holds_every_prefix(seed):
    # Two words and max_len=2: at most 4 live prefixes, so a beam of 5 (the vocabulary size)
    # is exhaustive and must return the 5 best of the 6 possible captions, in order.
    model = ToyDecoder(5, random_logits(5, seed))
    cfg = SearchConfig(beam_size=5, n_best=5, max_len=2)
    for image, hyps in zip((0, 1, 2), beam_search(model, images(0, 1, 2), cfg), strict=True):
        expected = brute_force(model, image, max_len=2)[:5]
        assert [tuple(h.tokens) for h in hyps] == [w for _, w in expected]
        assert [h.log_prob for h in hyps] == pytest.approx([lp for lp, _ in expected], abs=1e-4)
        assert all(h.finished for h in hyps)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_one_word_chains(seed):
    # One word: every prefix fits in the beam whatever the length, so the search is exact.
    model = ToyDecoder(4, random_logits(4, seed, scale=1.0, end_bias=-1.5))
    cfg = SearchConfig(beam_size=4, n_best=4, max_len=7)
    for image, hyps in zip((0, 1), beam_search(model, images(0, 1), cfg), strict=True):
        expected = brute_force(model, image, max_len=7)[:4]
        assert [tuple(h.tokens) for h in hyps] == [w for _, w in expected]
        assert [h.log_prob for h in hyps] == pytest.approx([lp for lp, _ in expected], abs=1e-4)


def reference_beam(model: ToyDecoder, image: int, cfg: SearchConfig) -> list[tuple]:
    """The search as specified, one image, plain Python: (words, log-prob, finished) best first."""
    K, L, alpha = cfg.beam_size, cfg.max_len, cfg.length_penalty

    def penalty(n: int) -> float:
        return ((5 + n) / 6) ** alpha

    live: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    pool: list[tuple[float, float, tuple[int, ...]]] = []  # score, log-prob, words
    for t in range(L + 1):
        candidates = []
        for words, lp in live:
            step = model.log_probs(image, words).tolist()
            if t >= cfg.min_len:
                pool.append(((lp + step[END]) / penalty(t + 1), lp + step[END], words))
            if t < L:
                candidates += [((*words, w), lp + step[w]) for w in range(A, model.vocab_size)]
        pool = sorted(pool, key=lambda p: -p[0])[:K]  # stable: earlier ones win ties
        prev, live = live, sorted(candidates, key=lambda c: -c[1])[:K]
        best_live = live[0][1] if live else -math.inf
        if alpha == 0:
            done = len(pool) >= cfg.n_best and pool[cfg.n_best - 1][0] >= best_live
        else:
            done = len(pool) == K and min(p[1] for p in pool) >= best_live
        if done or t == L:
            out = [(list(w), lp, True) for _, lp, w in pool[: cfg.n_best]]
            return out + [(list(w), lp, False) for w, lp in prev[: cfg.n_best - len(out)]]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("seed", range(5))
def test_batched_search_follows_the_specification(seed, alpha):
    model = ToyDecoder(6, random_logits(6, seed, scale=2.0, end_bias=-1.0))
    cfg = SearchConfig(beam_size=3, n_best=2, max_len=6, length_penalty=alpha)
    batch = (0, 1, 2, 3)
    for image, hyps in zip(batch, beam_search(model, images(*batch), cfg), strict=True):
        expected = reference_beam(model, image, cfg)
        assert [(h.tokens, h.finished) for h in hyps] == [(w, f) for w, _, f in expected]
        assert [h.log_prob for h in hyps] == pytest.approx([lp for _, lp, _ in expected], abs=1e-4)
        best = brute_force(model, image, max_len=6)[0][0]
        assert hyps[0].log_prob <= best + 1e-4  # never better than the true optimum


def test_beam_search_returns_the_optimum_more_often_than_greedy():
    hits = {"beam": 0, "greedy": 0}
    for seed in range(8):
        model = ToyDecoder(5, random_logits(5, seed, scale=1.5, end_bias=-1.0))
        best = [brute_force(model, i, max_len=5)[0][0] for i in range(3)]
        beam = beam_search(model, images(0, 1, 2), SearchConfig(beam_size=5, max_len=5))
        greedy = greedy_search(model, images(0, 1, 2), SearchConfig(beam_size=1, max_len=5))
        for i in range(3):
            hits["beam"] += beam[i][0].log_prob == pytest.approx(best[i], abs=1e-4)
            hits["greedy"] += greedy[i].log_prob == pytest.approx(best[i], abs=1e-4)
    assert hits["beam"] > hits["greedy"]
    assert hits["beam"] >= 20  # of 24
