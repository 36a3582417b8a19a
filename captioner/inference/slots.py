"""Naming what the caption data never named: object slots filled from the image.

A caption model trained with object nouns replaced by slot tokens (``<obj>``, and ``<objs>``
after a count) writes the slot where the noun goes; the word comes from the encoder's ImageNet
head applied to the image region the decoder attends to at that step (its attention-weighted
grid feature), mapped to an everyday name (:mod:`captioner.concepts`). The sentence comes from
the LSTM, the noun from the region it looks at: the idea of DNOC and Neural Baby Talk, over
the 1000 ImageNet classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from captioner.concepts import table, word_probabilities
from captioner.vocab import SLOT, SLOTS

Head = Callable[[torch.Tensor], torch.Tensor]  # (B, C) features -> (B, 1000) probabilities


def slot_tokens(itos: Sequence[str]) -> dict[int, bool]:
    """The vocabulary's slot ids -> whether each is the plural slot (empty: no slots)."""
    return {i: tok == SLOTS for i, tok in enumerate(itos) if tok in (SLOT, SLOTS)}


@torch.inference_mode()
def fill_slots(
    words: Sequence[str],
    attention: torch.Tensor,
    features: torch.Tensor,
    head: Head,
    image_probs: torch.Tensor | None = None,
) -> tuple[list[str], list[dict]]:
    """Replace each slot word by the everyday name of what its step attended to.

    ``words`` is one caption's tokens, ``attention`` its (T, N) attention (one row per word,
    ``<end>`` excluded or not), ``features`` the image's (N, C) grid. Returns the new words and,
    per filled slot, ``{"position", "name", "score"}``.
    """
    t = table()
    filled, slots = list(words), []
    positions = [i for i, w in enumerate(words) if w in (SLOT, SLOTS)]
    if not positions:
        return filled, slots
    weights = attention[positions].to(features.device, features.dtype)  # (S, N)
    context = weights @ features  # (S, C): the attended region of each slot
    probs = head(context).float()  # (S, 1000)
    if image_probs is not None:
        # A class must fit both the attended region and the whole picture: a single cell's
        # feature is out of the head's training distribution, the picture's mean is not.
        # Multiplying per class before pooling into words keeps a word with many vague
        # classes (the 120 dog breeds) from outvoting one the two agree on.
        probs = probs * image_probs.reshape(1, -1).to(probs.device).float()
    probs = probs * t.thing.to(probs.device)  # a slot names a thing, never a place ("lake")
    probs = word_probabilities(probs)  # (S, W): class probabilities pooled per word
    probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
    scores, best = probs.max(dim=1)
    for pos, score, w in zip(positions, scores.tolist(), best.tolist(), strict=True):
        name = t.plurals[w] if words[pos] == SLOTS else t.words[w]
        filled[pos] = name
        if pos and filled[pos - 1] in ("a", "an"):  # the article was written before the noun
            filled[pos - 1] = "an" if name[0] in "aeiou" else "a"
        slots.append({"position": pos, "name": name, "score": round(score, 4)})
    return filled, slots
