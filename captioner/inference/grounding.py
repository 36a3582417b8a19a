"""Decode-time grounding: every word of a caption backed by evidence in the image.

The caption model writes fluent sentences, but on real photographs it also writes what its
training captions made likely: a background it cannot see ("on a wooden pier"), a second copy
of the subject ("a cup next to a cup"), shapes of the synthetic scenes. This module checks
each of the n-best captions against what the encoder's ImageNet head sees, and keeps the
first one whose words all have evidence, else writes a short one from the evidence itself:

- a background or scene phrase needs a head class that fits it (``scene_support.tsv``) or a
  picture border that looks like that background (``background_prototypes.safetensors``);
  a landscape (a place class firing strongly) is described by its scene ("a lakeside");
- a count or a repeated noun needs that many separate regions in the class-activation map
  of the noun's class over the feature grid (connected components);
- a person word needs the person signal: the summed probability of the clothing and role
  classes in ``person_classes.tsv`` ("a person in a military uniform"; no gender or age);
- a thing the head is sure of is named, so the caption is never less than its tags;
- a subject the head is unsure of is hedged ("probably a koala", "a wombat or a wallaby");
- pictures of the model's own synthetic scenes (the border matches one of their backgrounds)
  keep the decoder's caption: there its words were measured right.

``confidence`` is the evidence of the named subject on one scale for all kinds: 0.5 at the
threshold where the word is said plainly, below 0.5 hedged, 1 certain. All thresholds live
in :class:`GroundingConfig`; they were chosen on the ``tune`` split of the real-photo set and
the model's own synthetic scenes, never on ``heldout``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from captioner.concepts import table
from captioner.decoding import Hypothesis
from captioner.inference.evidence import (
    COUNTS,
    PERSON_NOUNS,
    PROTOTYPES,
    Evidence,
    GroundingConfig,
    Prototypes,
    background_phrases,
    border_mean,
    person_classes,
    phrase_key,
    regions,
    scene_table,
    synthetic_nouns,
)

__all__ = [
    "PROTOTYPES",
    "Candidate",
    "Evidence",
    "Grounded",
    "GroundingConfig",
    "Prototypes",
    "border_mean",
    "decoder_confidence",
    "ground",
    "ground_results",
    "person_classes",
    "phrase_key",
    "regions",
    "scene_table",
]

# -- the rules ----------------------------------------------------------------------------


@dataclass
class Candidate:
    """One n-best caption after slot filling: its text, its slots, the decoder's confidence."""

    caption: str
    slots: list[dict[str, Any]] = field(default_factory=list)
    confidence: float = 0.0


@dataclass
class Grounded:
    """The grounded caption, its confidence and the evidence it rests on."""

    caption: str
    confidence: float
    person: dict[str, Any] | None = None
    scene: dict[str, Any] | None = None
    hedged: bool = False
    kept: int | None = None  # the index of the n-best caption kept (None: rewritten)


def _scale(evidence: float, threshold: float) -> float:
    """Evidence -> confidence: 0.5 at the threshold of saying it plainly, 1 at certainty."""
    e = min(max(evidence, 0.0), 1.0)
    if e >= threshold:
        return 0.5 + 0.5 * (e - threshold) / max(1e-9, 1.0 - threshold)
    return 0.5 * e / threshold


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _background(caption: str) -> tuple[str, str] | None:
    """(the background phrase in the caption, the caption without it), if it has one."""
    for phrase in background_phrases():
        if re.search(rf"\b{re.escape(phrase)}\b", caption):
            rest = re.sub(rf"\s*\b{re.escape(phrase)}\b", "", caption).strip()
            rest = re.sub(r"\bcan be seen$", "can be seen in the picture", rest)
            return phrase, rest
    return None


def _supported_background(key: str, ev: Evidence, cfg: GroundingConfig) -> bool:
    scene = scene_table().get(key)
    if scene is not None and ev.support(scene.classes) >= cfg.background_class:
        return True
    return ev.backgrounds.get(key, -1.0) >= cfg.background_prototype


def _nouns(cand: Candidate) -> list[str]:
    """The caption's nouns, in order: its slot names and the decoder's own object nouns."""
    said = cand.caption.split()
    nouns = [_singular(s["name"]) for s in cand.slots]
    slot_words = {w for s in cand.slots for w in s["name"].split()}
    syn = synthetic_nouns()
    for i, w in enumerate(said):
        if w in slot_words:
            continue
        if w in syn or w in PERSON_NOUNS:
            nouns.append(syn.get(w, w))
        elif w == "coffee" and i + 1 < len(said) and said[i + 1] in ("cup", "cups"):
            nouns.append("coffee cup")
    return nouns


