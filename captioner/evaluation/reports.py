"""Evaluation reports: a static HTML page with PNGs, from what an evaluation computed.

``write_caption_report`` and ``write_activity_report`` write a folder that opens in any
browser: ``index.html`` (relative links only, every text escaped), ``metrics.json`` and the
pictures it shows.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from captioner import metrics
from captioner.drawing import attention_overlay, thumbnail
from captioner.models.grid import grid_shape

if TYPE_CHECKING:
    from captioner.evaluation.activity import ActivityEvaluation
    from captioner.evaluation.caption import CaptionEvaluation

log = logging.getLogger(__name__)

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1100px; padding: 1.5em; background: #fafafa; }
h1 { margin: 0 0 .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; margin: 0; } code { background: #eee; padding: 0 .3em; border-radius: 3px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
article { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px;
          padding: .8em; margin: .8em 0; }
.pair { display: flex; gap: 1em; align-items: flex-start; }
.pair img { border-radius: 4px; flex: none; }
.file { color: #777; font-size: 13px; margin: 0; word-break: break-all; }
.hypothesis { font-size: 18px; font-weight: 600; margin: .2em 0 .4em; }
.references { margin: 0; padding-left: 1.3em; color: #444; }
.score { color: #555; font-size: 13px; margin: .4em 0 0; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; margin-top: .7em; }
.strip figure { margin: 0; text-align: center; }
.strip img { height: 96px; width: auto; display: block; border-radius: 3px; }
.strip figcaption { font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: .8em; }
.grid article { margin: 0; }
.grid .pair img { width: 128px; height: auto; }
.grid .hypothesis { font-size: 16px; } .grid .references { font-size: 13px; }
.note { color: #777; font-style: italic; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, header: str, sections: Sequence[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>{header}</header>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _meta_line(context: Mapping[str, Any]) -> str:
    parts = [f"{_e(k)} <code>{_e(v)}</code>" for k, v in context.items() if v is not None]
    return f'<p class="meta">{" · ".join(parts)}</p>' if parts else ""


def _metrics_table(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class=num>{v:.4f}</td></tr>"
        for k, v in values.items()
        if isinstance(v, float)
    )
    return f'<table class="metrics">{rows}</table>'


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


# --------------------------------------------------------------------------- caption report


def per_image_scores(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Per-image CIDEr-D (document frequencies of the whole set) and BLEU-4, in input order.

    Captions are tokenised as :func:`captioner.metrics.score` does, so the CIDEr-D values
    average to the corpus CIDEr-D it reports.
    """
    refs = {i: [metrics.ptb_tokenize(r) for r in rs] for i, rs in enumerate(references)}
    hyps = {i: metrics.ptb_tokenize(h) for i, h in enumerate(hypotheses)}
    _, cider = metrics.cider_d(refs, hyps)
    _, bleu = metrics.bleu(refs, hyps, n=4)
    return [cider[i] for i in range(len(hyps))], [bleu[i][3] for i in range(len(hyps))]


