"""Tests for captioner.metrics: coco-caption equivalence and hand-checkable cases."""

from __future__ import annotations

import math
import random

import pytest

from captioner.metrics import (
    bleu,
    cider_d,
    confusion_matrix,
    per_class_accuracy,
    ptb_tokenize,
    rouge_l,
    score,
    topk_accuracy,
)

WORDS = [
    "a",
    "man",
    "dog",
    "woman",
    "riding",
    "sitting",
    "on",
    "the",
    "horse",
    "table",
    "with",
    "red",
    "big",
    "small",
    "two",
]
OTHER_WORDS = ["zebra", "umbrella", "kite", "surfboard", "pizza"]
KEYS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L"]


def _sentence(rng: random.Random, length: int, words: list[str] = WORDS) -> str:
    return " ".join(rng.choice(words) for _ in range(length))


def _decorate(rng: random.Random, tokens: str) -> str:
    """Turn a clean token string into a raw caption: capitals and punctuation."""
    words = tokens.split(" ")
    if len(words) > 2:
        words[1] += ","
    text = " ".join(words)
    end = rng.choice([".", " .", "!", ""])
    if end == "." and len(words[-1]) == 1:  # PTB reads "a." as an initial and keeps it whole
        end = " ."
    return text[:1].upper() + text[1:] + end


def _corpus(seed: int = 0) -> tuple[dict, dict]:
    """Clean-token corpus with several references per image and awkward hypotheses."""
    rng = random.Random(seed)
    refs: dict = {}
    hyps: dict = {}
    for i in range(40):
        refs[i] = [_sentence(rng, rng.randint(3, 14)) for _ in range(rng.randint(1, 5))]
        hyps[i] = _sentence(rng, rng.randint(2, 14))
    hyps[0] = refs[0][0]  # exact match
    hyps[1] = "man"  # far shorter than the references
    hyps[2] = _sentence(rng, 30)  # far longer
    hyps[3] = _sentence(rng, 6, OTHER_WORDS)  # no overlap at all
    refs["str-id"] = ["two dogs on a table", "a dog on the table"]
    hyps["str-id"] = "a dog on a table"
    return refs, hyps


def _coco_scores(refs: dict, hyps: dict) -> tuple[dict[str, float], dict[str, list]]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res = {i: [h] for i, h in hyps.items()}
    b, b_img = Bleu(4).compute_score(refs, res, verbose=0)
    c, c_img = Cider().compute_score(refs, res)
    r, r_img = Rouge().compute_score(refs, res)
    corpus = dict(zip(KEYS, [*b, c, r], strict=True))
    per_image = {"bleu": b_img, "cider": list(c_img), "rouge": list(r_img)}
    return corpus, per_image


def test_matches_pycocoevalcap_on_generated_corpus() -> None:
    pytest.importorskip("pycocoevalcap")
    refs, hyps = _corpus()
    expected, expected_img = _coco_scores(refs, hyps)

    got = score(refs, hyps, tokenize=False)
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    # The corpus exercises the interesting regimes, not just one.
    assert 0.05 < got["BLEU-4"] < 0.95
    assert got["CIDEr-D"] > 0

    ids = list(refs)
    _, bleu_img = bleu(refs, hyps)
    _, cider_img = cider_d(refs, hyps)
    _, rouge_img = rouge_l(refs, hyps)
    for pos, image_id in enumerate(ids):
        for k in range(4):
            assert bleu_img[image_id][k] == pytest.approx(expected_img["bleu"][k][pos], abs=1e-6)
        assert cider_img[image_id] == pytest.approx(expected_img["cider"][pos], abs=1e-6)
        assert rouge_img[image_id] == pytest.approx(expected_img["rouge"][pos], abs=1e-6)


def test_tokenize_true_matches_pycocoevalcap_on_clean_tokens() -> None:
    pytest.importorskip("pycocoevalcap")
    rng = random.Random(1)
    refs, hyps = _corpus(seed=1)
    raw_refs = {i: [_decorate(rng, r) for r in rs] for i, rs in refs.items()}
    raw_hyps = {i: _decorate(rng, h) for i, h in hyps.items()}
    raw_hyps[5], hyps[5] = "...", ""  # a caption that is only punctuation
    expected, _ = _coco_scores(refs, hyps)
    got = score(raw_refs, raw_hyps, tokenize=True)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def test_identical_hypothesis_scores_one_and_disjoint_scores_zero() -> None:
    same = score({1: ["a man riding a red horse"]}, {1: "a man riding a red horse"})
    assert same["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert same["ROUGE-L"] == pytest.approx(1.0)
    disjoint = score({1: ["a man riding a red horse"]}, {1: "two zebras eat pizza"})
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"):
        assert disjoint[key] == pytest.approx(0.0, abs=1e-6), key


def test_cider_of_a_single_image_is_zero_even_when_perfect() -> None:
    corpus, per_image = cider_d({"x": ["a dog on a table"]}, {"x": "a dog on a table"})
    assert corpus == 0.0
    assert per_image == {"x": 0.0}


def test_cider_rewards_the_matching_hypothesis() -> None:
    refs = {1: ["a dog on a table"], 2: ["a man riding a horse"], 3: ["two red kites"]}
    hyps = {1: "a dog on a table", 2: "a man riding a horse", 3: "a pizza"}
    _, per_image = cider_d(refs, hyps)
    assert per_image[1] > 1.0
    assert per_image[2] > 1.0
    assert per_image[3] == 0.0


def test_corpus_bleu_is_not_the_mean_of_per_image_bleu() -> None:
    refs = {"a": ["a b c d"], "b": ["a b"]}
    hyps = {"a": "a b c d", "b": "x y"}
    corpus, per_image = bleu(refs, hyps, n=1)
    assert per_image["a"][0] == pytest.approx(1.0)
    assert per_image["b"][0] == pytest.approx(0.0)
    # 4 + 0 matches over 4 + 2 words, equal lengths so no brevity penalty.
    assert corpus[0] == pytest.approx(4 / 6)
    assert score(refs, hyps, tokenize=False)["BLEU-1"] == pytest.approx(4 / 6)


def test_bleu_brevity_penalty_and_closest_reference_ties_to_shorter() -> None:
    short = bleu({1: ["a b c d"]}, {1: "a b"}, n=1)[0][0]
    assert short == pytest.approx(math.exp(1 - 4 / 2))
    # Hypothesis of 4 words, references of 3 and 5: the tie goes to 3, so no penalty.
    tie = bleu({1: ["a b c", "a b c d e"]}, {1: "a b c d"}, n=1)[0][0]
    assert tie == pytest.approx(1.0)


def test_rouge_l_by_hand() -> None:
    # LCS("a b c", "a x c d") = 2, precision 2/3, recall 2/4.
    p, r = 2 / 3, 2 / 4
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)
    corpus, _ = rouge_l({1: ["a x c d", "q"]}, {1: "a b c"})
    assert corpus == pytest.approx(expected)


def test_mismatched_ids_name_the_culprits() -> None:
    with pytest.raises(ValueError, match=r"without a hypothesis: 2.*without references: 'z'"):
        score({1: ["a dog"], 2: ["a cat"]}, {1: "a dog", "z": "a cat"})


def test_bad_inputs_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="empty"):
        score({}, {})
    with pytest.raises(TypeError, match=r"wrap a single caption"):
        score({1: "a dog"}, {1: "a dog"})
    with pytest.raises(ValueError, match="needs a reference"):
        score({1: []}, {1: "a dog"})


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("A Man, riding a HORSE.", "a man riding a horse"),
        ('He said "hello" (loudly)...', "he said hello -lrb- loudly -rrb-"),
        ("The dog's ball; isn't it red?", "the dog 's ball is n't it red"),
        ("A black-and-white T-shirt - 3.5 dollars!", "a black-and-white t-shirt 3.5 dollars"),
        ("  lots   of\tspace \n here ", "lots of space here"),
    ],
)
def test_tokenisation_lowercases_and_drops_punctuation(raw: str, tokens: str) -> None:
    assert ptb_tokenize(raw) == tokens


def test_tokenize_flag_changes_scores() -> None:
    refs, hyps = {1: ["a dog on a table"]}, {1: "A dog, on a table."}
    assert score(refs, hyps)["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert score(refs, hyps, tokenize=False)["BLEU-4"] < 0.5


def test_topk_accuracy() -> None:
    scores = [[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]]
    labels = [2, 1]
    assert topk_accuracy(scores, labels, k=1) == 0.0
    # Row 1 ties classes 1 and 2; the lower index wins, so label 1 is second.
    assert topk_accuracy(scores, labels, k=2) == 1.0
    assert topk_accuracy(scores, [1, 0], k=1) == 1.0


def test_topk_accuracy_accepts_tensors_and_refuses_bad_k() -> None:
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    assert topk_accuracy(logits, torch.tensor([0, 0]), k=1) == 0.5
    with pytest.raises(ValueError, match="k must be between 1 and"):
        topk_accuracy([[0.1, 0.2]], [0], k=3)
    with pytest.raises(ValueError, match="one label per row"):
        topk_accuracy([[0.1, 0.2]], [0, 1], k=1)


def test_confusion_matrix_and_per_class_accuracy() -> None:
    matrix = confusion_matrix([0, 1, 1, 2, 2], [0, 1, 2, 2, 2], num_classes=4)
    assert matrix == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    # Class 3 has no samples: 0.0, not NaN.
    assert per_class_accuracy(matrix) == pytest.approx([1.0, 1.0, 2 / 3, 0.0])
    with pytest.raises(ValueError, match=r"outside 0..3"):
        confusion_matrix([4], [0], num_classes=4)