def _singular(name: str) -> str:
    t = table()
    if name in t.words:
        return name
    return t.words[t.plurals.index(name)] if name in t.plurals else name


def _claimed(cand: Candidate, nouns: Sequence[str]) -> dict[str, int]:
    """Noun -> how many the caption says there are (only nouns said to be more than one)."""
    said = cand.caption.split()
    claims: dict[str, int] = {}
    for n in set(nouns):
        if nouns.count(n) > 1:
            claims[n] = nouns.count(n)
    number = max((COUNTS[w] for w in said if w in COUNTS), default=0)
    plural = [_singular(s["name"]) for s in cand.slots if _singular(s["name"]) != s["name"]]
    syn_plural = [
        synthetic_nouns()[w] for w in said if w in synthetic_nouns() and synthetic_nouns()[w] != w
    ]
    for n in plural + syn_plural:
        claims[n] = max(claims.get(n, 0), number or 2)
    return claims


def _noun_evidence(noun: str, ev: Evidence, person: float) -> float:
    if noun in PERSON_NOUNS:
        return person
    if noun == "coffee cup":
        return max(ev.word("coffee"), ev.word("cup"))
    return ev.word(noun)


def _check(
    cand: Candidate, ev: Evidence, cfg: GroundingConfig, person: float
) -> tuple[str, float] | None:
    """The candidate with unsupported background removed and its evidence, or None when a
    noun, a count or a pair has no evidence."""
    caption = cand.caption
    bg = _background(caption)
    if bg is not None and not _supported_background(phrase_key(bg[0]), ev, cfg):
        caption = bg[1]
    nouns = _nouns(cand)
    if not nouns:
        return None
    for noun, n in _claimed(cand, nouns).items():
        if ev.regions(noun, cfg) < n:
            return None
    scores = [_noun_evidence(n, ev, person) for n in nouns]
    if min(scores) < cfg.weak or any(n in PERSON_NOUNS for n in nouns):
        return None
    return caption, scores[0]


def ground(
    candidates: Sequence[Candidate], ev: Evidence, cfg: GroundingConfig | None = None
) -> Grounded:
    """The grounded caption of one picture from its n-best ``candidates`` (best first)."""
    cfg = cfg or GroundingConfig()
    synthetic = max((ev.backgrounds.get(k, -1.0) for k in ev.synthetic), default=-1.0)
    if candidates and synthetic >= cfg.synthetic:
        # a picture of the model's own synthetic scenes: its words were measured right there
        return Grounded(candidates[0].caption, round(candidates[0].confidence, 4), kept=0)
    person, wearing = ev.person()
    scene_key, scene_score = ev.scene() or ("", 0.0)
    scene = scene_table().get(scene_key)
    (thing, p1), (second, p2) = ev.things(2)
    scene_info = (
        {"name": scene_key, "score": round(scene_score, 4)} if scene_score >= cfg.scene else None
    )
    with_scene = f" {scene.with_thing}" if scene_info and scene else ""
    # a place the head gives some support, below a landscape's: said only with a hedge
    maybe_scene = scene if scene and cfg.background_class <= scene_score < cfg.scene else None
    maybe_info = {"name": scene_key, "score": round(scene_score, 4)} if maybe_scene else None
    if person >= cfg.person:  # people first, from the person signal, never from the decoder
        return Grounded(
            f"a person {wearing}{with_scene}",
            round(_scale(person, cfg.person), 4),
            person={"score": round(person, 4), "wearing": wearing},
            scene=scene_info,
        )
    if scene_info and scene and scene_score >= p1:  # a landscape: said by its scene
        caption = scene.alone if p1 < cfg.sure else f"{_a(thing)} {scene.with_thing}"
        return Grounded(caption, round(_scale(scene_score, cfg.scene), 4), scene=scene_info)
    if maybe_scene and scene_score >= p1:  # no thing beats the weak place: hedge on the place
        return Grounded(
            f"probably {maybe_scene.alone}",
            round(_scale(scene_score, cfg.scene), 4),
            scene=maybe_info,
            hedged=True,
        )
    kept = None
    for k, cand in enumerate(candidates):
        checked = _check(cand, ev, cfg, person)
        if checked is None:
            continue
        if p1 >= cfg.sure and not re.search(rf"\b{re.escape(thing)}", checked[0]):
            continue  # never less than the tags: the sure thing must be named
        kept, (caption, score) = k, checked
        break
    if kept is None:  # no caption of the beam passes: its subject, singular, else the head's
        first = [n for n in _nouns(candidates[0]) if n not in PERSON_NOUNS] if candidates else []
        noun = first[0] if first else thing
        score = _noun_evidence(noun, ev, person)
        if score < cfg.hedge or (p1 >= cfg.sure and thing not in noun):
            noun, score = thing, p1
        caption = f"a photo of {_a(noun)}{with_scene}"
    if score >= cfg.hedge:
        return Grounded(caption, round(_scale(score, cfg.hedge), 4), scene=scene_info, kept=kept)
    # unsure: hedge on the head's best thing rather than guess
    if not with_scene and maybe_scene:
        with_scene, scene_info = f", perhaps {maybe_scene.with_thing}", maybe_info
    if p1 < cfg.weak:
        caption = f"a photo, perhaps of {_a(thing)}"  # a place would have beaten so weak a thing
    elif p2 >= cfg.alternative * p1:
        caption = f"{_a(thing)} or {_a(second)}{with_scene}"
    else:
        caption = f"probably {_a(thing)}{with_scene}"
    return Grounded(caption, round(_scale(p1, cfg.hedge), 4), scene=scene_info, hedged=True)


