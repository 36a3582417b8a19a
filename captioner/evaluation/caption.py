"""Caption evaluation: caption a split with a bundle through the pipeline and score it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from captioner import metrics
from captioner.data.captions import CaptionRecord, load_captions
from captioner.data.features import cached_split, default_cache_root
from captioner.evaluation.objects import object_metadata, object_scores
from captioner.inference import Captioner, CaptionResult


@dataclass
class CaptionEvaluation:
    """What :func:`evaluate_caption` computed, kept for reports; rows align with ``records``."""

    result: dict  # the JSON evaluate_caption returns
    records: list[CaptionRecord]
    hypotheses: list[str]
    features: torch.Tensor  # (M, N, C)
    captioner: Captioner
    images: Path
    beam_size: int

    def attention(self, rows: Sequence[int]) -> list[CaptionResult]:
        """Decode ``rows`` again exactly as they were scored, with each word's attention."""
        return self.captioner.caption_features(
            self.features[list(rows)], beam_size=self.beam_size, return_attention=True
        )


def evaluate_caption(*args: Any, **kwargs: Any) -> dict:
    """Caption every image of a split with a bundle and score against its references.

    Takes the arguments of :func:`run_caption_evaluation`; returns only the scores.
    """
    return run_caption_evaluation(*args, **kwargs).result


def run_caption_evaluation(
    bundle: str | os.PathLike,
    data: str | os.PathLike,
    images: str | os.PathLike,
    split: str | None = None,
    beam_size: int | None = None,
    device: str = "auto",
    cache_root: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    limit: int | None = None,
    batch_size: int = 64,
) -> CaptionEvaluation:
    """:func:`evaluate_caption`, keeping the per-image captions and features (for reports).

    Captions come from the same pipeline (search, precision) that serves them; the result
    says which precision that was.
    """
    cap = Captioner.from_bundle(bundle, device=device)
    records = load_captions(data, split)[:limit]
    split_data = cached_split(
        records,
        images,
        cap.encoder,
        cap.encode,
        cache_root or default_cache_root(),
        workers=workers,
        progress=progress,
    )
    beam = beam_size or cap.default_search.beam_size
    results = cap.caption_features(split_data.features, batch_size=batch_size, beam_size=beam)
    hyps = [r.caption for r in results]
    refs = {r.image_id: r.captions for r in split_data.records}
    scores = metrics.score(
        refs, {r.image_id: h for r, h in zip(split_data.records, hyps, strict=True)}
    )
    meta = object_metadata(data)
    if meta is not None:  # an object-bank file: novel-object F1 and count honesty too
        scores["objects"] = object_scores(split_data.records, hyps, meta)
    result = {
        **scores,
        "images": len(split_data.records),
        "skipped": len(records) - len(split_data.records),
        "beam_size": beam,
        "precision": cap.precision,
        "examples": [
            {"image": r.file_name, "caption": h, "references": r.captions}
            for r, h in list(zip(split_data.records, hyps, strict=True))[:5]
        ],
    }
    return CaptionEvaluation(
        result, split_data.records, hyps, split_data.features, cap, Path(images), beam
    )
