"""Object slots: the word a caption writes for ``<obj>`` comes from the region it attends to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioner.concepts import concept, table
from captioner.decoding import SearchConfig
from captioner.inference import CaptionPipeline
from captioner.inference.slots import SLOT, SLOTS, fill_slots, slot_tokens
from captioner.models.caption import CaptionDecoderConfig, DecoderState
from captioner.vocab import Vocabulary

TABBY, RETRIEVER = 281, 207  # ImageNet classes whose everyday names are "cat" and "dog"
C = 4


def head(features: torch.Tensor) -> torch.Tensor:
    """A stand-in ImageNet head: feature 0 says tabby, feature 1 says golden retriever."""
    logits = torch.full((features.size(0), 1000), -20.0)
    logits[:, TABBY] = 10 * features[:, 0]
    logits[:, RETRIEVER] = 10 * features[:, 1]
    return logits.softmax(-1)


CAT_CELL = torch.tensor([1.0, 0.0, 0.0, 0.0])
DOG_CELL = torch.tensor([0.0, 1.0, 0.0, 0.0])


def test_the_attended_cell_names_the_slot() -> None:
    grid = torch.stack([CAT_CELL, DOG_CELL])  # (N=2, C)
    words = ["a", SLOT, "next", "to", "two", SLOTS]
    attention = torch.tensor(
        [[0.5, 0.5], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.1, 0.9]]
    )
    filled, named = fill_slots(words, attention, grid, head)
    assert filled == ["a", "cat", "next", "to", "two", "dogs"]
    assert [(n["position"], n["name"]) for n in named] == [(1, "cat"), (5, "dogs")]
    flipped, _ = fill_slots(words, attention.flip(1), grid, head)  # look elsewhere: other words
    assert flipped[1] == "dog"
    assert flipped[5] == "cats"


def test_the_article_before_a_slot_follows_the_word() -> None:
    espresso = 967  # "coffee"; moped (665) is "motorbike"
    grid = torch.zeros(1, C)

    def says(index: int):
        def fixed(features: torch.Tensor) -> torch.Tensor:
            probs = torch.zeros(features.size(0), 1000)
            probs[:, index] = 1.0
            return probs

        return fixed

    one = torch.ones(2, 1)
    assert fill_slots(["a", SLOT], one, grid, says(espresso))[0] == ["a", "coffee"]
    assert fill_slots(["an", SLOT], one, grid, says(665))[0] == ["a", "motorbike"]
    assert fill_slots(["a", SLOT], one, grid, says(948))[0][0] == "an"  # 948: Granny Smith


class LookingDecoder:
    """Writes "a <obj>" and looks, when writing the slot, at the cell whose feature 3 is set:
    the image, not the decoder, decides where the slot's word comes from."""

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.config = CaptionDecoderConfig(vocab_size=len(vocab))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def init_state(self, features: torch.Tensor) -> DecoderState:
        steps = torch.zeros(features.size(0), 1)
        return DecoderState(steps, features.flatten(1), None, None)

    def step(self, state: DecoderState, tokens: torch.Tensor):
        steps, flat = state.h, state.c
        grid = flat.view(flat.size(0), -1, C)
        attention = (grid[:, :, 3] * 20).softmax(-1)  # (B, N)
        plan = [self.vocab.stoi["a"], self.vocab.stoi[SLOT], self.vocab.end_id]
        logits = torch.full((flat.size(0), len(self.vocab)), -30.0)
        for r in range(flat.size(0)):
            logits[r, plan[min(int(steps[r, 0]), 2)]] = 0.0
        return logits.log_softmax(-1), DecoderState(steps + 1, flat, None, None), attention


def test_the_pipeline_fills_slots_from_where_the_decoder_looks() -> None:
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", SLOT, SLOTS])
    assert slot_tokens(vocab.itos) == {5: False, 6: True}
    salient = torch.tensor([0.0, 0.0, 0.0, 1.0])
    image_cat = torch.stack([CAT_CELL + salient, DOG_CELL])  # the decoder looks at the cat
    image_dog = torch.stack([CAT_CELL, DOG_CELL + salient])  # ... and here at the dog
    pipeline = CaptionPipeline(
        LookingDecoder(vocab), vocab, SearchConfig(beam_size=1, max_len=5), torch.device("cpu")
    )
    pipeline.head = head
    results = pipeline.caption_features(torch.stack([image_cat, image_dog]))
    assert [r.caption for r in results] == ["a cat", "a dog"]
    assert results[0].slots[0]["name"] == "cat"
    assert results[0].slots[0]["score"] > 0.9
    assert results[0].attention is None  # attention was kept for naming, not returned
    assert results[0].alternatives[0]["caption"] == "a cat"
    pipeline.head = None  # no head: the slot stays a slot rather than a guess
    assert pipeline.caption_features(image_cat[None])[0].caption == f"a {SLOT}"


def test_the_whole_picture_vetoes_what_a_single_region_cannot_show() -> None:
    grid = torch.stack([CAT_CELL * 0.1 + DOG_CELL * 0.05, DOG_CELL])
    words, attention = ["a", SLOT], torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert fill_slots(words, attention, grid, head)[0][1] == "cat"  # the cell leans to cat
    picture = torch.zeros(1000)
    picture[RETRIEVER] = 1.0  # ... but the whole image is plainly a dog
    assert fill_slots(words, attention, grid, head, picture)[0][1] == "dog"


def test_a_word_the_region_and_picture_agree_on_beats_a_word_of_many_vague_classes() -> None:
    lemmas = table().lemmas
    dogs = [i for i in range(1000) if concept(i)[0] == "dog"][:100]
    koala = lemmas.index("koala")

    def vague(features: torch.Tensor) -> torch.Tensor:  # the region: 0.6 spread over 100 breeds
        probs = torch.zeros(features.size(0), 1000)
        probs[:, dogs] = 0.6 / len(dogs)
        probs[:, koala] = 0.3
        return probs

    picture = torch.zeros(1000)
    picture[dogs] = 0.5 / len(dogs)
    picture[koala] = 0.4  # both pool more "dog" than "koala", but agree on the koala
    assert fill_slots(["a", SLOT], torch.ones(2, 1), torch.zeros(1, C), vague, picture)[0] == [
        "a",
        "koala",
    ]


def test_a_slot_never_names_a_place() -> None:
    lakeside, boathouse = table().lemmas.index("lakeside"), table().lemmas.index("boathouse")

    def shore(features: torch.Tensor) -> torch.Tensor:
        probs = torch.zeros(features.size(0), 1000)
        probs[:, lakeside], probs[:, boathouse] = 0.9, 0.1
        return probs

    filled, named = fill_slots(["a", SLOT], torch.ones(2, 1), torch.zeros(1, C), shore)
    assert filled == ["a", "boathouse"]
    assert named[0]["score"] == pytest.approx(1.0)


def test_replayed_attention_names_slots_as_the_search_attention_does() -> None:
    """The search keeps no attention unless asked; slot captions are replayed for it instead.
    Both ways must name the same words with the same scores (the shipped model, real photos)."""
    import captioner
    from captioner.inference import default_bundle_dir

    model = captioner.load(default_bundle_dir("caption"), device="cpu")
    examples = Path(__file__).resolve().parent.parent / "examples"
    photos = sorted(examples.glob("photo-*.jpg"))
    replayed = model.caption(photos)
    kept = model.caption(photos, return_attention=True)
    assert any(r.slots for r in replayed)
    for a, b in zip(replayed, kept, strict=True):
        assert a.caption == b.caption
        assert a.slots == b.slots
        assert a.attention is None
        assert b.attention is not None
