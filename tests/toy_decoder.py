"""A decoder with hand-written log-probs, for testing the search on its own.

``ToyDecoder(vocab_size, logits)`` calls ``logits(image, words)`` for the next-token logits after
the word ids ``words`` (no ``<start>``), so a test can say exactly which captions the "model"
likes. It speaks the interface ``captioner.decoding`` drives: ``config``, ``vocab_size``,
``init_state`` and ``step``. Features are (B, 1, 1) tensors holding each image's id.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

from captioner.models.caption import CaptionDecoderConfig, DecoderState

PAD, START, END = 0, 1, 2
FIRST_WORD = 3  # ids below are special tokens
Logits = Callable[[int, tuple[int, ...]], Sequence[float]]
WIDTH = 64  # the longest prefix a state can hold


class ToyDecoder:
    def __init__(self, vocab_size: int, logits: Logits):
        self.config = CaptionDecoderConfig(vocab_size=vocab_size)
        self.logits = logits
        self.calls = 0  # step() calls, to see how early the search stopped
        self._cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def log_probs(self, image: int, words: tuple[int, ...]) -> torch.Tensor:
        """(V,) float32 next-token log-probs after ``words``."""
        key = (image, words)
        if key not in self._cache:
            logits = torch.tensor(self.logits(image, words), dtype=torch.float32)
            self._cache[key] = logits.log_softmax(-1)
        return self._cache[key]

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def init_state(self, features: torch.Tensor) -> DecoderState:
        B = features.size(0)
        words = torch.full((B, WIDTH), -1, dtype=torch.long)  # the prefix, -1 = empty
        image = features[:, 0, :1].round().long()  # (B, 1)
        return DecoderState(words, image, None, None)

    def step(self, state: DecoderState, tokens: torch.Tensor):
        self.calls += 1
        words, image = state.h.clone(), state.c
        out = []
        for r in range(words.size(0)):
            if int(tokens[r]) != START:
                words[r, int((words[r] >= 0).sum())] = tokens[r]
            prefix = tuple(int(w) for w in words[r] if w >= 0)
            out.append(self.log_probs(int(image[r, 0]), prefix))
        return torch.stack(out), DecoderState(words, image, None, None), None


def images(*ids: int) -> torch.Tensor:
    """The (B, 1, 1) features that select images ``ids``."""
    return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1)


def log_prob(model: ToyDecoder, image: int, words: Sequence[int], end: bool = True) -> float:
    """log P(words [+ <end>]) under the toy model, token by token in float64."""
    total, prefix = 0.0, ()
    for token in [*words, END] if end else words:
        total += float(model.log_probs(image, prefix)[token])
        prefix = (*prefix, token) if token != END else prefix
    return total


def brute_force(
    model: ToyDecoder, image: int, max_len: int, min_len: int = 1
) -> list[tuple[float, tuple[int, ...]]]:
    """Every finished caption of ``min_len``..``max_len`` words, most likely first."""
    word_ids = range(FIRST_WORD, model.vocab_size)
    found = []
    for n in range(min_len, max_len + 1):
        for words in itertools.product(word_ids, repeat=n):
            found.append((log_prob(model, image, words), words))
    found = [f for f in found if f[0] > -math.inf]
    return sorted(found, key=lambda f: -f[0])


def random_logits(vocab_size: int, seed: int, scale: float = 2.5, end_bias: float = -0.5) -> Logits:
    """Pseudo-random logits that depend on the seed, the image and the whole prefix."""

    def logits(image: int, words: tuple[int, ...]) -> list[float]:
        g = torch.Generator().manual_seed(hash((seed, image, words)) & 0x7FFFFFFF)
        values = torch.randn(vocab_size, generator=g) * scale
        values[END] += end_bias
        return values.tolist()

    return logits
