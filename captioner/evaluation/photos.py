"""Captions on real photographs: does the caption tell the truth about the picture?

Reads what ``captioner data photos`` wrote (``DIR/photos.json``: hand labels, and
``DIR/images``), captions every picture through :class:`captioner.inference.Captioner` (the
one pipeline) and scores each caption against its labels. Reported per split (``tune``,
``heldout``: never tune on it), for the photos the model never saw in training (``unseen``)
and overall (``all``). The metric functions below take plain captions and labels, so each
is tested on hand-made examples.

Word matching: lower case, letters only, each word reduced to a singular by
:func:`singular` (the same rule for captions and labels), a phrase matched as a run of whole
words. So "two Cats" names "cat", "a kitten" names "kitten", "coffee cups" names "coffee cup".
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from statistics import median
from typing import Any

from captioner.evaluation.objects import COUNT_WORDS

__all__ = [
    "PERSON_WORDS",
    "auroc",
    "false_count_or_pair",
    "false_scene_phrases",
    "mentions_person",
    "names_subject",
    "photo_scores",
    "run_photo_evaluation",
    "scene_phrases",
    "singular",
    "words",
]

#: Words that say a person is there (no gender or age guessed in the labels, but a caption
#: saying "man" or "astronaut" does mention a person).
PERSON_WORDS = frozenset(
    "person people man woman boy girl child kid baby lady guy astronaut cameraman "
    "photographer player human".split()
)
#: Count words beyond one, and words that say there is more than one.
MANY_WORDS = frozenset(COUNT_WORDS) | {"pair", "couple", "several", "many", "group"}
#: Words that may repeat in a caption without naming a thing twice.
_FUNCTION_WORDS = frozenset(
    "a an the of on in at by to next front left right with and or is are there this that "
    "it its picture photo image shot close up view some large small big little tiny huge "
    "dark light plain red green blue yellow white black grey gray orange brown purple pink "
    "wooden one".split()
)
_IRREGULAR = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "cameramen": "cameraman",
    "mice": "mouse",
    "geese": "goose",
    "teeth": "tooth",
    "feet": "foot",
    "leaves": "leaf",
    "shelves": "shelf",
    "knives": "knife",
    "wolves": "wolf",
    "loaves": "loaf",
}
_KEEP_S = ("ss", "us", "is", "ous")


def singular(word: str) -> str:
    """A rough singular: ``cats`` -> ``cat``, ``boxes`` -> ``box``, ``berries`` -> ``berry``."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(_KEEP_S):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, letters only, each reduced by :func:`singular`."""
    return [singular(w) for w in re.findall(r"[a-z]+", text.lower())]


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return n > 0 and any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack)))


def names_subject(caption: str, subject: Iterable[str]) -> bool:
    """Whether ``caption`` names the main subject: one accepted noun (phrase) appears in it
    as whole words, singular or plural, with any article."""
    said = words(caption)
    return any(_contains(said, words(noun)) for noun in subject)


def false_count_or_pair(caption: str) -> bool:
    """Whether a caption of a one-subject photo says there is more than one: a count word
    above one ("two", "three"..., "pair", "several") or the same noun twice ("a tripod next to
    a tripod"; articles, prepositions, sizes and colours may repeat)."""
    said = words(caption)
    if any(w in MANY_WORDS for w in said):
        return True
    content = [w for w in said if w not in _FUNCTION_WORDS]
    return len(content) != len(set(content))


def _phrase_head(phrase: str) -> str:
    """``on a wooden pier`` -> ``wooden pier``: the phrase without its leading preposition."""
    text = re.sub(r"^(in front of|on|in|by|at|under|near)\s+", "", phrase.strip().lower())
    return re.sub(r"^(a|an|the|plain)\s+", "", text)


