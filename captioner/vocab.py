"""Caption tokenizer and vocabulary."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from captioner.metrics import ptb_tokenize

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


def tokenize(text: str) -> list[str]:
    """Lowercase, split off punctuation and clitics (PTB-like), drop punctuation.

    The same tokenizer the metrics use, so training targets and evaluation agree.
    """
    return ptb_tokenize(text).split()


class Vocabulary:
    """Token <-> id mapping with the four special tokens at ids 0..3."""

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None):
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(tok for caption in captions for tok in tokenize(caption))
        words = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Caption -> ids in ``<start> ... <end>`` if ``add_special``; unknown words: ``<unk>``."""
        ids = [self.stoi.get(t, self.unk_id) for t in tokenize(text)]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> caption text, stopping at ``<end>`` and skipping other special tokens."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"tokens": self.itos}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        return cls(d["tokens"])

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=0))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        return cls.from_dict(json.loads(Path(path).read_text()))
