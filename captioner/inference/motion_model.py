"""The learned motion stream at inference: a motion bundle read as camera and object readings.

:class:`MotionReader` loads a ``motion`` bundle (:mod:`captioner.models.motion`) and maps one
window's (P, MOTION_DIM) motion features to the camera motion and the object motion, each with
its softmax probability as the score: the same readings the geometry rule gives
(:class:`~captioner.video.geometry.GeometryLabels`), so the description reads either. A moving
thing's score is first mapped through the bundle's object floor (``said.object_floor``, fitted
on validation clips where nothing moves, see :func:`captioner.training.motion.object_floor`):
the floor lands on the sentence's hedge line and the scale above it on the plain line, so a
reading too weak to tell a moving thing from a still one is not said. The model
is tiny and its input is NumPy on the CPU, so it always runs on the CPU.

:func:`motion_reader` resolves the ``motion=`` option of the activity pipeline: ``"default"``
(the shipped ``motion-default``, or ``$CAPTIONER_MOTION_BUNDLE``; the geometry rule when there
is none), a bundle folder, a ready reader, or None (the geometry rule).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from captioner.bundle import MANIFEST, Bundle, BundleError, Manifest
from captioner.inference.common import (
    BundleModel,
    bundle_module,
    default_bundle_dir,
    manifest_part,
    open_bundle,
)
from captioner.inference.sentences import SentenceConfig
from captioner.models.motion import MotionModel, MotionModelConfig
from captioner.video.geometry import CAMERA_MOTIONS, OBJECT_MOTIONS, GeometryLabels
from captioner.video.motion import MOTION_DIM, MOTION_FIELDS

__all__ = ["GEOMETRY", "MotionReader", "MotionSource", "motion_reader"]

log = logging.getLogger(__name__)

#: The ``source`` a description names when the geometry rule made its readings.
GEOMETRY = "geometry"


class MotionReader(BundleModel):
    """A trained motion model: (P, MOTION_DIM) features of one window -> its readings."""

    task = "motion"

    def __init__(self, model: MotionModel, manifest: Manifest | dict | None = None):
        if isinstance(manifest, dict):
            manifest = Manifest.from_dict(manifest)
        self.spec = manifest
        self.model = model.eval().cpu()
        said = (manifest.extra.get("said") if manifest is not None else None) or {}
        self.object_floor = float(said.get("object_floor", SentenceConfig().probable))
        if not SentenceConfig().probable <= self.object_floor < 1.0:
            raise BundleError(f"said.object_floor must lie in [0.4, 1), got {self.object_floor}")
        c = model.config
        if (c.input_dim, c.camera_classes, c.object_classes) != (
            MOTION_DIM,
            len(CAMERA_MOTIONS),
            len(OBJECT_MOTIONS),
        ):
            raise BundleError(
                f"a motion model must read {MOTION_DIM} features and name "
                f"{len(CAMERA_MOTIONS)} camera and {len(OBJECT_MOTIONS)} object motions; "
                f"this one has {c.input_dim}, {c.camera_classes} and {c.object_classes}"
            )

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike | Bundle) -> MotionReader:
        """Load a motion bundle (hash-checked); BundleError when it reads other features or
        names other classes than this captioner's."""
        b = open_bundle(bundle, "motion")
        spec = b.spec
        heads = spec.heads or {}
        want = {"camera": list(CAMERA_MOTIONS), "object": list(OBJECT_MOTIONS)}
        if heads != want:
            raise BundleError(f"{b.path}: heads must be {want}, got {heads}")
        if spec.inputs.get("fields") != list(MOTION_FIELDS):
            raise BundleError(
                f"{b.path} was trained on other motion features than this captioner measures "
                "(its inputs.fields differ from captioner.video.MOTION_FIELDS): train it again "
                "with 'captioner train motion'"
            )
        config = manifest_part(b, lambda: MotionModelConfig.from_dict(spec.model))
        model = bundle_module(b, MotionModel(config), "model.safetensors", "motion model")
        return cls(model, manifest=spec)

    @torch.inference_mode()
    def read_many(self, windows: Sequence[np.ndarray]) -> list[GeometryLabels]:
        """Each window's (P, MOTION_DIM) features (P >= 1) -> its readings, windows of one
        length in one forward pass."""
        out: list[GeometryLabels | None] = [None] * len(windows)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            if np.ndim(w) != 2 or np.shape(w)[1] != MOTION_DIM or len(w) == 0:
                raise ValueError(f"a window must be (pairs >= 1, {MOTION_DIM}), got {np.shape(w)}")
            by_length.setdefault(len(w), []).append(i)
        for group in by_length.values():
            x = torch.from_numpy(np.stack([windows[i] for i in group]).astype(np.float32))
            camera, obj = self.model.probabilities(x)  # (G, 9), (G, 7)
            cam_score, cam = camera.max(-1)
            obj_score, ob = obj.max(-1)
            for k, i in enumerate(group):
                out[i] = GeometryLabels(
                    CAMERA_MOTIONS[int(cam[k])],
                    float(cam_score[k]),
                    OBJECT_MOTIONS[int(ob[k])],
                    self._object_score(OBJECT_MOTIONS[int(ob[k])], float(obj_score[k])),
                )
        return [r for r in out if r is not None]

    def _object_score(self, label: str, p: float) -> float:
        """``p`` on the sentence's scale: the object floor -> the hedge line, linear on both
        sides (the floor's default, the hedge line itself, leaves ``p`` as it is)."""
        if label == "none":
            return p
        cfg, floor = SentenceConfig(), self.object_floor
        if p < floor:
            return p * cfg.probable / floor
        return cfg.probable + (p - floor) * (1.0 - cfg.probable) / (1.0 - floor)

    def read(self, features: np.ndarray) -> GeometryLabels:
        """One window's (P, MOTION_DIM) features -> camera and object motion with scores."""
        return self.read_many([features])[0]


MotionSource = MotionReader | Bundle | str | os.PathLike | None


def motion_reader(motion: MotionSource = "default") -> MotionReader | None:
    """The ``motion=`` option -> a reader, or None for the geometry rule.

    ``"default"``: the task's default motion bundle when it is installed (else the geometry
    rule, logged); a folder or a :class:`Bundle`: that bundle (BundleError if it is not one);
    a reader: itself; None: the geometry rule."""
    if motion is None or isinstance(motion, MotionReader):
        return motion
    if isinstance(motion, str) and motion == "default":
        folder = default_bundle_dir("motion")
        if not (folder / MANIFEST).is_file():
            log.info("no motion bundle at %s: the geometry rule reads the motion", folder)
            return None
        motion = folder
    return MotionReader.from_bundle(motion)