def spread(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)`` (all of them if fewer)."""
    if count >= total:
        return list(range(total))
    return sorted({round(x) for x in np.linspace(0, total - 1, count)})


def write_caption_report(
    out_dir: str | os.PathLike,
    evaluation: CaptionEvaluation,
    samples: int = 12,
    extremes: int = 4,
    context: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``metrics.json``, ``index.html``, thumbnails and attention strips to ``out_dir``.

    ``samples`` images spread over the split get an attention strip (one PNG per word); the
    ``extremes`` best and worst images by per-image CIDEr-D are listed too. ``context`` (e.g.
    bundle and data paths) is shown under the title. Returns the page's path.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "attention").mkdir(exist_ok=True)
    _write_json(out / "metrics.json", evaluation.result)
    records, hyps = evaluation.records, evaluation.hypotheses
    cider, bleu4 = per_image_scores([r.captions for r in records], hyps) if records else ([], [])
    ranked = sorted(range(len(records)), key=lambda i: (cider[i], bleu4[i]), reverse=True)
    best = ranked[:extremes]
    worst = [i for i in reversed(ranked) if i not in best][:extremes]
    picks = spread(len(records), samples)

    thumbs: dict[int, Image.Image | None] = {}
    for row in dict.fromkeys([*picks, *best, *worst]):
        try:
            thumbs[row] = thumbnail(evaluation.images / records[row].file_name)
            thumbs[row].save(out / "images" / f"{row:05d}.jpg", quality=88)
        except OSError as exc:  # cached earlier, since moved or deleted: report without it
            log.warning("report: cannot read %s: %s", records[row].file_name, exc)
            thumbs[row] = None

    def card(row: int, strip: str = "") -> str:
        rec, thumb = records[row], thumbs[row]
        img = (
            f'<img src="images/{row:05d}.jpg" width="{thumb.width}" height="{thumb.height}" '
            f'alt="{_e(rec.file_name)}">'
            if thumb is not None
            else '<p class="note">image unreadable</p>'
        )
        refs = "".join(f"<li>{_e(c)}</li>" for c in rec.captions)
        return (
            f'<article data-row="{row}" data-image="{_e(rec.file_name)}" '
            f'data-score="{cider[row]:.6f}">\n<div class="pair">{img}<div>'
            f'<p class="file">{_e(rec.file_name)}</p>'
            f'<p class="hypothesis">{_e(hyps[row])}</p>'
            f'<ol class="references">{refs}</ol>'
            f'<p class="score">CIDEr-D {cider[row]:.3f} · BLEU-4 {bleu4[row]:.3f}</p>'
            f"</div></div>{strip}</article>"
        )

    strips = _attention_strips(out, evaluation, picks, thumbs)
    name = evaluation.captioner.name
    result = evaluation.result
    header = _meta_line(
        {
            "model": name,
            **(context or {}),
            "images": result.get("images"),
            "beam": result.get("beam_size"),
        }
    )
    sections = [
        f'<section id="summary"><h2>Metrics</h2>{_metrics_table(result)}'
        f'<p class="note">{result.get("skipped", 0)} unreadable images skipped. Per-image '
        "CIDEr-D uses the document frequencies of the whole set.</p></section>",
        '<section id="samples"><h2>Samples</h2>'
        '<p class="note">Each word with the image regions it attended to.</p>'
        + "\n".join(card(row, strips.get(row, "")) for row in picks)
        + "</section>",
        f'<section id="best"><h2>Best {len(best)} by CIDEr-D</h2><div class="grid">'
        + "\n".join(card(row) for row in best)
        + "</div></section>",
        f'<section id="worst"><h2>Worst {len(worst)} by CIDEr-D</h2><div class="grid">'
        + "\n".join(card(row) for row in worst)
        + "</div></section>",
    ]
    page = out / "index.html"
    page.write_text(_page(f"Caption evaluation: {name}", header, sections))
    return page


def _attention_strips(
    out: Path,
    evaluation: CaptionEvaluation,
    rows: list[int],
    thumbs: Mapping[int, Image.Image | None],
) -> dict[int, str]:
    """HTML of each row's strip: one overlay PNG per word, saved under ``out/attention``."""
    if not rows:
        return {}
    strips = {}
    for row, res in zip(rows, evaluation.attention(rows), strict=True):
        thumb = thumbs[row]
        if res.attention is None or thumb is None:
            strips[row] = '<p class="note">no attention for this caption</p>'
            continue
        if res.caption != evaluation.hypotheses[row]:  # never a wrong caption's map
            log.warning("report: re-decoding row %d gave a different caption; no strip", row)
            continue
        att = np.asarray(res.attention, dtype=np.float32)  # (words, N)
        shape = res.grid or grid_shape(att.shape[1])
        words = res.words
        figures = []
        for t, word in enumerate(words):
            name = f"attention/{row:05d}-{t:02d}.png"
            # Fast zlib level: the strips are many small files, written while the user waits.
            attention_overlay(thumb, att[t].reshape(shape)).save(out / name, compress_level=1)
            figures.append(
                f'<figure><img src="{name}" alt="{_e(word)}"><figcaption>{_e(word)}</figcaption>'
                "</figure>"
            )
        strips[row] = f'<div class="strip">{"".join(figures)}</div>'
    return strips


# --------------------------------------------------------------------------- activity report


