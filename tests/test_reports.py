"""Evaluation reports (HTML + PNG) and training curves.

The caption report runs on the tiny seeded bundle and the synthetic scenes; the activity report
on made-up probabilities (and once through the CLI with a tiny random bundle); the curves on a
few epochs of a toy decoder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.bundle import EncoderEntry, save_bundle
from captioner.cli import main
from captioner.data.captions import CaptionRecord
from captioner.data.videos import VideoRecord
from captioner.drawing import PALETTE, attention_overlay
from captioner.encoders import build_encoder
from captioner.evaluation import (
    ActivityEvaluation,
    classification_report,
    pair_accuracy,
    run_caption_evaluation,
    write_activity_report,
    write_caption_report,
)
from captioner.evaluation.reports import per_image_scores
from captioner.inference import CaptionResult
from captioner.models.activity import ActivityModel, ActivityModelConfig
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig
from captioner.training.caption import CaptionTask
from captioner.training.curves import plot_curves, read_history
from captioner.training.loop import TrainConfig, fit
from captioner.vocab import Vocabulary
from tests.conftest import make_image

METRICS = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L"}


class Page(HTMLParser):
    """The parts of a report page the tests look at: articles by section, images, links."""

    def __init__(self, text: str):
        super().__init__()
        self.section: str | None = None
        self.articles: dict[str, list[dict]] = {}
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._field: str | None = None
        self._table: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
        elif tag == "article":
            self.articles.setdefault(self.section, []).append(
                {**a, "hypothesis": "", "references": [], "words": [], "strip": []}
            )
        elif tag == "img":
            self.imgs.append(a["src"])
            if a.get("src", "").startswith("attention/"):
                self.articles[self.section][-1]["strip"].append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "table":
            self._table = a.get("class")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "p" and a.get("class") == "hypothesis":
            self._field = "hypothesis"
        elif tag == "li" and self.section and self.articles.get(self.section):
            self.articles[self.section][-1]["references"].append("")
            self._field = "references"
        elif tag == "figcaption":
            self.articles[self.section][-1]["words"].append("")
            self._field = "words"
        elif tag in ("td", "th") and self._table:
            self.tables[self._table][-1].append("")
            self._field = "cell"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "li", "figcaption", "td", "th"):
            self._field = None
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._field == "cell":
            self.tables[self._table][-1][-1] += data
        elif self._field == "hypothesis":
            self.articles[self.section][-1]["hypothesis"] += data
        elif self._field in ("references", "words"):
            self.articles[self.section][-1][self._field][-1] += data


def near(img: Image.Image, colour: tuple[int, int, int], tol: int = 40) -> int:
    """Number of pixels within ``tol`` (per channel) of ``colour``."""
    arr = np.asarray(img.convert("RGB"), dtype=np.int32)
    return int((np.abs(arr - np.array(colour)).max(-1) <= tol).sum())


# --------------------------------------------------------------------------- caption report


@pytest.fixture(scope="module")
def caption_eval(tiny_bundle, scene_data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("report-cache")
    return run_caption_evaluation(
        tiny_bundle,
        scene_data / "test.json",
        scene_data / "images",
        device="cpu",
        cache_root=cache,
        workers=0,
        progress=False,
    )


@pytest.fixture(scope="module")
def caption_report(caption_eval, tmp_path_factory) -> tuple[Path, Page]:
    out = tmp_path_factory.mktemp("caption-report")
    page = write_caption_report(out, caption_eval, samples=3, extremes=2)
    return out, Page(page.read_text())


def test_caption_report_writes_the_page_and_the_metrics(caption_eval, caption_report) -> None:
    out, _ = caption_report
    assert (out / "index.html").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(caption_eval.result))
    assert set(saved) >= METRICS


def test_sample_captions_on_the_page_are_the_scored_ones(caption_eval, caption_report) -> None:
    _, page = caption_report
    samples = page.articles["samples"]
    assert len(samples) == 3
    for art in samples:
        row = int(art["data-row"])
        assert art["hypothesis"] == caption_eval.hypotheses[row]
        assert art["references"] == caption_eval.records[row].captions


def test_every_image_on_the_page_is_a_relative_file_in_the_report(caption_report) -> None:
    out, page = caption_report
    assert page.imgs
    for src in page.imgs:
        assert not src.startswith(("/", "file:", "http"))
        assert ".." not in src
        assert (out / src).is_file(), src


def test_best_examples_score_at_least_the_worst(caption_eval, caption_report) -> None:
    _, page = caption_report
    best = [float(a["data-score"]) for a in page.articles["best"]]
    worst = [float(a["data-score"]) for a in page.articles["worst"]]
    assert len(best) == len(worst) == 2
    assert min(best) >= max(worst)
    rows = {a["data-row"] for a in page.articles["best"] + page.articles["worst"]}
    assert len(rows) == 4  # nobody is both best and worst


def test_per_image_cider_averages_to_the_reported_corpus_score(caption_eval) -> None:
    cider, bleu4 = per_image_scores(
        [r.captions for r in caption_eval.records], caption_eval.hypotheses
    )
    assert np.mean(cider) == pytest.approx(caption_eval.result["CIDEr-D"])
    assert all(0.0 <= b <= 1.0 for b in bleu4)


def test_attention_strip_has_one_overlay_per_word_at_the_image_size(
    caption_eval, caption_report, scene_data
) -> None:
    out, page = caption_report
    for art in page.articles["samples"]:
        row = int(art["data-row"])
        assert art["words"] == caption_eval.hypotheses[row].split()
        assert len(art["strip"]) == len(art["words"])
        with Image.open(scene_data / "images" / caption_eval.records[row].file_name) as original:
            size = original.size
        overlays = [np.asarray(Image.open(out / src)) for src in art["strip"]]
        assert all(o.shape[:2] == size[::-1] for o in overlays)
        if len(overlays) > 1:  # words attend to different places: not one picture repeated
            assert any(not np.array_equal(overlays[0], o) for o in overlays[1:])


def test_overlay_heats_the_attended_cell_and_keeps_the_size() -> None:
    image = make_image(1, size=120).resize((160, 120))
    left, right = np.zeros((3, 3)), np.zeros((3, 3))
    left[1, 0], right[1, 2] = 1.0, 1.0
    a, b = attention_overlay(image, left), attention_overlay(image, right)
    assert a.size == b.size == image.size
    diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).sum(-1)
    assert diff.sum() > 0
    # Where the word looked, its overlay stays closer to the photo than the other word's does.
    photo = np.asarray(image, dtype=int)
    centre_left = (slice(50, 70), slice(10, 40))
    err_a = np.abs(np.asarray(a, dtype=int) - photo)[centre_left].mean()
    err_b = np.abs(np.asarray(b, dtype=int) - photo)[centre_left].mean()
    assert err_a < err_b


def test_caption_report_escapes_text(tmp_path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    make_image(2).save(images / "a&b.png")
    nasty = 'a <b>bold</b> & "quoted" cat'
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "cat"])
    evaluation = SimpleNamespace(
        result={"CIDEr-D": 0.5, "images": 1},
        records=[CaptionRecord("1", "a&b.png", [nasty, "a cat"])],
        hypotheses=["a cat"],
        images=images,
        captioner=SimpleNamespace(name="<model>", vocab=vocab),
        attention=lambda rows: [
            CaptionResult(
                "a cat", -1.0, -1.0, True, ["a", "cat"], attention=torch.rand(2, 4).tolist()
            )
            for _ in rows
        ],
    )
    text = write_caption_report(tmp_path / "r", evaluation, samples=1).read_text()
    assert "<b>" not in text
    assert "<model>" not in text
    page = Page(text)
    assert page.articles["samples"][0]["references"] == [nasty, "a cat"]
    assert page.articles["samples"][0]["words"] == ["a", "cat"]


def test_cli_caption_report_matches_the_printed_json(tiny_bundle, scene_data, tmp_path) -> None:
    report = tmp_path / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["evaluate", "caption", "--bundle", str(tiny_bundle),
             "--data", str(scene_data / "val.json"), "--images", str(scene_data / "images"),
             "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
             "--report", str(report), "--report-samples", "2"]
        )  # fmt: skip
    assert code == 0
    assert json.loads(stdout.getvalue()) == json.loads((report / "metrics.json").read_text())
    assert len(Page((report / "index.html").read_text()).articles["samples"]) == 2


# --------------------------------------------------------------------------- activity report

CLASSES = ["left", "right", "static"]


def activity_eval(tmp_path: Path, pairs: bool) -> ActivityEvaluation:
    """Six videos of three classes; two of them wrong, both predicted as 'static'."""
    labels = [0, 0, 1, 1, 2, 2]
    probs = torch.tensor(
        [[0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1],
         [0.1, 0.3, 0.6], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]
    )  # fmt: skip
    records = [
        VideoRecord(tmp_path / "videos" / CLASSES[y] / f"clip {i}.mp4", y)
        for i, y in enumerate(labels)
    ]
    report = classification_report(probs, labels, CLASSES)
    if pairs:
        report.update(pair_accuracy(probs, labels, CLASSES, [("left", "right")]))
    return ActivityEvaluation(report, records, probs)


def test_activity_report_tables_and_links(tmp_path) -> None:
    evaluation = activity_eval(tmp_path, pairs=True)
    out = tmp_path / "report"
    page_path = write_activity_report(out, evaluation)
    assert json.loads((out / "metrics.json").read_text()) == evaluation.report
    with Image.open(out / "confusion.png") as img:
        assert img.format == "PNG"
    page = Page(page_path.read_text())
    assert all((out / src).is_file() for src in page.imgs)
    header, *rows = page.tables["per-class"]
    assert header == ["class", "accuracy", "support", "most confused with"]
    assert [r[:3] for r in rows] == [
        ["left", "0.500", "2"],
        ["right", "0.500", "2"],
        ["static", "1.000", "2"],
    ]
    assert rows[0][3].startswith("static")
    assert rows[2][3] == "none"
    assert page.tables["pairs"][1] == ["left/right", "1.000"]
    # The two mistakes, most confident first, linked relative to the report folder.
    wrong = [evaluation.records[1].path, evaluation.records[3].path]
    assert [(out / h.replace("%20", " ")).resolve() for h in page.links] == wrong
    assert all(not h.startswith("/") for h in page.links)


def test_activity_report_without_pairs_has_no_pair_table(tmp_path) -> None:
    page = Page(write_activity_report(tmp_path / "r", activity_eval(tmp_path, False)).read_text())
    assert "pairs" not in page.tables
    assert "per-class" in page.tables


def test_cli_activity_report(tmp_path) -> None:
    from captioner.data.motion import CLASSES as MOTION
    from captioner.data.motion import generate_motion

    data = tmp_path / "motion"
    generate_motion(data, seed=1, n_per_class=1, n_val_per_class=1, n_test_per_class=1,
                    frames=6, size=48, progress=False)  # fmt: skip
    torch.manual_seed(0)
    toy = build_encoder("toy")
    config = ActivityModelConfig(
        num_classes=len(MOTION), feature_dim=toy.feature_dim, cell_dim=4, embed_dim=8, hidden_dim=8
    )
    manifest = {
        "task": "activity",
        "name": "tiny-activity",
        "version": "1",
        "encoder": EncoderEntry.of(toy, "toy").to_dict(),
        "model": config.to_dict(),
        "classes": list(MOTION),
        "sampling": {"num_frames": 2, "mode": "uniform"},
    }
    bundle = save_bundle(
        tmp_path / "bundle", manifest, {"model.safetensors": ActivityModel(config).state_dict()}
    )
    report = tmp_path / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            ["evaluate", "activity", "--bundle", str(bundle), "--data", str(data / "test"),
             "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
             "--pairs", "motion", "--report", str(report)]
        )  # fmt: skip
    assert code == 0
    printed = json.loads(stdout.getvalue())
    assert printed == json.loads((report / "metrics.json").read_text())
    page = Page((report / "index.html").read_text())
    assert len(page.tables["per-class"]) == 1 + len(MOTION)
    assert len(page.tables["pairs"]) == 1 + len(printed["order_pairs"])
    assert (report / "confusion.png").is_file()


# --------------------------------------------------------------------------- training curves


def toy_fit(out: Path, epochs: int = 3, tensorboard: Path | None = None) -> list[dict]:
    """A few epochs of a toy caption decoder over random features (no encoder, no images)."""
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "red", "blue", "circle"])
    captions = ["a red circle", "a blue circle"]
    features = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    config = CaptionDecoderConfig(
        vocab_size=len(vocab), feature_dim=6, proj_dim=8, embed_dim=8, hidden_dim=8,
        attention_dim=8, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    task = CaptionTask(
        CaptionDecoder(config),
        vocab,
        features,
        [(i, vocab.encode(c)) for i, c in enumerate(captions)],
        features,
        [[c] for c in captions],
        torch.device("cpu"),
        batch_size=2,
        max_len=4,
    )
    cfg = TrainConfig(
        epochs=epochs, lr=1e-2, patience=0, progress=False,
        tensorboard=str(tensorboard) if tensorboard else None,
    )  # fmt: skip
    return fit(task, cfg, out, torch.device("cpu")).history


def plot_areas(path: Path) -> tuple[Image.Image, Image.Image]:
    """The two panels' plot areas of a curves.png (above the x axis and the legend)."""
    with Image.open(path) as img:
        img.load()
    assert img.size == (1200, 440)
    top, bottom, w = 30, 340, img.width // 2
    return img.crop((0, top, w, bottom)), img.crop((w, top, img.width, bottom))


