"""Greedy and beam search on tiny seeded decoders."""

import pytest
import torch

from captioner.decoding import (
    SearchConfig,
    beam_search,
    check_n_best,
    decode,
    greedy_search,
    suppress_ids,
)
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig

V = 12


def make_model(attention: bool = True, seed: int = 2) -> CaptionDecoder:
    torch.manual_seed(seed)
    cfg = CaptionDecoderConfig(
        vocab_size=V,
        feature_dim=8,
        proj_dim=16,
        embed_dim=8,
        hidden_dim=16,
        attention_dim=8,
        dropout=0.0,
        attention=attention,
    )
    model = CaptionDecoder(cfg).eval()
    with torch.no_grad():  # sharper distributions so sequences differ between images
        model.out.weight.mul_(6.0)
        model.project[0].weight.mul_(6.0)
    return model


def features(b: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 9, 8, generator=g)


def as_captions(hyps, end_id=2):
    rows = [[1, *h.tokens] + ([end_id] if h.finished else []) for h in hyps]
    width = max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("attention", [True, False])
def test_beam_of_one_never_loses_to_greedy(attention):
    # A beam of one follows greedy's path but keeps the best caption that ended on the way,
    # so it returns greedy's caption or a more likely one that ended earlier.
    model, feats = make_model(attention), features()
    greedy = greedy_search(model, feats, SearchConfig(beam_size=1, max_len=15))
    beam = beam_search(model, feats, SearchConfig(beam_size=1, max_len=15))
    for g, (b,) in zip(greedy, beam, strict=True):
        if b.tokens == g.tokens:
            assert g.log_prob == pytest.approx(b.log_prob, abs=1e-5)
        else:
            assert b.tokens == g.tokens[: len(b.tokens)]
            assert b.log_prob > g.log_prob


@pytest.mark.parametrize("attention", [True, False])
def test_scores_equal_teacher_forced_log_prob(attention):
    model, feats = make_model(attention), features()
    nbest = beam_search(model, feats, SearchConfig(beam_size=4, n_best=4, max_len=15))
    for k in range(4):
        hyps = [n[k] for n in nbest]
        forced = model.sequence_log_prob(feats, as_captions(hyps))
        for h, f in zip(hyps, forced.tolist(), strict=True):
            assert h.log_prob == pytest.approx(f, abs=1e-4)


def test_nbest_sorted_distinct_and_beats_greedy():
    model, feats = make_model(), features(8)
    cfg = SearchConfig(beam_size=5, n_best=5, max_len=15)
    greedy = greedy_search(model, feats, SearchConfig(beam_size=1, max_len=15))
    for hyps, g in zip(beam_search(model, feats, cfg), greedy, strict=True):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
        assert hyps[0].log_prob >= g.log_prob - 1e-5  # beam never loses to greedy here
    # the images do not all get the same caption
    assert len({tuple(h[0].tokens) for h in beam_search(model, feats, cfg)}) > 1


def test_batch_equals_one_at_a_time():
    model, feats = make_model(), features(6)
    cfg = SearchConfig(beam_size=3, n_best=2, max_len=15, return_attention=True)
    batched = beam_search(model, feats, cfg)
    for i in range(feats.size(0)):
        single = beam_search(model, feats[i : i + 1], cfg)[0]
        assert [h.tokens for h in single] == [h.tokens for h in batched[i]]
        for s, b in zip(single, batched[i], strict=True):
            assert s.log_prob == pytest.approx(b.log_prob, abs=1e-5)
            assert torch.allclose(s.attention, b.attention, atol=1e-5)


def test_no_beam_finishes_returns_best_unfinished():
    model, feats = make_model(), features(3)
    with torch.no_grad():
        model.out.bias[2] = float("-inf")  # <end> is never possible
    hyps = beam_search(model, feats, SearchConfig(beam_size=3, n_best=2, max_len=7))
    for nbest in hyps:
        assert len(nbest) == 2
        assert all(not h.finished and len(h.tokens) == 7 for h in nbest)
        assert nbest[0].score >= nbest[1].score


def test_attention_maps_per_word_sum_to_one():
    model, feats = make_model(), features(2)
    hyps = beam_search(model, feats, SearchConfig(beam_size=3, max_len=10, return_attention=True))
    for h in (n[0] for n in hyps):
        assert h.attention.shape == (len(h.tokens), 9)
        assert torch.allclose(h.attention.sum(-1), torch.ones(len(h.tokens)), atol=1e-5)


def test_suppressed_token_never_generated_and_absent_word_ignored():
    model, feats = make_model(), features(6)
    plain = beam_search(model, feats, SearchConfig(beam_size=3, max_len=12))
    common = max(range(4, V), key=lambda t: sum(t in n[0].tokens for n in plain))
    out = beam_search(model, feats, SearchConfig(beam_size=3, max_len=12, suppress=(common,)))
    assert all(common not in h.tokens for n in out for h in n)
    itos = ["<pad>", "<start>", "<end>", "a", "cat"]
    assert suppress_ids(itos, ["<unk>", "cat"]) == (4,)  # no <unk> here: nothing else hit


def test_never_empty_and_special_tokens_never_emitted():
    model, feats = make_model(), features(6)
    with torch.no_grad():
        model.out.bias[2] = 50.0  # <end> would win at once
        model.out.bias[0] = 60.0  # <pad> and <start> even more so
        model.out.bias[1] = 60.0
    for nbest in decode(model, feats, SearchConfig(beam_size=2, max_len=5)):
        assert len(nbest[0].tokens) == 1
        assert nbest[0].finished
        assert not {0, 1, 2} & set(nbest[0].tokens)


def test_bad_options_are_refused():
    model, feats = make_model(), features(1)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(model, feats, SearchConfig(beam_size=2, n_best=3))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, feats, SearchConfig(beam_size=0))


def test_the_n_best_check_names_the_option_and_the_beam():
    check_n_best(3, 3)
    with pytest.raises(ValueError, match=r"--n-best 4 is more than the beam size \(3\)"):
        check_n_best(4, 3, option="--n-best")
    with pytest.raises(ValueError, match="n_best must be at least 1"):
        SearchConfig(n_best=0).validate(10)


def test_a_bare_search_has_the_bundles_default_options():
    from captioner.bundle import Decoding

    d, cfg = Decoding(), SearchConfig()
    assert (cfg.beam_size, cfg.max_len, cfg.length_penalty) == (
        d.beam_size,
        d.max_len,
        d.length_penalty,
    )


def test_position_embeddings_tell_cells_apart_and_check_the_grid():
    torch.manual_seed(0)
    cfg = CaptionDecoderConfig(
        vocab_size=V,
        feature_dim=8,
        proj_dim=16,
        embed_dim=8,
        hidden_dim=16,
        attention_dim=8,
        dropout=0.0,
        positions=9,
    )
    model = CaptionDecoder(cfg).eval()
    same = torch.ones(1, 9, 8)  # every cell looks alike: only positions can differ
    memory = model.init_state(same).memory
    assert not torch.allclose(memory[0, 0], memory[0, 8])
    with pytest.raises(ValueError, match="grid of 9 cells"):
        model.init_state(torch.ones(1, 8, 8))
