"""Evaluation reports (a static HTML page with PNGs) and training curves, drawn with Pillow.

``write_caption_report`` and ``write_activity_report`` turn what an evaluation computed into a
folder that opens in any browser: ``index.html`` (relative links only, every text escaped),
``metrics.json`` and the pictures it shows. ``TrainingCurves`` redraws ``curves.png`` from a
run's ``metrics.jsonl`` after every epoch and optionally logs the same scalars to TensorBoard.
Nothing here needs matplotlib.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from captioner import metrics

if TYPE_CHECKING:
    from captioner.training.activity import ActivityEvaluation
    from captioner.training.caption import CaptionEvaluation

log = logging.getLogger(__name__)

THUMB_SIDE = 256  # longest side of the images copied into a caption report
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
# Anchors of a perceptually ordered dark-blue -> yellow heat scale (close to viridis).
_HEAT = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float32
)


# --------------------------------------------------------------------------- drawing helpers


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB colours of the heat scale, shape (..., 3)."""
    pos = np.clip(values, 0.0, 1.0) * (len(_HEAT) - 1)
    lo = np.minimum(pos.astype(np.int64), len(_HEAT) - 2)
    frac = (pos - lo)[..., None]
    return (_HEAT[lo] * (1 - frac) + _HEAT[lo + 1] * frac).round().astype(np.uint8)


_HEAT_LUT = heat_colours(np.linspace(0.0, 1.0, 256)).astype(np.float32)


