"""Caption tokenizer and vocabulary.

The tokenizer reproduces what coco-caption does before scoring, without Java: Stanford's
PTBTokenizer (the 3.4.1 jar coco-caption ships, run with ``-lowerCase``), then dropping the
punctuation tokens in coco-caption's list. Training targets and evaluation use the same one.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
# Object slots: ordinary words of a vocabulary that a model fills from the image when it writes
# them (captioner.inference.slots); a dataset's captions may use them for object nouns.
SLOT, SLOTS = "<obj>", "<objs>"

# coco-caption's list, verbatim. It is compared with tokens already lowercased by the PTB
# tokenizer, so its upper-case bracket entries never match: "-lrb-", "-rrb-", "-lsb-",
# "-rsb-", "-lcb-" and "-rcb-" stay in the text that is scored.
PUNCTUATION_TOKENS: frozenset[str] = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)
# Raw characters the PTB tokenizer turns into one of the tokens above.
_DROPPED = PUNCTUATION_TOKENS | {'"'}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}

# Canonical composition only: the 3.4.1 tokenizer keeps ligatures, full-width letters and
# superscripts as they are, which NFKC would fold (and so disagree with coco-caption).
NORMAL_FORM = "NFC"
_CHARACTERS = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "--",
        "\u2014": "--",
        "\u2026": "...",
        "\u00a3": "#",  # PTB writes the pound sign as in the Penn Treebank
        "\u20ac": "$",
        "\u00a2": " cents ",
        "\u00bd": " 1/2 ",
        "\u00bc": " 1/4 ",
        "\u00be": " 3/4 ",
        "\u2153": " 1/3 ",
        "\u2154": " 2/3 ",
    }
)
# Characters PTB 3.4.1 cannot tokenise (outside the BMP, e.g. most emoji; variation selectors)
# or treats as a break (zero-width spaces and joiners): each becomes a space.
_BREAKS = re.compile("[\U00010000-\U0010ffff\ufe00-\ufe0f\u200b-\u200d\u2060\ufeff]")
_SUPERSCRIPTS = re.compile("([\u00b2\u00b3\u00b9\u2070-\u209f])")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&nbsp;": " "}
_ENTITY = re.compile("|".join(_ENTITIES))

# Abbreviations that keep their period (as the 3.4.1 lexer does), lower-cased.
_ABBREVIATIONS = (
    "mr|mrs|ms|drs?|profs?|sens?|reps?|atty|lt|col|gen|govs?|adm|rev|maj|sgt|cpl|pvt|mt|capt|"
    "ste?|ave|pres|hon|jr|sr|inc|cos?|corp|ltd|plc|dept|univ|assn|intl|sys|etc|al|vs|cf|"
    "jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thu|thurs|fri|"
    "ala|ariz|calif|colo|conn|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla|penn|"
    "tenn|va|vt|wisc?|wyo|est|tel|ext|sq|ft|bros|esq|rd|blvd|bldg|seq|wm|jos|alex|cie|"
    "invt|elec|natl"
)
_CAPITAL_ABBREVIATIONS = "Miss|Ill|La|Mass|Ore|Pa|Tex|Wash"  # lower-case, they are words
_NUMBER_ABBREVIATIONS = "ca|figs?|nos?|art|prop|pp|op"  # only before a number

# Splits made before matching tokens: clitics ("do n't", "dog 's", "rock 'n' roll", "'t is",
# "y' all") and the words PTB cuts in two.
_CLITICS = re.compile(
    r"(?i)(?<=\w)(?:n't|'(?:s|re|ve|ll|d|m)|'n(?!'))\b|(?<=\w)'n'(?=\w)"
    r"|(?<!\w)'t(?=(?:is|was)\b)|\by'(?=all\b)"
)
_TWO_WORDS = re.compile(r"(?i)\b(?:(can)(not)|(gon|wan)(na)|(got)(ta)|(gim|lem)(me))\b")


def _split_clitic(m: re.Match) -> str:
    part = m.group()
    if part.lower() in ("'t", "y'"):
        return part + " "
    return f" {part} " if part.endswith("n'") else " " + part


_TOKEN = re.compile(
    rf"""
      \w+(?=\s|$)                                           # a plain word: the common case
    | (?:https?://|www\.)[^\s<>"()\[\]{{}}]+?(?=[.,;:!?]*(?:[\s()\[\]{{}}]|$))  # URLs
    | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+                      # e-mail addresses
    | </?[A-Za-z][A-Za-z0-9]*\s*/?> | &\#\d+;               # HTML tags, numeric entities
    | (?<!\S)[:;=]-?[()DPdp](?!\S)                          # smileys
    | (?i:n't|'(?:s|re|ve|ll|d|m|em|cause|\d\ds)|y')(?!\w)    # clitics, '90s
    | (?i:'n'?|'t)(?![\w-])                                 # rock 'n' roll, 't is
    | '\d\d(?=\s|$)                                         # '90
    | [^\W\d_](?:\.[^\W\d_])+\.?(?!\w)                      # acronyms: u.s.  a.m.  u.s.a
    | [^\W\d_]\.(?!\w)                                      # initials: j.
    | (?<!\w)(?i:{_ABBREVIATIONS})\.(?!\w)
    | (?<!\w)(?:{_CAPITAL_ABBREVIATIONS}|{_CAPITAL_ABBREVIATIONS.upper()})\.(?!\w)
    | (?<!\w)(?i:{_NUMBER_ABBREVIATIONS})\.(?=\s+\d)
    | (?<!\d)[-+.,:]?\d+(?:[.,:]\d+)*[,:]\d+(?:[.,:]\d+)*   # 1,000  10:30  -1,000
    | (?<!\d)[-+.,:]\d+(?:\.\d+)*(?!\w)                     # .5  -5  :50
    | (?i:-[lr][rsc]b-)                                     # brackets written out already
    | [A-Z]+&[A-Z]+                                         # AT&T
    | [\#@][^\W\d_]\w*                                      # #tag  @name
    | \w+(?:(?:[-/.]|'(?=[^\W\d_]))\w+)*                    # words: t-shirt  o'clock  3.5
    | [!?]+ | \.\.+ | --+ | `` | ''                         # runs count as one token
    | \S
    """,
    re.VERBOSE,
)


def ptb_tokenize(text: str) -> str:
    """Normalise a caption the way coco-caption does before scoring, without Java.

    Splits punctuation and clitics off words (``"don't"`` -> ``"do n't"``, ``"cannot"`` ->
    ``"can not"``), keeps abbreviations, acronyms, hyphenated words and numbers whole
    (``"mr."``, ``"u.s."``, ``"t-shirt"``, ``"1,000"``, ``"o'clock"``, ``"'90s"``), writes
    brackets as ``-lrb-``/``-rrb-``/``-lsb-``/``-rsb-``/``-lcb-``/``-rcb-`` (kept: coco-caption
    does not drop them), lowercases, drops the tokens in :data:`PUNCTUATION_TOKENS` (runs
    such as ``"!!!"`` are not in it and stay), and joins the rest with single spaces. The
    known differences from the Java tokenizer are listed in ``tests/test_ptb.py``.
    """
    text = unicodedata.normalize(NORMAL_FORM, text).translate(_CHARACTERS)
    if "&" in text:
        text = _ENTITY.sub(lambda m: _ENTITIES[m.group()], text)
    if not text.isascii():
        text = _SUPERSCRIPTS.sub(r" \1 ", _BREAKS.sub(" ", text))
    if "'" in text:
        text = _CLITICS.sub(_split_clitic, text)
    lower = text.lower()
    if "nnot" in lower or "nna" in lower or "tta" in lower or "mme" in lower:
        text = _TWO_WORDS.sub(lambda m: " ".join(g for g in m.groups() if g), text)
    tokens = []
    for token in _TOKEN.findall(text):
        token = _punctuation(token) if token[0] in _PUNCTUATION_START else token.lower()
        if token not in _DROPPED:
            tokens.append(token)
    return " ".join(tokens)


_PUNCTUATION_START = frozenset("()[]{}:;=-.")


def _punctuation(token: str) -> str:
    """Brackets and smileys the PTB way, a run of dashes or dots as one token."""
    if token in _BRACKETS:
        return _BRACKETS[token]
    if len(token) > 1 and token[0] in ":;=" and token[-1] in "()":  # a smiley
        return token[:-1].lower() + _BRACKETS[token[-1]]
    if token.startswith("--"):
        return "--"
    if token.startswith(".."):
        return "..."
    return token.lower()


def tokenize(text: str) -> list[str]:
    """Caption -> tokens, exactly as :func:`ptb_tokenize` (the metrics' tokenizer) splits it."""
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
