"""A bundle's manifest as typed data, checked field by field when read.

``Manifest.from_dict`` is the one reader of ``manifest.json``: every field has a type and a
default here, and a bad field raises :class:`BundleError` naming the field and the file.
``Manifest.to_dict`` gives back the JSON object, keys in the order the training writes them,
so reading and writing a manifest leaves its text unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from captioner.encoders import Encoder, Preprocess

FORMAT = "captioner-bundle"
FORMAT_VERSION = 1
TASKS = ("caption", "activity", "motion")
MANIFEST = "manifest.json"
#: ``name`` of a manifest that has none (what the models called themselves before it was typed)
DEFAULT_NAMES = {"caption": "captioner", "activity": "activity", "motion": "motion"}
DEFAULT_NUM_FRAMES = 16

_REQUIRED: Any = object()


class BundleError(ValueError):
    """A bundle that cannot be used: missing files, wrong hash, unknown version, bad shapes."""


class _Reader:
    """Typed access to one JSON object of a manifest; errors name the dotted field and file."""

    def __init__(self, data: Any, where: str, path: str = ""):
        self.where, self.path = where, path
        if not isinstance(data, dict):
            self.fail(f"must be a JSON object, got {_show(data)}", "")
        self.data: dict = data

    def fail(self, problem: str, key: str) -> NoReturn:
        name = ".".join(p for p in (self.path, key) if p)
        raise BundleError(
            f"{self.where}: " + (f"field {name!r}" if name else "the manifest") + f" {problem}"
        )

    def get(self, key: str, check, what: str, default: Any = _REQUIRED) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                self.fail("is missing", key)
            return default
        value = self.data[key]
        if not check(value):
            self.fail(f"must be {what}, got {_show(value)}", key)
        return value

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        return self.get(key, lambda v: isinstance(v, str) and v, "a non-empty string", default)

    def count(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> int:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        return self.get(key, lambda v: _is_int(v) and v >= minimum, what, default)

    def obj(self, key: str, default: Any = _REQUIRED) -> dict:
        return self.get(key, lambda v: isinstance(v, dict), "a JSON object", default)

    def sub(self, key: str, default: Any = _REQUIRED) -> _Reader:
        return _Reader(self.obj(key, default), self.where, f"{self.path}.{key}".strip("."))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_object_or_null(v: Any) -> bool:
    return v is None or isinstance(v, dict)


def _is_positive(v: Any) -> bool:
    return _is_number(v) and v > 0


def _is_strings(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(s, str) and s for s in v)


def _is_distinct_strings(v: Any) -> bool:
    return _is_strings(v) and len(set(v)) == len(v)


def _is_triple(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(map(_is_number, v))


def _is_positive_triple(v: Any) -> bool:
    return _is_triple(v) and all(x > 0 for x in v)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Decoding:
    """A caption bundle's default search, typed: the manifest's ``decoding`` entry with the
    defaults filled in. These defaults are the only ones: every reader of a bundle uses them."""

    beam_size: int = 3
    max_len: int = 20
    length_penalty: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decoding:
        """``{"beam_size", "max_len", "length_penalty"}``, any of them left out -> the defaults."""
        d = cls()
        return cls(
            beam_size=int(data.get("beam_size", d.beam_size)),
            max_len=int(data.get("max_len", d.max_len)),
            length_penalty=float(data.get("length_penalty", d.length_penalty)),
        )


DEFAULT_DECODING = asdict(Decoding())  # the same defaults as a dict, for older callers


@dataclass(frozen=True)
class EncoderEntry:
    """The manifest's ``encoder``: which registered backbone, and how its inputs are made."""

    name: str
    preprocess: Preprocess
    feature_dim: int
    fine_tuned_blocks: int = 0  # > 0: the bundle ships encoder.safetensors

    @classmethod
    def of(
        cls, encoder: Encoder, name: str | None = None, fine_tuned_blocks: int = 0
    ) -> EncoderEntry:
        """The entry for a built encoder (``name``: the registry name it was built from)."""
        return cls(name or encoder.name, encoder.preprocess, encoder.feature_dim, fine_tuned_blocks)

    def to_dict(self) -> dict:
        pre = self.preprocess
        return {
            "name": self.name,
            "preprocess": {
                "size": pre.size,
                "mean": list(pre.mean),
                "std": list(pre.std),
                "interpolation": pre.interpolation,
            },
            "feature_dim": self.feature_dim,
            "fine_tuned_blocks": self.fine_tuned_blocks,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> EncoderEntry:
        r = _Reader(data, where, "encoder")
        p = r.sub("preprocess")
        interpolation = p.get(
            "interpolation", lambda v: v in ("bicubic", "bilinear"), "'bicubic' or 'bilinear'",
            "bicubic",
        )  # fmt: skip
        return cls(
            name=r.text("name"),
            preprocess=Preprocess(
                size=p.count("size"),
                mean=tuple(p.get("mean", _is_triple, "a list of 3 numbers")),
                std=tuple(p.get("std", _is_positive_triple, "a list of 3 positive numbers")),
                interpolation=interpolation,
            ),
            feature_dim=r.count("feature_dim"),
            fine_tuned_blocks=r.count("fine_tuned_blocks", 0, minimum=0),
        )


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle says about itself, typed. ``files`` is filled in by the writer."""

    task: str
    name: str
    version: str
    encoder: EncoderEntry | None  # None: a motion bundle (it reads motion features, no pixels)
    model: dict  # the model config's to_dict(), read by its own from_dict
    vocabulary: dict | None = None  # caption bundles
    classes: list[str] | None = None  # activity bundles
    heads: dict[str, list[str]] | None = None  # motion bundles: head name -> its class names
    inputs: dict = field(default_factory=dict)  # what a motion bundle reads (feature fields...)
    decoding: dict = field(default_factory=dict)  # search defaults of a caption bundle
    sampling: dict = field(default_factory=dict)  # frame sampling of an activity bundle
    training: dict = field(default_factory=dict)  # how it was trained (free form)
    metrics: dict = field(default_factory=dict)  # evaluation results by split (free form)
    files: dict = field(default_factory=dict)  # weight file name -> {"sha256", "bytes"}
    extra: dict = field(default_factory=dict)  # unknown top-level keys, kept as they are

    # -- typed views of the free-form parts -------------------------------------------------

    @property
    def search(self) -> Decoding:
        """The default search of a caption bundle (the defaults where ``decoding`` is silent)."""
        return Decoding.from_dict(self.decoding)

    @property
    def beam_size(self) -> int:
        return self.search.beam_size

    @property
    def max_len(self) -> int:
        return self.search.max_len

    @property
    def length_penalty(self) -> float:
        return self.search.length_penalty

    @property
    def num_frames(self) -> int:
        return int(self.sampling.get("num_frames", DEFAULT_NUM_FRAMES))

    @property
    def sampling_mode(self) -> str:
        return str(self.sampling.get("mode", "uniform"))

    @property
    def clip_seconds(self) -> dict[str, float] | None:
        """``{"min", "median"}`` length of the training clips of an activity bundle, if known."""
        seconds = self.sampling.get("clip_seconds") or {}
        return {k: float(seconds[k]) for k in ("min", "median")} if seconds else None

    @property
    def tokens(self) -> list[str]:
        """The vocabulary's tokens, in id order (empty for an activity bundle)."""
        return list((self.vocabulary or {}).get("tokens", []))

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON object of ``manifest.json`` (format and files included, when known)."""
        out: dict = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": self.task}
        out.update(name=self.name, version=self.version)
        if self.encoder is not None:
            out["encoder"] = self.encoder.to_dict()
        out["model"] = self.model
        for key in ("vocabulary", "classes", "heads"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        for key in ("inputs", "decoding", "sampling", "training", "metrics"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        out.update(self.extra)
        if self.files:
            out["files"] = self.files
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> Manifest:
        """Check and type a manifest's JSON object; ``where`` (its file) goes into errors."""
        r = _Reader(copy.deepcopy(data), where)  # the typed manifest shares nothing mutable
        r.get("format", lambda v: v == FORMAT, repr(FORMAT), FORMAT)
        r.get("format_version", lambda v: v == FORMAT_VERSION, str(FORMAT_VERSION), FORMAT_VERSION)
        task = r.get("task", lambda v: v in TASKS, f"one of {TASKS}")
        vocabulary = r.obj("vocabulary", _REQUIRED if task == "caption" else None)
        if vocabulary is not None:
            r.sub("vocabulary").get("tokens", _is_strings, "a non-empty list of strings")
        classes = r.get(
            "classes", _is_distinct_strings, "a list of distinct class names",
            _REQUIRED if task == "activity" else None,
        )  # fmt: skip
        heads = r.sub("heads", _REQUIRED if task == "motion" else {})
        if task == "motion" and not heads.data:
            heads.fail("must name each head's classes", "")
        for head in heads.data:
            heads.get(head, _is_distinct_strings, "a list of distinct class names")
        inputs = r.sub("inputs", _REQUIRED if task == "motion" else {})
        if task == "motion":
            inputs.get("fields", _is_distinct_strings, "a list of distinct feature names")
        decoding = r.sub("decoding", {})
        decoding.count("beam_size", None)
        decoding.count("max_len", None)
        decoding.get("length_penalty", _is_number, "a number", None)
        sampling = r.sub("sampling", {})
        sampling.count("num_frames", None)
        sampling.text("mode", None)
        # null: the training videos could not be probed
        seconds = sampling.get("clip_seconds", _is_object_or_null, "a JSON object or null", None)
        if seconds:
            for key in ("min", "median"):
                sampling.sub("clip_seconds").get(key, _is_positive, "a positive number")
        files = r.sub("files", {})
        for name in files.data:
            entry = files.sub(name)
            entry.get("sha256", lambda v: isinstance(v, str), "a hex digest string")
        encoder = r.obj("encoder", None if task == "motion" else _REQUIRED)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"} | {"format", "format_version"}
        return cls(
            task=task,
            name=r.text("name", DEFAULT_NAMES[task]),
            version=r.get("version", lambda v: isinstance(v, str), "a string", ""),
            encoder=None if encoder is None else EncoderEntry.from_dict(encoder, where),
            model=r.obj("model"),
            vocabulary=vocabulary,
            classes=classes,
            heads=heads.data or None,
            inputs=inputs.data,
            decoding=decoding.data,
            sampling=sampling.data,
            training=r.obj("training", {}),
            metrics=r.obj("metrics", {}),
            files=files.data,
            extra={k: v for k, v in r.data.items() if k not in known},
        )
