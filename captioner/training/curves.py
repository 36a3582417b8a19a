"""Training curves: ``curves.png`` redrawn from a run's ``metrics.jsonl`` after every epoch,
and optionally the same scalars in TensorBoard. Drawing never stops training."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from captioner.drawing import PALETTE, font
from captioner.files import atomic_write

log = logging.getLogger(__name__)


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
    small, normal = font(12 * s), font(14 * s)
    draw.text(((x0 + x1) // 2, y0 + 4 * s), title, font=font(16 * s), fill="black", anchor="mt")
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
    small = img.resize((width, height), Image.Resampling.LANCZOS)
    # Atomic, so a viewer never sees a half-written file.
    return atomic_write(path, lambda tmp: small.save(tmp, format="PNG"))


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