def write_activity_report(
    out_dir: str | os.PathLike,
    evaluation: ActivityEvaluation,
    misclassified: int = 20,
    context: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``metrics.json``, ``confusion.png`` and ``index.html`` to ``out_dir``.

    The page has the summary metrics, a per-class table (accuracy, support, the class most
    often predicted instead), pair accuracies when the evaluation has them, and links to the
    most confidently misclassified videos. Returns the page's path.
    """
    from captioner.evaluation.activity import plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluation.report
    _write_json(out / "metrics.json", report)
    plot_confusion(report, out / "confusion.png")
    classes = report["classes"]
    conf = np.array(report["confusion"], dtype=np.int64).reshape(len(classes), len(classes))

    rows = []
    for i, cls in enumerate(classes):
        support = int(conf[i].sum())
        others = conf[i].copy()
        others[i] = 0
        j = int(others.argmax())
        confused = (
            f"{_e(classes[j])} ({others[j]} of {support})" if others[j] > 0 else "<i>none</i>"
        )
        rows.append(
            f"<tr><td>{_e(cls)}</td><td class=num>{report['per_class'][cls]:.3f}</td>"
            f"<td class=num>{support}</td><td>{confused}</td></tr>"
        )
    per_class = (
        '<section id="per-class"><h2>Per class</h2><table class="per-class"><tr><th>class</th>'
        "<th>accuracy</th><th>support</th><th>most confused with</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )
    summary = {k: report[k] for k in ("top1", "top5", "order_pairs_top1") if k in report}
    sections = [
        f'<section id="summary"><h2>Metrics</h2>{_metrics_table(summary)}'
        f'<p class="note">{report.get("videos", 0)} videos, {report.get("skipped", 0)} '
        "unreadable ones skipped.</p></section>",
        per_class,
    ]
    if report.get("order_pairs"):
        pair_rows = "".join(
            f"<tr><td>{_e(pair)}</td><td class=num>{acc:.3f}</td></tr>"
            for pair, acc in report["order_pairs"].items()
        )
        sections.append(
            '<section id="pairs"><h2>Class pairs</h2><p class="note">For videos of either '
            "class: is the right one of the two more probable? 0.5 is chance.</p>"
            '<table class="pairs"><tr><th>pair</th><th>accuracy</th></tr>'
            f"{pair_rows}</table></section>"
        )
    sections.append(
        '<section id="confusion"><h2>Confusion matrix</h2>'
        '<img src="confusion.png" alt="confusion matrix (rows: true class)"></section>'
    )
    sections.append(_misclassified_section(out, evaluation, classes, misclassified))
    page = out / "index.html"
    title = "Activity evaluation"
    page.write_text(_page(title, _meta_line(context or {}), sections))
    return page


def _misclassified_section(
    out: Path, evaluation: ActivityEvaluation, classes: list[str], limit: int
) -> str:
    probs = evaluation.probs.float()
    preds = probs.argmax(-1).tolist()
    wrong = [i for i, r in enumerate(evaluation.records) if preds[i] != r.label]
    wrong.sort(key=lambda i: -float(probs[i, preds[i]]))  # the most confident mistakes first
    rows = []
    for i in wrong[:limit]:
        rec = evaluation.records[i]
        try:
            href = quote(Path(os.path.relpath(Path(rec.path).resolve(), out.resolve())).as_posix())
        except ValueError:  # another drive (Windows): no relative path exists
            href = ""
        link = f'<a href="{_e(href)}">{_e(rec.path)}</a>' if href else _e(rec.path)
        rows.append(
            f"<tr><td>{link}</td><td>{_e(classes[rec.label])}</td>"
            f"<td>{_e(classes[preds[i]])}</td><td class=num>{float(probs[i, preds[i]]):.3f}</td>"
            f"<td class=num>{float(probs[i, rec.label]):.3f}</td></tr>"
        )
    if not rows:
        return '<section id="misclassified"><h2>Misclassified</h2><p>None.</p></section>'
    return (
        f'<section id="misclassified"><h2>Misclassified ({len(rows)} of {len(wrong)}, most '
        'confident first)</h2><table class="misclassified"><tr><th>video</th><th>true</th>'
        "<th>predicted</th><th>p(predicted)</th><th>p(true)</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )
