"""Activity evaluation: label a split with a bundle through the pipeline; accuracy, order
pairs and the confusion matrix (as numbers and as a picture)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from captioner import metrics
from captioner.data.features import cached_clips, default_cache_root
from captioner.data.videos import VideoRecord, load_video_dataset
from captioner.inference import ActivityClassifier, encode_images


def classification_report(probs: torch.Tensor, labels: list[int], classes: list[str]) -> dict:
    """top1, top5, per-class accuracy and the confusion matrix (rows: true class)."""
    preds = probs.argmax(-1).tolist()
    confusion = metrics.confusion_matrix(preds, labels, len(classes))
    return {
        "top1": metrics.topk_accuracy(probs.tolist(), labels, 1),
        "top5": metrics.topk_accuracy(probs.tolist(), labels, min(5, len(classes))),
        "per_class": dict(zip(classes, metrics.per_class_accuracy(confusion), strict=True)),
        "confusion": confusion,
        "classes": classes,
        "videos": len(labels),
    }


def pair_accuracy(
    probs: torch.Tensor, labels: list[int], classes: list[str], pairs: list[tuple[str, str]]
) -> dict:
    """Accuracy within each pair of classes: for videos of either class, is the right one of
    the two more probable? 0.5 is chance. Shows what order-blind models cannot tell apart."""
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for a, b in pairs:
        if a not in index or b not in index:
            raise ValueError(f"pair {a}/{b}: both must be classes of the model ({classes})")
        ia, ib = index[a], index[b]
        rows = [i for i, y in enumerate(labels) if y in (ia, ib)]
        if rows:
            right = [(probs[i, ia] > probs[i, ib]) == (labels[i] == ia) for i in rows]
            out[f"{a}/{b}"] = sum(bool(r) for r in right) / len(rows)
    return {"order_pairs": out, "order_pairs_top1": sum(out.values()) / max(len(out), 1)}


@dataclass
class ActivityEvaluation:
    """What :func:`evaluate_activity` computed, kept for reports; rows align with ``records``."""

    report: dict  # the JSON evaluate_activity returns
    records: list[VideoRecord]
    probs: torch.Tensor  # (M, K) class probabilities


def evaluate_activity(*args: Any, **kwargs: Any) -> dict:
    """top1, top5, per-class accuracy and confusion matrix of a bundle on labelled videos
    (and the accuracy within each pair of classes given as ``pairs``).

    Takes the arguments of :func:`run_activity_evaluation`; returns only the report.
    """
    return run_activity_evaluation(*args, **kwargs).report


def run_activity_evaluation(
    bundle: str | os.PathLike,
    data: str | os.PathLike,
    split_list: str | os.PathLike | None = None,
    device: str = "auto",
    cache_root: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    pairs: list[tuple[str, str]] | None = None,
) -> ActivityEvaluation:
    """:func:`evaluate_activity`, keeping each video's probabilities (for reports)."""
    clf = ActivityClassifier.from_bundle(bundle, device=device)
    videos = load_video_dataset(data, split_list, classes=clf.classes)
    clips = cached_clips(
        videos,
        clf.encoder,
        lambda frames: encode_images(clf.encoder, frames, clf.device),
        clf.num_frames,
        1,
        cache_root or default_cache_root(),
        workers=workers,
        progress=progress,
    )
    probs = clf.probabilities_from_features(clips.features[:, 0])
    report = classification_report(probs, [r.label for r in clips.records], clf.classes)
    report["skipped"] = len(videos.records) - len(clips.records)
    report["precision"] = clf.precision
    if pairs:
        report.update(pair_accuracy(probs, [r.label for r in clips.records], clf.classes, pairs))
    return ActivityEvaluation(report, clips.records, probs)


def plot_confusion(report: dict, path: str | os.PathLike) -> Path:
    """Draw the confusion matrix as a PNG (row-normalised colours, counts written in cells)."""
    classes, conf = report["classes"], np.array(report["confusion"], dtype=float)
    k, cell, margin = len(classes), 44, 190
    img = Image.new("RGB", (margin + k * cell + 10, margin + k * cell + 10), "white")
    draw = ImageDraw.Draw(img)
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    for i in range(k):
        draw.text((5, margin + i * cell + cell // 3), classes[i][:28], fill="black")
        for j in range(k):
            shade = int(255 * (1 - rows[i, j]))
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255))
            colour = "white" if rows[i, j] > 0.5 else "black"
            draw.text((x0 + 6, y0 + cell // 3), str(int(conf[i, j])), fill=colour)
    for j in range(k):  # column labels, written vertically
        label = Image.new("RGB", (margin - 10, 14), "white")
        ImageDraw.Draw(label).text((0, 0), classes[j][:28], fill="black")
        img.paste(label.rotate(90, expand=True), (margin + j * cell + cell // 3, 5))
    draw.text((5, 5), "true \\ predicted", fill="black")
    out = Path(path)
    img.save(out)
    return out
