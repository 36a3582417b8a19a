"""What the pipelines return, and the one shape each result has as a record.

``to_record()`` is the row every surface shows: the ``captioner caption`` / ``activity``
JSONL and CSV rows, the HTTP answers and the Python API, rounded alike (:data:`DIGITS`).
Records hold JSON types only (lists, not tuples). ``to_dict()`` is the full dataclass,
unrounded, for Python callers who want everything.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: decimals of every probability, log-probability and score in a record
DIGITS = 4
#: what a batch call does with an input it cannot read: raise, or return an ErrorResult for it
Errors = Literal["raise", "return"]
ERRORS = ("raise", "return")


def check_errors(errors: str) -> None:
    """Refuse an ``errors=`` that is neither ``"raise"`` nor ``"return"`` (ValueError)."""
    if errors not in ERRORS:
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")


def error_record(path: str | os.PathLike | None, error: str) -> dict[str, Any]:
    """The one shape of a failed input's row: ``{"path", "error"}``."""
    return {"path": None if path is None else str(path), "error": error}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), DIGITS)


@dataclass
class ErrorResult:
    """An input that could not be read, in the place of its result (``errors="return"``).

    ``path`` is the input's path (None for bytes, arrays and PIL images), ``error`` the reason
    (the message of ``exception``, a :class:`~captioner.MediaError`).
    """

    path: str | None
    error: str
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_record(self) -> dict[str, Any]:
        """``{"path", "error"}``: the row ``captioner caption`` writes for a bad file."""
        return error_record(self.path, self.error)

    @classmethod
    def of(cls, source: object, exc: BaseException) -> ErrorResult:
        """The error result for ``source`` that raised ``exc``."""
        path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        return cls(path=None if path is None else str(path), error=str(exc), exception=exc)


@dataclass
class CaptionResult:
    """A caption with its log-probability, n-best alternatives and optional attention.

    ``tags``: the everyday names the encoder's ImageNet head sees, ``[{"name", "score"}]`` best
    first (None when the encoder has no head). ``confidence``: the caption's geometric-mean
    word probability, ``exp(log_prob / (words + 1))`` (the ``+ 1`` is ``<end>``), in [0, 1].
    ``domain_distance``: how far the image's features are from the calibration images'
    (cosine distance to the nearest ones, see :mod:`captioner.calibrate`); ``out_of_domain``:
    whether it is past the bundle's calibrated threshold (both None when the bundle was never
    calibrated with ``captioner calibrate``).
    """

    caption: str
    log_prob: float
    score: float
    finished: bool
    words: list[str]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    attention: list[list[float]] | None = None  # one grid (flattened, row-major) per word
    grid: tuple[int, int] | None = None  # (rows, cols) of the attention grid
    tags: list[dict[str, Any]] | None = None
    confidence: float | None = None
    out_of_domain: bool | None = None
    domain_distance: float | None = None
    slots: list[dict[str, Any]] | None = None  # object slots filled from the image, if any
    person: dict[str, Any] | None = None  # {"score", "wearing"} when the person signal fired
    scene: dict[str, Any] | None = None  # {"name", "score"} when a place class fired strongly
    hedged: bool | None = None  # the subject was said with "probably" / "or" (None: ungrounded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_record(self, details: bool = False, alternatives: bool | None = None) -> dict[str, Any]:
        """The result as a row, log-probs and scores rounded to :data:`DIGITS` decimals.

        Always ``caption``, ``log_prob``, ``confidence``, ``tags``, ``out_of_domain``,
        ``domain_distance``; ``slots`` when the caption has any; ``alternatives`` (the n-best
        list) when asked for, by default when there is more than one. ``details`` (the HTTP
        answer) adds ``score`` and ``words``, the alternatives always, and the attention
        ``grid`` and maps when the search kept them.
        """
        record: dict[str, Any] = {"caption": self.caption, "log_prob": _round(self.log_prob)}
        if details:
            record.update(score=_round(self.score), words=list(self.words))
        record.update(
            confidence=_round(self.confidence),
            tags=self.tags,
            out_of_domain=self.out_of_domain,
            domain_distance=_round(self.domain_distance),
        )
        if self.slots:
            record["slots"] = self.slots
        if self.hedged is not None:
            record.update(person=self.person, scene=self.scene, hedged=self.hedged)
        if details or (len(self.alternatives) > 1 if alternatives is None else alternatives):
            record["alternatives"] = [
                {**a, "log_prob": _round(a["log_prob"]), "score": _round(a["score"])}
                for a in self.alternatives
            ]
        if details and self.attention is not None:
            record.update(attention=self.attention, grid=list(self.grid or ()))
        return record


@dataclass
class ActivityResult:
    """The activity in a video: best label, its probability, the top k, optionally a timeline."""

    label: str
    score: float
    top_k: list[dict[str, Any]]
    timeline: list[dict[str, Any]] | None = None
    # what happens, in words and readings (inference/describe.py): sentence, shots, cuts
    description: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("timeline", "description"):
            if d[name] is None:
                d.pop(name)
        return d

    def to_record(self) -> dict[str, Any]:
        """``{"label", "score", "top_k"}`` (+ ``"timeline"``, ``"description"``), scores
        rounded to :data:`DIGITS` decimals: the row ``captioner activity`` writes and the HTTP
        answer."""
        record: dict[str, Any] = {
            "label": self.label,
            "score": _round(self.score),
            "top_k": [{"label": t["label"], "score": _round(t["score"])} for t in self.top_k],
        }
        if self.timeline is not None:
            record["timeline"] = [{**w, "score": _round(w["score"])} for w in self.timeline]
        if self.description is not None:
            record["description"] = self.description
        return record
