"""The ImageNet concept table and the encoder's ImageNet head: everyday names and tags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.concepts import NUM_CLASSES, batch_tags, concept, table, tags
from captioner.encoders import ImageNetHead, build_encoder

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_every_class_has_an_everyday_word_and_plural() -> None:
    for index in range(NUM_CLASSES):
        word, plural = concept(index)
        assert word.strip()
        assert plural.strip()
        assert word == word.strip()
    assert len(table().words) < NUM_CLASSES  # classes share words: that is the point


@pytest.mark.parametrize(
    ("lemma", "word"),
    [
        ("tabby", "cat"),
        ("Egyptian cat", "cat"),
        ("espresso", "coffee"),
        ("moped", "motorbike"),
        ("golden retriever", "dog"),
        ("German shepherd", "dog"),
        ("Granny Smith", "apple"),
        ("goldfinch", "bird"),
        ("sports car", "car"),
        ("fire engine", "fire truck"),
    ],
)
def test_reviewed_examples_map_to_their_everyday_word(lemma: str, word: str) -> None:
    index = table().lemmas.index(lemma)
    assert concept(index)[0] == word


def test_landscapes_are_places_and_everything_else_a_thing() -> None:
    t = table()
    places = {t.lemmas[i] for i in range(NUM_CLASSES) if not t.thing[i]}
    assert {"lakeside", "valley", "seashore", "alp", "volcano"} <= places
    assert len(places) < 20
    for thing in ("tabby", "espresso", "moped", "boathouse", "pier"):
        assert t.thing[t.lemmas.index(thing)]


def test_plurals() -> None:
    lemmas = table().lemmas
    assert concept(lemmas.index("tabby")) == ("cat", "cats")
    assert concept(lemmas.index("tench")) == ("fish", "fish")
    assert concept(lemmas.index("school bus")) == ("bus", "buses")
    with pytest.raises(IndexError):
        concept(NUM_CLASSES)


def test_tags_add_up_the_classes_that_share_a_word() -> None:
    lemmas = table().lemmas
    probs = np.zeros(NUM_CLASSES, dtype=np.float32)
    probs[lemmas.index("tabby")] = 0.25
    probs[lemmas.index("Egyptian cat")] = 0.25
    probs[lemmas.index("orange")] = 0.4
    probs[lemmas.index("espresso")] = 0.1
    got = tags(probs, k=2)
    assert [t["name"] for t in got] == ["cat", "orange"]
    assert got[0]["score"] == pytest.approx(0.5)
    assert len(tags(probs, k=7)) == 7
    with pytest.raises(ValueError, match="1000"):
        tags(probs[:10])
    batch = batch_tags(torch.from_numpy(np.stack([probs, probs[::-1].copy()])), k=1)
    assert batch[0] == [{"name": "cat", "score": 0.5}]
    assert len(batch[1]) == 1


@pytest.fixture(scope="module")
def lite0():
    return build_encoder("efficientnet_lite0").eval()


def _probs(encoder, image: np.ndarray) -> torch.Tensor:
    x = encoder.preprocess.normalize(encoder.preprocess.to_uint8(Image.fromarray(image))[None])
    with torch.inference_mode():
        _, pooled = encoder(x)
    return encoder.head(pooled)[0]


def test_the_default_encoder_head_knows_a_cat_and_a_coffee(lite0) -> None:
    from skimage import data

    cat = _probs(lite0, data.chelsea())
    assert cat.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert set(cat.topk(5).indices.tolist()) & set(CAT_CLASSES)
    assert tags(cat)[0]["name"] == "cat"
    coffee = _probs(lite0, data.coffee())
    top5 = {table().lemmas[i] for i in coffee.topk(5).indices.tolist()}
    assert top5 & {"espresso", "cup", "coffee mug"}
    assert tags(coffee)[0]["name"] in ("coffee", "cup")


def test_the_head_changes_no_state_dict(lite0) -> None:
    # Fine-tuned bundles save encoder.trunk; the head must not add keys to it or the encoder.
    assert isinstance(lite0.head, ImageNetHead)
    assert lite0.head.num_classes == NUM_CLASSES
    assert not any("head." in k and "conv_head" not in k for k in lite0.state_dict())
    assert not any(k.startswith("classifier") for k in lite0.trunk.model.state_dict())


def test_encoders_without_a_head_give_no_probabilities() -> None:
    toy = build_encoder("toy")
    assert toy.head is None
