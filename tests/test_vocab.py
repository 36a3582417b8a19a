"""Tokenizer and vocabulary: building, encoding, decoding, saving."""

import json

import pytest

from captioner.vocab import END, PAD, SPECIALS, START, UNK, Vocabulary, tokenize

CAPTIONS = [
    "A dog runs on the grass.",
    "A dog catches a ball!",
    "The dog is brown.",
    "A cat sleeps.",
]


# --------------------------------------------------------------------------- tokenize


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A Dog, running; FAST!") == ["a", "dog", "running", "fast"]
    # coco-caption keeps brackets, written the PTB way
    assert tokenize('Two "happy" men (outside)... ok?') == [
        "two",
        "happy",
        "men",
        "-lrb-",
        "outside",
        "-rrb-",
        "ok",
    ]


def test_tokenize_splits_clitics() -> None:
    assert tokenize("the dog's ball isn't red") == ["the", "dog", "'s", "ball", "is", "n't", "red"]
    assert tokenize("Don't") == ["do", "n't"]
    assert tokenize("they're here") == ["they", "'re", "here"]


def test_tokenize_keeps_hyphenated_words_and_numbers_whole() -> None:
    assert tokenize("a black-and-white cat at 3.5 m") == [
        "a",
        "black-and-white",
        "cat",
        "at",
        "3.5",
        "m",
    ]


def test_tokenize_clitic_before_punctuation() -> None:
    assert tokenize("a photo of the dog's.") == ["a", "photo", "of", "the", "dog", "'s"]
    assert tokenize("people don't!") == ["people", "do", "n't"]


def test_tokenize_empty_and_punctuation_only() -> None:
    assert tokenize("") == []
    assert tokenize(" ... ! ? ; -- ") == []
    assert tokenize("wow!!! really?!") == ["wow", "!!!", "really", "?!"]  # runs: not dropped


# --------------------------------------------------------------------------- build


def test_specials_have_fixed_ids() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    assert vocab.itos[:4] == [PAD, START, END, UNK]
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    for i, tok in enumerate(SPECIALS):
        assert vocab.stoi[tok] == i


def test_build_orders_by_frequency_then_alphabetically() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    # a: 4, dog: 3, the: 2; the rest once, alphabetical
    assert vocab.itos[4:7] == ["a", "dog", "the"]
    singles = vocab.itos[7:]
    assert singles == sorted(singles)
    assert set(singles) == {
        "ball",
        "brown",
        "cat",
        "catches",
        "grass",
        "is",
        "on",
        "runs",
        "sleeps",
    }
    assert len(vocab) == 4 + 3 + 9


def test_build_min_count() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=2)
    assert vocab.itos == [*SPECIALS, "a", "dog", "the"]
    assert "cat" not in vocab
    assert "dog" in vocab


def test_build_max_size_counts_the_specials() -> None:
    vocab = Vocabulary.build(CAPTIONS, max_size=6)
    assert len(vocab) == 6
    assert vocab.itos == [*SPECIALS, "a", "dog"]
    assert Vocabulary.build(CAPTIONS, max_size=2).itos == list(SPECIALS)


def test_build_from_nothing_has_only_specials() -> None:
    assert Vocabulary.build([]).itos == list(SPECIALS)


# --------------------------------------------------------------------------- encode / decode


def test_encode_decode_round_trip() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    ids = vocab.encode("A dog catches the ball.")
    assert ids[0] == vocab.start_id
    assert ids[-1] == vocab.end_id
    assert ids[1:-1] == [vocab.stoi[w] for w in ["a", "dog", "catches", "the", "ball"]]
    assert vocab.decode(ids) == "a dog catches the ball"


def test_encode_without_specials() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    assert vocab.encode("a dog", add_special=False) == [vocab.stoi["a"], vocab.stoi["dog"]]


def test_unknown_words_become_unk() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    ids = vocab.encode("a zebra runs", add_special=False)
    assert ids == [vocab.stoi["a"], vocab.unk_id, vocab.stoi["runs"]]
    assert vocab.decode(ids) == f"a {UNK} runs"


def test_decode_stops_at_end_and_skips_pad_and_start() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    a, dog, cat = vocab.stoi["a"], vocab.stoi["dog"], vocab.stoi["cat"]
    ids = [vocab.start_id, a, vocab.pad_id, dog, vocab.end_id, cat, vocab.end_id]
    assert vocab.decode(ids) == "a dog"
    assert vocab.decode([vocab.end_id, a]) == ""
    assert vocab.decode([vocab.pad_id] * 3) == ""


def test_decode_accepts_tensor_ids_and_out_of_range_ids() -> None:
    import torch

    vocab = Vocabulary.build(CAPTIONS)
    ids = torch.tensor([vocab.start_id, vocab.stoi["cat"], len(vocab) + 5, vocab.end_id])
    assert vocab.decode(ids) == f"cat {UNK}"


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path) -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=1)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text()) == {"tokens": vocab.itos}
    loaded = Vocabulary.load(path)
    assert loaded.itos == vocab.itos
    assert loaded.stoi == vocab.stoi
    caption = "The brown dog sleeps on a zebra."
    assert loaded.encode(caption) == vocab.encode(caption)


def test_dict_round_trip() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    assert Vocabulary.from_dict(vocab.to_dict()).itos == vocab.itos


# --------------------------------------------------------------------------- constructor checks


@pytest.mark.parametrize(
    "tokens",
    [
        ["a", "dog"],  # no specials
        [START, PAD, END, UNK, "a"],  # specials in the wrong order
        [PAD, START, END],  # incomplete specials
        [],
    ],
)
def test_constructor_requires_specials_first(tokens) -> None:
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(tokens)


def test_constructor_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([*SPECIALS, "dog", "cat", "dog"])


def test_load_refuses_a_corrupted_file(tmp_path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"tokens": ["dog", "cat"]}))
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary.load(path)
