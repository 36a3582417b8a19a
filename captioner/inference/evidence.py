"""The evidence behind a grounded caption: what the encoder's ImageNet head sees in a picture.

The reviewed tables (``person_classes.tsv``, ``scene_support.tsv``), the background
prototypes (``background_prototypes.safetensors``, written by
``scripts/make_background_prototypes.py``), class-activation regions over the feature grid,
and the one place of every grounding threshold, :class:`GroundingConfig`. The rules that use
them are in :mod:`captioner.inference.grounding`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files

import torch

from captioner.concepts import NUM_CLASSES, table, word_probabilities

PROTOTYPES = "background_prototypes.safetensors"
PERSON_TABLE = "person_classes.tsv"
SCENE_TABLE = "scene_support.tsv"


@dataclass(frozen=True)
class GroundingConfig:
    """Every threshold of the grounding rules, in one place (probabilities unless named)."""

    person: float = 0.10  # summed clothing / role classes: a person is there
    scene: float = 0.50  # a place word (lake, mountain...): a landscape, described by its scene
    background_class: float = 0.10  # summed supporting classes of a background phrase
    background_prototype: float = 0.45  # cosine of the border cells to the background's look
    synthetic: float = 0.40  # cosine of the border to a synthetic-scene background
    sure: float = 0.50  # a thing this sure is always named
    hedge: float = 0.30  # a subject below this is said with "probably"
    weak: float = 0.08  # below this: "a photo, perhaps of a ..."
    alternative: float = 0.50  # a second word this close to the first: "an X or a Y"
    region: float = 0.50  # a grid cell is part of a region at this fraction of the map's range
    region_peak: float = 0.60  # a further region's peak must reach this fraction of the first


# -- tables -------------------------------------------------------------------------------


def _rows(name: str) -> list[list[str]]:
    text = (files("captioner") / "data" / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@functools.lru_cache(maxsize=1)
def person_classes() -> dict[int, str]:
    """ImageNet class index -> what the caption says after "a person" ("in a suit")."""
    found = {int(r[0]): r[2] for r in _rows(PERSON_TABLE)}
    if any(not 0 <= i < NUM_CLASSES for i in found):
        raise ValueError(f"{PERSON_TABLE}: a class index outside 0..{NUM_CLASSES - 1}")
    return found


@dataclass(frozen=True)
class ScenePhrase:
    key: str  # "lake", "wooden pier"
    alone: str  # "a lakeside"
    with_thing: str  # "by a lake"
    classes: tuple[int, ...]


@functools.lru_cache(maxsize=1)
def scene_table() -> dict[str, ScenePhrase]:
    """Scene word -> how it is said and the classes that support it."""
    return {
        r[0]: ScenePhrase(r[0], r[1], r[2], tuple(int(i) for i in r[3].split()))
        for r in _rows(SCENE_TABLE)
    }


def phrase_key(phrase: str) -> str:
    """``on the wooden pier`` -> ``wooden pier``; ``on a plain dark background`` -> ``dark
    background``: a background phrase without its preposition, article and "plain"."""
    text = re.sub(r"^(in front of|on|in|by|at|near)\s+", "", phrase.strip().lower())
    return re.sub(r"^(a|an|the)\s+", "", text).replace("plain ", "")


@functools.lru_cache(maxsize=1)
def background_phrases() -> tuple[str, ...]:
    """Every background phrase the caption models of this project learned, longest first."""
    from captioner.data.scene_grammar import _BACKGROUND_PHRASES

    found = {c for r in _rows("background_phrases.tsv") for c in r[2:4] if c.strip()}
    found |= {p for pair in _BACKGROUND_PHRASES.values() for p in pair}
    return tuple(sorted(found, key=lambda p: (-len(p), p)))


@functools.lru_cache(maxsize=1)
def synthetic_nouns() -> dict[str, str]:
    """The synthetic scenes' own nouns (singular and plural) -> the singular."""
    from captioner.data.scene_grammar import _NOUNS

    return {form: pair[0] for pair in _NOUNS.values() for form in pair}


#: nouns that say a person is there; the caption may hold one only with the person signal
PERSON_NOUNS = frozenset("person people astronaut astronauts cameraman cameramen".split())
COUNTS = {"two": 2, "three": 3, "pair": 2, "several": 2, "group": 3}


@dataclass(frozen=True)
class Prototypes:
    """Unit-length mean features of the training backgrounds, by phrase key."""

    encoder: str
    keys: tuple[str, ...]
    vectors: torch.Tensor  # (K, C)
    synthetic: frozenset[str]  # the keys of the synthetic scenes' backgrounds

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def shipped() -> Prototypes:
        """The prototypes of ``captioner/data/background_prototypes.safetensors``."""
        from safetensors import safe_open

        from captioner.data.scene_grammar import _BACKGROUND_PHRASES

        path = files("captioner") / "data" / PROTOTYPES
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            vectors = f.get_tensor("prototypes").float()
        keys = tuple(json.loads(meta["phrases"]))
        synthetic = frozenset(phrase_key(p[0]) for p in _BACKGROUND_PHRASES.values())
        return Prototypes(meta["encoder"], keys, vectors, synthetic & set(keys))

    def similarity(self, features: torch.Tensor) -> dict[str, float]:
        """(N, C) grid -> cosine of its border cells' mean to each prototype."""
        border = torch.nn.functional.normalize(border_mean(features), dim=0)
        sims = self.vectors.to(border.device) @ border
        return dict(zip(self.keys, sims.tolist(), strict=True))


