"""Everyday names for the 1000 ImageNet classes of the encoder's head, and tags from its output.

The names come from ``captioner/data/imagenet_concepts.tsv`` (package data, written once by
``scripts/make_concept_table.py`` from WordNet hypernyms and a reviewed override table): many
classes share one word ("tabby" and "Persian cat" are both "cat"), so :func:`tags` adds up the
probabilities of the classes behind each word before ranking them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch

NUM_CLASSES = 1000
TABLE = "imagenet_concepts.tsv"


@dataclass(frozen=True)
class ConceptTable:
    """The class -> word mapping, with each class's column in the table of distinct words."""

    lemmas: tuple[str, ...]  # the ImageNet class names, in the classifier's order
    words: tuple[str, ...]  # distinct everyday words, in order of first appearance
    plurals: tuple[str, ...]  # the plural of each word
    word_of_class: torch.Tensor  # (1000,) int64: index into ``words`` for each class
    thing: torch.Tensor  # (1000,) bool: an object, not a place (lakeside, valley, alp...)


@functools.lru_cache(maxsize=1)
def table() -> ConceptTable:
    """The shipped table, read once (it is package data: no WordNet needed at run time)."""
    text = (files("captioner") / "data" / TABLE).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    if len(rows) != NUM_CLASSES:
        raise ValueError(f"{TABLE} has {len(rows)} classes, expected {NUM_CLASSES}")
    words: dict[str, int] = {}
    plurals: list[str] = []
    index = []
    for i, row in enumerate(rows):
        if int(row[col["index"]]) != i:
            raise ValueError(f"{TABLE}: row {i} has index {row[col['index']]}")
        word = row[col["word"]]
        if word not in words:
            words[word] = len(words)
            plurals.append(row[col["plural"]])
        index.append(words[word])
    return ConceptTable(
        lemmas=tuple(r[col["lemma"]] for r in rows),
        words=tuple(words),
        plurals=tuple(plurals),
        word_of_class=torch.tensor(index, dtype=torch.long),
        thing=torch.tensor([r[col["kind"]] != "place" for r in rows], dtype=torch.bool),
    )


def concept(index: int) -> tuple[str, str]:
    """ImageNet class index -> (everyday word, its plural), e.g. 281 (tabby) -> ("cat", "cats")."""
    t = table()
    if not 0 <= index < NUM_CLASSES:
        raise IndexError(f"ImageNet class index must be in 0..{NUM_CLASSES - 1}, got {index}")
    w = int(t.word_of_class[index])
    return t.words[w], t.plurals[w]


def word_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """(B, 1000) class probabilities -> (B, W) probabilities of the distinct words (summed)."""
    t = table()
    probs = probs.float()
    out = torch.zeros(probs.size(0), len(t.words), device=probs.device)
    return out.index_add_(1, t.word_of_class.to(probs.device), probs)


def batch_tags(probs: torch.Tensor, k: int = 5) -> list[list[dict[str, float | str]]]:
    """(B, 1000) class probabilities -> for each row, the top ``k`` words with summed scores."""
    if k < 1 or probs.size(0) == 0:
        return [[] for _ in range(probs.size(0))]
    per_word = word_probabilities(probs)
    scores, idx = per_word.topk(min(k, per_word.size(1)), dim=1)
    words = table().words
    return [
        [{"name": words[i], "score": round(s, 4)} for s, i in zip(srow, irow, strict=True)]
        for srow, irow in zip(scores.cpu().tolist(), idx.cpu().tolist(), strict=True)
    ]


def tags(probs: torch.Tensor | np.ndarray | list[float], k: int = 5) -> list[dict]:
    """One image's (1000,) class probabilities -> ``[{"name", "score"}]``, best first.

    Classes sharing a word pool their probability, so a picture that the head splits between
    "tabby", "tiger cat" and "Egyptian cat" is tagged "cat" with their sum.
    """
    if isinstance(probs, torch.Tensor):
        p = probs.detach().float().cpu()
    else:
        p = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    if p.shape != (NUM_CLASSES,):
        raise ValueError(f"expected {NUM_CLASSES} class probabilities, got shape {tuple(p.shape)}")
    return batch_tags(p.unsqueeze(0), k)[0]