@functools.lru_cache(maxsize=1)
def scene_phrases() -> tuple[str, ...]:
    """The scene and background words a caption model of this project can write: the object
    bank's background phrases (``captioner/data/background_phrases.tsv``), the synthetic
    scenes' backgrounds, the grounded scene phrases (``scene_support.tsv``) and the concept
    table's places (lake, valley, mountain...)."""
    from captioner import concepts
    from captioner.data.scene_grammar import _BACKGROUND_PHRASES

    found: set[str] = set()
    text = (files("captioner") / "data" / "background_phrases.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            cols = line.split("\t")
            found.update(_phrase_head(c) for c in cols[2:4] if c.strip())
    for pair in _BACKGROUND_PHRASES.values():
        found.update(_phrase_head(p) for p in pair)
    # the grounded scenes' own words ("a lakeside", "in the mountains"), so they are scored too
    text = (files("captioner") / "data" / "scene_support.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            found.update(_phrase_head(c) for c in line.split("\t")[:3] if c.strip())
    table = concepts.table()
    for index in range(concepts.NUM_CLASSES):
        if not bool(table.thing[index]):
            found.add(table.words[int(table.word_of_class[index])])
    found.discard("")
    # longest first, so "wooden pier" is taken before a shorter phrase inside it
    return tuple(sorted(found, key=lambda p: (-len(p.split()), p)))


def false_scene_phrases(
    caption: str, scene: Iterable[str], vocabulary: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """``(said, false)``: the scene phrases the caption has, and those of them the labels do not
    support. A phrase is supported when it and a true scene word contain one another as whole
    words ("wooden pier" and "pier"; "lake" and "lake")."""
    said_words = words(caption)
    truth = [words(s) for s in scene]
    said: list[str] = []
    taken: list[tuple[int, int]] = []
    for phrase in vocabulary if vocabulary is not None else scene_phrases():
        p = words(phrase)
        n = len(p)
        for i in range(len(said_words) - n + 1):
            if said_words[i : i + n] == p and not any(a < i + n and i < b for a, b in taken):
                taken.append((i, i + n))
                said.append(phrase)
                break
    false = [
        phrase
        for phrase in said
        if not any(_contains(t, words(phrase)) or _contains(words(phrase), t) for t in truth)
    ]
    return said, false


def mentions_person(caption: str) -> bool:
    """Whether the caption has a person word (:data:`PERSON_WORDS`, singular or plural)."""
    return any(w in PERSON_WORDS for w in words(caption))


def auroc(scores: Sequence[float], right: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` separating right (True) from wrong: the chance
    that a random right item scores above a random wrong one (ties count half). None without
    both kinds."""
    pos = [s for s, r in zip(scores, right, strict=True) if r]
    neg = [s for s, r in zip(scores, right, strict=True) if not r]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 4)


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def _medians(values: Sequence[float], right: Sequence[bool]) -> dict[str, float | None]:
    r = [v for v, ok in zip(values, right, strict=True) if ok]
    w = [v for v, ok in zip(values, right, strict=True) if not ok]
    return {
        "right": round(median(r), 4) if r else None,
        "wrong": round(median(w), 4) if w else None,
    }


def photo_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every measure over ``rows`` (one per photo: its labels plus ``caption``, ``tags``
    (``[{"name", "score"}]`` best first), ``confidence`` and ``out_of_domain``).

    On everyday photos (``kind == "photo"``) that have a main subject:

    - ``subject_named``: share whose caption names the subject (:func:`names_subject`);
    - ``template_named``: the same for the baseline caption "a photo of a {tags[0]}";
    - ``top3_named``: share where one of the top-3 tags names it;
    - ``auroc_confidence``: :func:`auroc` of the caption's ``confidence`` for right vs wrong
      subject; ``auroc_tag_score``: the same with ``tags[0]``'s score as the confidence;
      ``median_confidence`` / ``median_tag_score``: their medians on right and wrong captions.

    On everyday photos:

    - ``false_count_or_pair``: of the single-subject photos (``count == 1``), how many
      captions say more than one (:func:`false_count_or_pair`), as ``[hits, photos]``;
    - ``false_scene_share``: of the captions with a scene phrase (:func:`scene_phrases`), the
      share with one the labels do not support (:func:`false_scene_phrases`);
    - ``person_mentioned``: share of photos with people whose caption mentions a person;
      ``person_named_without_people``: ``[hits, photos]`` of those without people;
    - ``out_of_domain_photos``: share flagged ``out_of_domain``.

    On the other pictures: ``out_of_domain_non_photos`` overall and ``out_of_domain_by_kind``.
    Out-of-domain shares are None when the bundle was never calibrated.
    """
    photos = [r for r in rows if r["kind"] == "photo"]
    named = [r for r in photos if r["subject"]]
    right = [names_subject(r["caption"], r["subject"]) for r in named]
    tags = [r.get("tags") or [] for r in named]
    template = [
        bool(t) and names_subject(f"a photo of a {t[0]['name']}", r["subject"])
        for r, t in zip(named, tags, strict=True)
    ]
    top3 = [
        any(names_subject(tag["name"], r["subject"]) for tag in t[:3])
        for r, t in zip(named, tags, strict=True)
    ]
    confidence = [float(r.get("confidence") or 0.0) for r in named]
    tag_score = [float(t[0]["score"]) if t else 0.0 for t in tags]
    singles = [r for r in photos if r["count"] == 1]
    counted = sum(false_count_or_pair(r["caption"]) for r in singles)
    with_scene = [(r, false_scene_phrases(r["caption"], r["scene"])) for r in photos]
    with_scene = [(r, sf) for r, sf in with_scene if sf[0]]
    false_scene = sum(bool(sf[1]) for _, sf in with_scene)
    people = [r for r in photos if r["people"] > 0]
    nobody = [r for r in photos if r["people"] == 0]
    others = [r for r in rows if r["kind"] != "photo"]

    def ood(group: Sequence[Mapping[str, Any]]) -> float | None:
        flags = [r.get("out_of_domain") for r in group]
        if not flags or any(f is None for f in flags):
            return None
        return _share(sum(bool(f) for f in flags), len(flags))

    kinds = sorted({r["kind"] for r in others})
    return {
        "images": len(rows),
        "photos": len(photos),
        "photos_with_subject": len(named),
        "subject_named": _share(sum(right), len(named)),
        "template_named": _share(sum(template), len(named)),
        "top3_named": _share(sum(top3), len(named)),
        "false_count_or_pair": [counted, len(singles)],
        "false_scene_share": _share(false_scene, len(with_scene)),
        "captions_with_scene": len(with_scene),
        "person_mentioned": _share(sum(mentions_person(r["caption"]) for r in people), len(people)),
        "photos_with_people": len(people),
        "person_named_without_people": [
            sum(mentions_person(r["caption"]) for r in nobody),
            len(nobody),
        ],
        "out_of_domain_photos": ood(photos),
        "out_of_domain_non_photos": ood(others),
        "non_photos": len(others),
        "out_of_domain_by_kind": {k: ood([r for r in others if r["kind"] == k]) for k in kinds},
        "auroc_confidence": auroc(confidence, right),
        "auroc_tag_score": auroc(tag_score, right),
        "median_confidence": _medians(confidence, right),
        "median_tag_score": _medians(tag_score, right),
    }


def run_photo_evaluation(
    bundle: str | os.PathLike,
    photos: str | os.PathLike,
    beam_size: int | None = None,
    device: str = "auto",
    batch_size: int = 16,
    limit: int | None = None,
) -> dict[str, Any]:
    """Caption the pictures ``captioner data photos`` wrote to ``photos`` and score them.

    Returns ``{"splits": {"tune", "heldout", "unseen", "all": photo_scores(...)}, "rows": [...],
    "beam_size", "precision", "skipped"}``; ``rows`` hold each caption, its top-3 tags and the
    per-photo verdicts, for reading the mistakes.
    """
    from captioner.inference import Captioner

    folder = Path(photos)
    labels_path = folder / "photos.json"
    if not labels_path.is_file():
        raise FileNotFoundError(
            f"{labels_path} not found: write it first with captioner data photos --out {folder}"
        )
    labels = json.loads(labels_path.read_text(encoding="utf-8"))["photos"][:limit]
    cap = Captioner.from_bundle(bundle, device=device)
    beam = beam_size or cap.default_search.beam_size
    paths = [folder / "images" / p["file_name"] for p in labels]
    results = cap.caption(paths, beam_size=beam, batch_size=batch_size, errors="return")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for label, result in zip(labels, results, strict=True):
        if not hasattr(result, "caption"):
            failed.append(label["id"])
            continue
        tags = result.tags or []
        rows.append(
            {
                **label,
                "caption": result.caption,
                "tags": [{"name": t["name"], "score": round(float(t["score"]), 4)} for t in tags],
                "confidence": result.confidence,
                "out_of_domain": result.out_of_domain,
            }
        )
    groups = {
        "tune": [r for r in rows if r["split"] == "tune"],
        "heldout": [r for r in rows if r["split"] == "heldout"],
        "unseen": [r for r in rows if r["seen_in_training"] is None],
        "all": rows,
    }
    return {
        "splits": {name: photo_scores(group) for name, group in groups.items()},
        "beam_size": beam,
        "precision": cap.precision,
        "skipped": failed,
        "rows": [_row_summary(r) for r in rows],
    }


def _row_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    said, false = false_scene_phrases(row["caption"], row["scene"])
    tags = row["tags"]
    return {
        "id": row["id"],
        "split": row["split"],
        "kind": row["kind"],
        "caption": row["caption"],
        "tags": [t["name"] for t in tags[:3]],
        "tag_score": tags[0]["score"] if tags else None,
        "confidence": None if row["confidence"] is None else round(row["confidence"], 4),
        "out_of_domain": row["out_of_domain"],
        "subject_named": names_subject(row["caption"], row["subject"]) if row["subject"] else None,
        "false_count_or_pair": false_count_or_pair(row["caption"]) if row["count"] == 1 else None,
        "false_scene": false or None,
        "scene_said": said or None,
        "person_mentioned": mentions_person(row["caption"]),
        "people": row["people"],
    }