def border_mean(features: torch.Tensor) -> torch.Tensor:
    """(N, C) grid -> (C,) mean of its outer ring of cells: where the background shows."""
    rows, cols = _square(features.size(0))
    ring = [
        i for i in range(rows * cols) if i // cols in (0, rows - 1) or i % cols in (0, cols - 1)
    ]
    return features[ring].float().mean(0)


def _square(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    return (side, n // side) if side * side == n else (1, n)


# -- evidence -----------------------------------------------------------------------------


@dataclass
class Evidence:
    """What the head sees in one picture.

    ``probs``: (1000,) whole-picture class probabilities; ``cell_logits``: (N, 1000) the
    head's logits of each grid cell (a class-activation map per class; None: no counting);
    ``grid``: its (rows, cols); ``backgrounds``: phrase key -> border similarity.
    """

    probs: torch.Tensor
    cell_logits: torch.Tensor | None = None
    grid: tuple[int, int] = (7, 7)
    backgrounds: dict[str, float] = field(default_factory=dict)
    synthetic: frozenset[str] = frozenset()  # the phrase keys of synthetic-scene backgrounds

    def __post_init__(self) -> None:
        self.probs = self.probs.float().cpu()
        self.words = word_probabilities(self.probs.unsqueeze(0))[0]  # (W,)

    @classmethod
    def of(
        cls,
        features: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        probs: torch.Tensor,
        prototypes: Prototypes | None = None,
    ) -> Evidence:
        """From one picture's (N, C) grid and the head's linear layer (the CAM is its logits
        per cell: the head is linear on the grid's mean, so the mean of these is the
        picture's logit)."""
        cells = torch.nn.functional.linear(
            features.float(), weight.to(features.device), bias.to(features.device)
        )
        sims = prototypes.similarity(features) if prototypes is not None else {}
        synthetic = prototypes.synthetic if prototypes is not None else frozenset()
        return cls(probs, cells.cpu(), _square(features.size(0)), sims, synthetic)

    def word(self, name: str) -> float:
        """The head's summed probability of an everyday word (0 for a word it lacks)."""
        t = table()
        try:
            return float(self.words[t.words.index(name)])
        except ValueError:
            return 0.0

    def person(self) -> tuple[float, str]:
        """(summed clothing / role probability, the phrase of the best such class)."""
        classes = person_classes()
        idx = torch.tensor(sorted(classes))
        p = self.probs[idx]
        return float(p.sum()), classes[int(idx[int(p.argmax())])]

    def support(self, classes: Sequence[int]) -> float:
        return float(self.probs[list(classes)].sum()) if classes else 0.0

    def things(self, k: int = 2) -> list[tuple[str, float]]:
        """The best ``k`` thing words (no places, no person classes) with their scores."""
        t = table()
        mask = t.thing.clone()
        mask[list(person_classes())] = False
        words = word_probabilities((self.probs * mask).unsqueeze(0))[0]
        scores, idx = words.topk(k)
        return [(t.words[i], s) for s, i in zip(scores.tolist(), idx.tolist(), strict=True)]

    def scene(self) -> tuple[str, float] | None:
        """The strongest place word of :func:`scene_table` and its summed probability."""
        best = max(scene_table().values(), key=lambda s: self.support(s.classes))
        return best.key, self.support(best.classes)

    def regions(self, name: str, config: GroundingConfig) -> int:
        """Separate regions of the picture that show ``name`` (see :func:`regions`)."""
        t = table()
        if self.cell_logits is None or name not in t.words:
            return 0
        classes = (t.word_of_class == t.words.index(name)).nonzero().flatten()
        best = int(classes[int(self.probs[classes].argmax())])
        return regions(self.cell_logits[:, best], self.grid, config)


def regions(cam: torch.Tensor, grid: tuple[int, int], config: GroundingConfig | None = None) -> int:
    """Connected regions (4-neighbours) of a (N,) class-activation map over a ``grid``: cells
    at ``config.region`` of the map's range or more; a region counts when its peak reaches
    ``config.region_peak`` of the map's range above its minimum."""
    config = config or GroundingConfig()
    rows, cols = grid
    m = cam.float().reshape(rows, cols)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo < 1e-6:
        return 1
    norm = (m - lo) / (hi - lo)
    active = (norm >= config.region).tolist()
    seen = [[False] * cols for _ in range(rows)]
    count = 0
    for r in range(rows):
        for c in range(cols):
            if not active[r][c] or seen[r][c]:
                continue
            stack, peak = [(r, c)], 0.0
            seen[r][c] = True
            while stack:
                y, x = stack.pop()
                peak = max(peak, float(norm[y, x]))
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < rows and 0 <= nx < cols and active[ny][nx] and not seen[ny][nx]:
                        seen[ny][nx] = True
                        stack.append((ny, nx))
            count += peak >= config.region_peak
    return count
