"""Evaluation: score a bundle on a labelled split through the inference pipeline, and write
reports (HTML pages with attention overlays, confusion plots).

Training never imports this room: its validation runs the pipeline and ``metrics`` directly.
"""

from captioner.evaluation.activity import (
    ActivityEvaluation,
    classification_report,
    evaluate_activity,
    pair_accuracy,
    plot_confusion,
    run_activity_evaluation,
)
from captioner.evaluation.caption import (
    CaptionEvaluation,
    evaluate_caption,
    run_caption_evaluation,
)
from captioner.evaluation.reports import write_activity_report, write_caption_report

__all__ = [
    "ActivityEvaluation",
    "CaptionEvaluation",
    "classification_report",
    "evaluate_activity",
    "evaluate_caption",
    "pair_accuracy",
    "plot_confusion",
    "run_activity_evaluation",
    "run_caption_evaluation",
    "write_activity_report",
    "write_caption_report",
]