def grid_shape(cells: int) -> tuple[int, int]:
    """(rows, cols) of a square-ish attention grid of ``cells`` cells (as inference reports)."""
    side = int(round(cells**0.5))
    return (side, cells // side) if side and side * (cells // side) == cells else (1, cells)


def attention_overlay(
    image: Image.Image, weights: np.ndarray, strength: float = 0.6
) -> Image.Image:
    """The image with one word's attention grid (rows, cols) upsampled and blended as a heatmap.

    The encoder sees the whole image resized (no crop), so the grid spans the whole picture.
    Weights are scaled to their maximum: the picture shows where the word looked, not how
    sharply. Returns an RGB image of the input's size.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    grid = np.asarray(weights, dtype=np.float32)
    grid = grid / grid.max() if grid.max() > 0 else grid
    up = Image.fromarray(grid).resize(image.size, Image.Resampling.BILINEAR)  # mode F
    a = np.clip(np.asarray(up), 0.0, 1.0)[..., None]  # (H, W, 1)
    heat = _HEAT_LUT[(a[..., 0] * 255).astype(np.uint8)]  # (H, W, 3)
    # Dim what the word ignored, tint what it attended: readable on dark and bright images.
    shaded = rgb * (0.45 + 0.55 * a)
    out = shaded * (1 - strength * a) + heat * (strength * a)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def _thumbnail(path: Path, side: int = THUMB_SIDE) -> Image.Image:
    with Image.open(path) as img:
        img.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, much faster
        thumb = img.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    return thumb


# --------------------------------------------------------------------------- HTML helpers

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
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, count)})


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
            thumbs[row] = _thumbnail(evaluation.images / records[row].file_name)
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
    vocab = evaluation.captioner.vocab
    strips = {}
    for row, hyp in zip(rows, evaluation.attention(rows), strict=True):
        thumb = thumbs[row]
        words = [vocab.itos[t] for t in hyp.tokens]  # search output holds no special tokens
        if hyp.attention is None or thumb is None:
            strips[row] = '<p class="note">no attention for this caption</p>'
            continue
        if vocab.decode(hyp.tokens) != evaluation.hypotheses[row]:  # never a wrong caption's map
            log.warning("report: re-decoding row %d gave a different caption; no strip", row)
            continue
        att = hyp.attention.float().cpu().numpy()  # (words, N)
        shape = grid_shape(att.shape[1])
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
    from captioner.training.activity import plot_confusion

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


# --------------------------------------------------------------------------- training curves


def read_history(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``metrics.jsonl``, one per epoch, as the latest run left them.

    The log is appended to: a fresh run in the same folder starts again at epoch 1, and a
    resumed run may repeat epochs after a crash, so a row replaces every row from its epoch on.
    """
    rows: list[dict] = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    return rows


def _ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """'Nice' tick values covering [lo, hi] and the decimals to print them with."""
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if step / mag == 2.5 else 0)
    return [k * step for k in range(first, last + 1)], decimals


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: Mapping[str, list[tuple[int, float]]],
    best_epoch: int | None,
    s: int,
) -> None:
    """One line chart in ``box`` (pixels at scale ``s``): axes, ticks, lines, legend."""
    x0, y0, x1, y1 = box
    small, normal = _font(12 * s), _font(14 * s)
    draw.text(((x0 + x1) // 2, y0 + 4 * s), title, font=_font(16 * s), fill="black", anchor="mt")
    points = [p for pts in series.values() for p in pts]
    legend_rows = math.ceil(len(series) / 4)
    left, top, right = x0 + 62 * s, y0 + 32 * s, x1 - 16 * s
    bottom = y1 - (44 + 20 * legend_rows) * s
    if not points:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no data", font=normal, anchor="mm")
        return
    epochs = sorted({e for e, _ in points})
    e_lo, e_hi = (epochs[0] - 0.5, epochs[0] + 0.5) if len(epochs) == 1 else (epochs[0], epochs[-1])
    yt, dec = _ticks(min(v for _, v in points), max(v for _, v in points))
    v_lo, v_hi = yt[0], yt[-1]

    def px(e: float, v: float) -> tuple[float, float]:
        return (
            left + (e - e_lo) / (e_hi - e_lo) * (right - left),
            bottom - (v - v_lo) / (v_hi - v_lo) * (bottom - top),
        )

    for v in yt:
        _, y = px(e_lo, v)
        draw.line([(left, y), (right, y)], fill=(228, 228, 228), width=s)
        draw.text((left - 6 * s, y), f"{v:.{dec}f}", font=small, fill=(80, 80, 80), anchor="rm")
    stride = max(1, math.ceil(len(epochs) / 10))
    for e in epochs[::stride]:
        x, _ = px(e, v_lo)
        draw.line([(x, bottom), (x, bottom + 4 * s)], fill=(80, 80, 80), width=s)
        draw.text((x, bottom + 6 * s), str(e), font=small, fill=(80, 80, 80), anchor="ma")
    mid = (left + right) // 2
    draw.text((mid, bottom + 22 * s), "epoch", font=small, fill="black", anchor="ma")
    if best_epoch is not None and e_lo <= best_epoch <= e_hi:
        x, _ = px(best_epoch, v_lo)
        for y in range(top, bottom, 8 * s):  # dashed
            draw.line([(x, y), (x, min(y + 4 * s, bottom))], fill=(150, 150, 150), width=s)
        draw.text((x + 3 * s, top), "best", font=small, fill=(120, 120, 120), anchor="la")
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120), width=s)
    r = 3 * s
    for k, (name, pts) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        xy = [px(e, v) for e, v in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2 * s, joint="curve")
        if len(xy) <= 60:
            for x, y in xy:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        lx = left + (k % 4) * (right - left) // 4
        ly = bottom + (42 + 20 * (k // 4)) * s
        draw.line([(lx, ly + 7 * s), (lx + 18 * s, ly + 7 * s)], fill=colour, width=3 * s)
        draw.text((lx + 24 * s, ly), name, font=normal, fill="black")


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Two panels: training loss, and every validation metric, per epoch -> a PNG at ``path``."""
    s = 2  # draw at twice the size and shrink: cheap anti-aliasing for Pillow's lines
    width, height = 1200, 440
    img = Image.new("RGB", (width * s, height * s), "white")
    draw = ImageDraw.Draw(img)
    loss = {"train loss": [(r["epoch"], r["train_loss"]) for r in history if "train_loss" in r]}
    names = [k for r in history for k in r if k.startswith("val_")]
    val = {
        name[4:]: [(r["epoch"], float(r[name])) for r in history if _is_number(r.get(name))]
        for name in dict.fromkeys(names)
    }
    best = [r["epoch"] for r in history if r.get("best")]
    best_epoch = best[-1] if best else None
    _draw_panel(draw, (0, 0, width * s // 2, height * s), "training loss", loss, best_epoch, s)
    _draw_panel(draw, (width * s // 2, 0, width * s, height * s), "validation", val, best_epoch, s)
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp.png")
    img.resize((width, height), Image.Resampling.LANCZOS).save(tmp)
    os.replace(tmp, out)  # a viewer never sees a half-written file
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def require_tensorboard() -> None:
    """Raise a ValueError naming the fix unless the ``tensorboard`` package is importable."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ValueError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None


class TrainingCurves:
    """Per-epoch side outputs of a training run: ``curves.png`` and, optionally, TensorBoard.

    Drawing never stops training: a failure is logged as a warning.
    """

    def __init__(self, out_dir: str | os.PathLike, tensorboard: str | os.PathLike | None = None):
        self.out = Path(out_dir)
        self.writer = None
        self.epochs = 0
        if tensorboard is not None:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tensorboard))

    def epoch(self, row: Mapping[str, Any]) -> None:
        """Log one ``metrics.jsonl`` row and redraw the curves."""
        if self.writer is not None:
            step = int(row["epoch"])
            self.writer.add_scalar("train/loss", row["train_loss"], step)
            self.writer.add_scalar("train/lr", row["lr"], step)
            for key, value in row.items():
                if key.startswith("val_") and _is_number(value):
                    self.writer.add_scalar(f"val/{key[4:]}", value, step)
            self.writer.flush()
        self.epochs += 1
        self.draw()

    def draw(self) -> Path | None:
        """Redraw ``curves.png`` from ``metrics.jsonl``; None when there is nothing to draw."""
        log_path = self.out / "metrics.jsonl"
        try:
            if log_path.is_file():
                return plot_curves(read_history(log_path), self.out / "curves.png")
        except Exception as exc:  # a plot is never worth a lost training run
            log.warning("could not draw %s: %s", self.out / "curves.png", exc)
        return None

    def close(self) -> None:
        """Close the TensorBoard writer; draw the curves if no epoch ran (resumed at the end)."""
        if not self.epochs:
            self.draw()
        if self.writer is not None:
            self.writer.close()