def decoder_confidence(hyp: Hypothesis) -> float:
    """The decoder's geometric-mean word probability, ``exp(log_prob / (words + 1))``."""
    steps = len(hyp.tokens) + (1 if hyp.finished else 0)
    return min(1.0, math.exp(hyp.log_prob / max(1, steps)))


def ground_results(
    features: torch.Tensor,
    nbest: list[list[Hypothesis]],
    results: list[Any],
    head: Any,
    image_probs: torch.Tensor,
    named: dict[tuple[int, int], list[dict]],
    config: GroundingConfig,
) -> None:
    """Ground a batch of caption results in place: (B, N, C) ``features``, each row's n-best
    hypotheses (their slot-filled text in ``results[row].alternatives``), the linear ImageNet
    ``head`` and its (B, 1000) whole-picture ``image_probs``; ``named``: the filled slots of
    each (row, k) hypothesis."""
    protos: Prototypes | None = Prototypes.shipped()
    if protos is not None and protos.vectors.size(1) != features.size(2):
        protos = None  # made for another encoder's features
    for row, (hyps, res) in enumerate(zip(nbest, results, strict=True)):
        cands = [
            Candidate(alt["caption"], named.get((row, k), []), decoder_confidence(hyp))
            for k, (hyp, alt) in enumerate(zip(hyps, res.alternatives, strict=True))
        ]
        ev = Evidence.of(features[row], head.weight, head.bias, image_probs[row], protos)
        g = ground(cands, ev, config)
        if g.caption != res.caption:
            res.caption, res.words = g.caption, g.caption.split()
        if g.kept is None:  # written from the evidence: its object words are named by the head
            res.slots = _named_words(g.caption, cands[0] if cands else None, ev) or None
        elif g.kept != 0:  # another caption of the beam was kept: its slots
            res.slots = [s for s in named.get((row, g.kept), []) if s["name"] in g.caption] or None
        res.confidence = g.confidence
        res.person, res.scene, res.hedged = g.person, g.scene, g.hedged


def _named_words(caption: str, first: Candidate | None, ev: Evidence) -> list[dict[str, Any]]:
    """``{"position", "name", "score"}`` of the head's words in a caption written from them."""
    said = caption.replace(",", "").split()
    names = [w for w, _ in ev.things(2)] + (_nouns(first) if first else [])
    out, taken = [], set()
    for name in sorted(set(names) - PERSON_NOUNS, key=lambda n: -len(n.split())):
        parts = name.split()
        for i in range(len(said) - len(parts) + 1):
            span = set(range(i, i + len(parts)))
            if said[i : i + len(parts)] == parts and not span & taken:
                taken |= span
                score = round(_noun_evidence(name, ev, 0.0), 4)
                out.append({"position": i, "name": name, "score": score})
    return sorted(out, key=lambda s: s["position"])
