"""Decode-time grounding: each rule with hand-made evidence, where the evidence decides."""

from __future__ import annotations

import torch

from captioner.concepts import table
from captioner.inference.grounding import (
    Candidate,
    Evidence,
    GroundingConfig,
    ground,
    person_classes,
    regions,
    scene_table,
)

T = table()


def cls(lemma: str) -> int:
    return T.lemmas.index(lemma)


def probs(**by_lemma: float) -> torch.Tensor:
    """(1000,) probabilities: the named classes, the rest spread thinly over all classes."""
    p = torch.full((1000,), 1e-6)
    for lemma, v in by_lemma.items():
        p[cls(lemma.replace("_", " "))] = v
    return p


def cam(*blobs: tuple[int, int], klass: int) -> torch.Tensor:
    """(49, 1000) cell logits with a peak of ``klass`` at each (row, col) blob."""
    logits = torch.zeros(49, 1000)
    for r, c in blobs:
        logits[r * 7 + c, klass] = 5.0
    return logits


def test_regions_counts_separate_peaks_only():
    one = torch.zeros(49)
    one[[23, 24, 30, 31]] = 4.0  # one 2x2 blob
    two = torch.zeros(49)
    two[[8, 40]] = 4.0  # two cells far apart
    assert regions(one, (7, 7)) == 1
    assert regions(two, (7, 7)) == 2


def test_a_pair_needs_two_regions():
    cand = Candidate("a cup next to a cup", [{"name": "cup", "score": 0.9}] * 2, 0.9)
    alt = Candidate("a picture of a cup", [{"name": "cup", "score": 0.9}], 0.8)
    p = probs(cup=0.9)
    one_blob = Evidence(p, cam((3, 3), klass=cls("cup")))
    two_blobs = Evidence(p, cam((1, 1), (5, 5), klass=cls("cup")))
    assert ground([cand, alt], one_blob).caption == "a picture of a cup"
    assert ground([cand, alt], two_blobs).caption == "a cup next to a cup"


def test_a_count_without_regions_is_rewritten_singular():
    cand = Candidate("two cats", [{"name": "cats", "score": 0.9}], 0.9)
    ev = Evidence(probs(tabby=0.9), cam((3, 3), klass=cls("tabby")))
    out = ground([cand], ev)
    assert out.caption == "a photo of a cat"
    assert out.kept is None


def test_background_phrase_needs_a_supporting_class():
    cand = Candidate("a boat by a lake", [{"name": "boat", "score": 0.9}], 0.9)
    with_lake = Evidence(probs(canoe=0.6, lakeside=0.3), cam((3, 3), klass=cls("canoe")))
    without = Evidence(probs(canoe=0.9), cam((3, 3), klass=cls("canoe")))
    assert ground([cand], with_lake).caption == "a boat by a lake"
    assert ground([cand], without).caption == "a boat"


def test_background_phrase_supported_by_the_border_looking_like_it():
    cand = Candidate("a cup on grass", [{"name": "cup", "score": 0.9}], 0.9)
    p = probs(cup=0.9)
    grass = Evidence(p, cam((3, 3), klass=cls("cup")), backgrounds={"grass": 0.6})
    other = Evidence(p, cam((3, 3), klass=cls("cup")), backgrounds={"grass": 0.1})
    assert ground([cand], grass).caption == "a cup on grass"
    assert ground([cand], other).caption == "a cup"


def test_a_landscape_is_described_by_its_scene():
    cand = Candidate("a tent next to a tent", [{"name": "tent", "score": 0.5}] * 2, 0.9)
    out = ground([cand], Evidence(probs(alp=0.7, mountain_tent=0.05)))
    assert out.caption == scene_table()["mountain"].alone
    assert out.scene == {"name": "mountain", "score": 0.7}
    weak = ground([cand], Evidence(probs(alp=0.3, mountain_tent=0.4), cam((3, 3), klass=672)))
    assert weak.scene is None


def test_a_weak_place_is_said_only_with_a_hedge():
    cand = Candidate("a boat on a wooden pier", [{"name": "boat", "score": 0.5}], 0.9)
    alone = ground(
        [cand], Evidence(probs(lakeside=0.14, canoe=0.06), cam((3, 3), klass=cls("canoe")))
    )
    assert alone.caption == f"probably {scene_table()['lake'].alone}"
    assert alone.hedged
    assert alone.scene == {"name": "lake", "score": 0.14}
    assert alone.confidence < 0.5
    beside = ground(
        [cand], Evidence(probs(wing=0.2, lakeside=0.15), cam((3, 3), klass=cls("wing")))
    )
    assert beside.caption == f"probably a plane, perhaps {scene_table()['lake'].with_thing}"
    assert beside.hedged
    # too little for a place: no scene word at all, the thing hedged alone
    none = ground([cand], Evidence(probs(wing=0.2, lakeside=0.05), cam((3, 3), klass=cls("wing"))))
    assert none.caption == "probably a plane"
    assert none.scene is None
    # a thing the head is sure of is not hedged for a weak place beside it
    sure = ground(
        [cand], Evidence(probs(canoe=0.6, lakeside=0.15), cam((3, 3), klass=cls("canoe")))
    )
    assert "perhaps" not in sure.caption
    assert "boat" in sure.caption