def test_fit_draws_loss_and_validation_curves(tmp_path) -> None:
    toy_fit(tmp_path / "run")
    loss, val = plot_areas(tmp_path / "run" / "curves.png")
    assert near(loss, PALETTE[0]) > 100  # the training loss line
    assert sum(near(val, c) for c in PALETTE[:6]) > 100  # six metrics, some may coincide


def test_curves_draw_every_validation_metric(tmp_path) -> None:
    history = [
        {"epoch": e, "train_loss": 3.0 / e, **{f"val_m{k}": k + 0.1 * e for k in range(6)}}
        for e in range(1, 5)
    ]
    plot_curves(history, tmp_path / "curves.png")
    _, val = plot_areas(tmp_path / "curves.png")
    for colour in PALETTE[:6]:  # one line per metric
        assert near(val, colour) > 30


def test_tensorboard_gets_the_same_scalars(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = toy_fit(tmp_path / "run", epochs=2, tensorboard=tmp_path / "tb")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"train/loss", "val/CIDEr-D", "val/BLEU-4"} <= set(events.Tags()["scalars"])
    loss = [e.value for e in events.Scalars("train/loss")]
    assert loss == pytest.approx([row["train_loss"] for row in history], rel=1e-5)


def test_history_keeps_the_latest_run(tmp_path) -> None:
    log = tmp_path / "metrics.jsonl"
    rows = [{"epoch": e, "train_loss": v} for e, v in [(1, 9), (2, 8), (3, 7), (1, 5), (2, 4)]]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [(r["epoch"], r["train_loss"]) for r in read_history(log)] == [(1, 5), (2, 4)]
    # A resume that repeats an epoch (crash after the log line, before the checkpoint).
    rows = [{"epoch": e, "train_loss": v} for e, v in [(1, 9), (2, 8), (2, 7), (3, 6)]]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["train_loss"] for r in read_history(log)] == [9, 7, 6]


def test_cli_tensorboard_without_the_package_exits_2_naming_the_fix(
    tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with caplog.at_level(logging.ERROR):
        code = main(
            ["train", "caption", "--data", "x.json", "--val", "y.json", "--images", "i",
             "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")]
        )  # fmt: skip
    assert code == 2
    assert "pip install tensorboard" in caplog.text
    assert not (tmp_path / "out").exists()
