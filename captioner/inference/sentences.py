"""Sentences about a clip, built only from what was measured in it.

A window of a clip has up to three readings, each with a score in [0, 1]: how the camera moves
(``static``, ``handheld``, ``pan_left`` ...), how the moving thing moves (``none``, ``left``,
``approach`` ...) and what moves (a name from the ImageNet head on the moving region, or the
person signal). This module turns them into words and claims nothing they do not support:

- a reading at ``sure`` or more is said plainly ("the camera pans left");
- from ``probable`` up to ``sure`` it is hedged ("the camera probably pans left");
- below ``probable`` it is not said at all; a window with nothing left to say is "Unsure.";
- the moving thing is named only when its own evidence is there, else it is "something";
  a person comes from the person signal, never from a guess ("a person", no gender or age);
- verbs describe measured motion only ("moves to the left", "approaches"), never an action
  nobody measured ("walks", "drives");
- a clip's sentence joins its shots' sentences with "Shot change at 1.2 s.".

The camera conventions (pan left: the camera turns left, so the picture's content moves right)
belong to the motion features; here the labels are only words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CAMERA_PHRASES",
    "MOTION_PHRASES",
    "Reading",
    "SentenceConfig",
    "Subject",
    "WindowFacts",
    "clip_sentence",
    "window_sentence",
]

#: camera label -> (what "the camera" does, said plainly; the same, hedged)
CAMERA_PHRASES: dict[str, tuple[str, str]] = {
    "static": ("is still", "is probably still"),
    "handheld": ("is handheld", "is probably handheld"),
    "pan_left": ("pans left", "probably pans left"),
    "pan_right": ("pans right", "probably pans right"),
    "tilt_up": ("tilts up", "probably tilts up"),
    "tilt_down": ("tilts down", "probably tilts down"),
    "zoom_in": ("zooms in", "probably zooms in"),
    "zoom_out": ("zooms out", "probably zooms out"),
    "roll": ("rolls", "probably rolls"),
}

#: object-motion label -> (what the moving thing does, plainly; hedged); "none": nothing moves
MOTION_PHRASES: dict[str, tuple[str, str]] = {
    "left": ("moves to the left", "probably moves to the left"),
    "right": ("moves to the right", "probably moves to the right"),
    "up": ("moves up", "probably moves up"),
    "down": ("moves down", "probably moves down"),
    "approach": ("approaches", "probably approaches"),
    "recede": ("moves away", "probably moves away"),
}

_MOVING_CAMERA = frozenset({"pan_left", "pan_right", "tilt_up", "tilt_down"})


@dataclass(frozen=True)
class SentenceConfig:
    """When a reading is said plainly, hedged, or left out."""

    sure: float = 0.60
    probable: float = 0.40

    def __post_init__(self) -> None:
        if not 0.0 <= self.probable <= self.sure <= 1.0:
            raise ValueError("need 0 <= probable <= sure <= 1")


@dataclass(frozen=True)
class Reading:
    """One measured output: its label and its score in [0, 1]."""

    label: str
    score: float


@dataclass(frozen=True)
class Subject:
    """What moves: ``name`` with its article ("a car"), or None when nothing names it."""

    name: str | None
    score: float
    person: bool = False


@dataclass(frozen=True)
class WindowFacts:
    """The readings of one window (or one shot) of a clip, seconds from the clip's start.

    ``scene``: a grounded place with its article ("a mountain"), said only behind a moving
    camera ("the camera pans right over a mountain").
    """

    start: float
    end: float
    camera: Reading | None = None
    motion: Reading | None = None
    subject: Subject | None = None
    scene: str | None = None


def _said(
    reading: Reading | None, phrases: dict[str, tuple[str, str]], cfg: SentenceConfig
) -> str | None:
    """The phrase of a reading, plain or hedged, or None when it is too weak or unknown."""
    if reading is None or reading.label not in phrases or reading.score < cfg.probable:
        return None
    plain, hedged = phrases[reading.label]
    return plain if reading.score >= cfg.sure else hedged


def _subject(subject: Subject | None, cfg: SentenceConfig) -> str:
    if subject is None or subject.score < cfg.probable:
        return "something"
    name = "a person" if subject.person else subject.name
    if not name:
        return "something"
    return name if subject.score >= cfg.sure else f"something, probably {name},"


def window_sentence(facts: WindowFacts, config: SentenceConfig | None = None) -> str:
    """One sentence for a window: the moving thing first, then the camera; "Unsure." when no
    reading is strong enough to say."""
    cfg = config or SentenceConfig()
    camera = _said(facts.camera, CAMERA_PHRASES, cfg)
    if camera and facts.scene and facts.camera and facts.camera.label in _MOVING_CAMERA:
        camera = f"{camera} over {facts.scene}"
    moves = _said(facts.motion, MOTION_PHRASES, cfg)
    parts: list[str] = []
    # no "nothing moves": slow motion goes unmeasured, so its absence is not evidence
    if moves:
        parts.append(f"{_subject(facts.subject, cfg)} {moves}")
    if camera:
        parts.append(f"the camera {camera}")
    if not parts:
        return "Unsure."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def clip_sentence(
    shots: Sequence[WindowFacts], cuts: Sequence[float] = (), config: SentenceConfig | None = None
) -> str:
    """The clip's description: each shot's sentence, with "Shot change at X s." between them
    (``cuts``: the cut times in seconds, one fewer than the shots, or none)."""
    if not shots:
        return "Unsure."
    if cuts and len(cuts) != len(shots) - 1:
        raise ValueError(f"{len(shots)} shots need {len(shots) - 1} cut times, got {len(cuts)}")
    out: list[str] = []
    for i, shot in enumerate(shots):
        if i:
            out.append(f"Shot change at {cuts[i - 1]:.1f} s." if cuts else "Shot change.")
        out.append(window_sentence(shot, config))
    return " ".join(out)