def test_person_signal_says_a_person_first_with_the_clothing():
    cand = Candidate("three small astronauts on a dark background", [], 0.9)
    out = ground([cand], Evidence(probs(military_uniform=0.3, pickelhaube=0.2)))
    assert out.caption == "a person in a military uniform"
    assert out.person == {"score": 0.3, "wearing": "in a military uniform"}
    assert 0.5 < out.confidence <= 1


def test_no_person_word_without_the_signal():
    cand = Candidate("a large astronaut", [], 0.9)
    out = ground([cand], Evidence(probs(military_uniform=0.05, crash_helmet=0.6)))
    assert "person" not in out.caption
    assert "astronaut" not in out.caption
    assert "helmet" in out.caption


def test_person_table_has_no_gender_or_age_words():
    said = " ".join(person_classes().values()).split()
    assert not {"man", "woman", "boy", "girl", "child", "baby"} & set(said)


def test_a_sure_thing_is_always_named():
    cand = Candidate("a picture of a dog", [{"name": "dog", "score": 0.2}], 0.9)
    ev = Evidence(probs(koala=0.8, beagle=0.1), cam((3, 3), klass=cls("koala")))
    assert ground([cand], ev).caption == "a photo of a koala"


def test_hedges_when_the_head_is_unsure():
    cand = Candidate("a picture of a koala", [{"name": "koala", "score": 0.9}], 0.9)
    one = Evidence(probs(koala=0.2, wombat=0.05), cam((3, 3), klass=cls("koala")))
    two = Evidence(probs(koala=0.2, wombat=0.15), cam((3, 3), klass=cls("koala")))
    weak = Evidence(probs(koala=0.05, wombat=0.01), cam((3, 3), klass=cls("koala")))
    sure = Evidence(probs(koala=0.7), cam((3, 3), klass=cls("koala")))
    assert ground([cand], one).caption == "probably a koala"
    assert ground([cand], two).caption == "a koala or a wombat"
    assert ground([cand], weak).caption == "a photo, perhaps of a koala"
    assert ground([cand], sure).caption == "a picture of a koala"
    assert ground([cand], one).hedged
    assert not ground([cand], sure).hedged


def test_confidence_follows_the_evidence_of_the_subject():
    cand = Candidate("a picture of a koala", [{"name": "koala", "score": 0.9}], 0.9)
    cfg = GroundingConfig()
    low = ground([cand], Evidence(probs(koala=0.2), cam((3, 3), klass=cls("koala"))), cfg)
    high = ground([cand], Evidence(probs(koala=0.9), cam((3, 3), klass=cls("koala"))), cfg)
    assert 0 <= low.confidence < 0.5 <= high.confidence <= 1


def test_synthetic_scenes_keep_the_decoders_caption():
    cand = Candidate("two red circles on grass", [], 0.88)
    ev = Evidence(probs(pinwheel=0.1), backgrounds={"grass": 0.7}, synthetic=frozenset({"grass"}))
    out = ground([cand], ev)
    assert out.caption == "two red circles on grass"
    assert out.confidence == 0.88


def test_grounding_off_gives_the_decoders_first_caption_and_on_fixes_its_count():
    # The switch, on the shipped model and a real photograph: without grounding the caption is
    # the search's first hypothesis word for word ("two large cats" for one cat); with it, the
    # cat's activation map has one region, so the count goes.
    import math
    from pathlib import Path

    import captioner

    cap = captioner.load("caption", device="cpu")
    photo = Path(__file__).resolve().parent.parent / "examples" / "photo-chelsea.jpg"
    images = cap.load_image(photo)[None]
    (first, *_), *_ = cap.search(cap.encode(images), cap.search_config())
    grounding = cap.grounding
    try:
        cap.grounding = None
        (plain,) = cap.caption_tensors(images)
    finally:
        cap.grounding = grounding
    (grounded,) = cap.caption_tensors(images)
    assert plain.caption == cap.vocab.decode(first.tokens)
    assert math.isclose(plain.log_prob, first.log_prob, rel_tol=1e-5)
    assert "two" in plain.words
    assert "cat" in grounded.caption
    assert "two" not in grounded.caption.split()
