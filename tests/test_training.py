"""Caption training and evaluation on a tiny synthetic dataset (toy encoder, tiny decoder)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import captioner
import captioner.training.caption as caption_training
from captioner.evaluation import evaluate_caption
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig
from captioner.training.caption import CaptionModelOptions, CaptionTask, train_caption
from captioner.training.loop import RunConfig, TrainConfig, fit
from captioner.vocab import Vocabulary
from tests.conftest import save_image

OPTS = CaptionModelOptions(
    embed_dim=16, hidden_dim=32, attention_dim=16, proj_dim=32, min_count=1, batch_size=16
)
CFG = TrainConfig(epochs=2, progress=False)
METRICS = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L"}


@contextmanager
def count_encodes() -> Iterator[list[int]]:
    """Count images passed through the encoder by the feature cache while the block runs."""
    real = caption_training.encode_images
    seen: list[int] = []

    def spy(encoder, images, device):
        seen.append(images.size(0))
        return real(encoder, images, device)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(caption_training, "encode_images", spy)
        yield seen


def train(scene_data: Path, out: Path, cache: Path, **kwargs) -> Path:
    """A run over ``scene_data``; ``kwargs`` replace fields of its :class:`RunConfig`."""
    # The toy encoder: seeded random convs, for the plumbing, not the features.
    run = RunConfig(train_cfg=CFG, encoder_name="toy", device="cpu", cache_root=cache, workers=0)
    return train_caption(
        scene_data / "train.json",
        scene_data / "val.json",
        scene_data / "images",
        out,
        model_opts=OPTS,
        run=dataclasses.replace(run, **kwargs),
    )


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def subset_copy(src: Path, dst: Path, n_train: int, n_val: int) -> Path:
    """Copy the first images of the train and val splits (annotations and files) to ``dst``."""
    for split, keep in (("train", n_train), ("val", n_val)):
        doc = json.loads((src / f"{split}.json").read_text())
        doc["images"] = doc["images"][:keep]
        ids = {img["id"] for img in doc["images"]}
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
        for img in doc["images"]:
            target = dst / "images" / img["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / "images" / img["file_name"], target)
        (dst / f"{split}.json").write_text(json.dumps(doc))
    return dst


@pytest.fixture(scope="module")
def trained(scene_data, tmp_path_factory) -> tuple[Path, list[int]]:
    """A 2-epoch training run on scene_data: the bundle folder and the images it encoded."""
    root = tmp_path_factory.mktemp("train")
    with count_encodes() as encoded:
        bundle = train(scene_data, root / "bundle", root / "cache")
    return bundle, encoded


@pytest.fixture(scope="module")
def small_scenes(scene_data, tmp_path_factory) -> Path:
    """12 train and 2 val images of scene_data: for tests that train several times."""
    return subset_copy(scene_data, tmp_path_factory.mktemp("small-scenes"), 12, 2)


@pytest.fixture(scope="module")
def resumed(small_scenes, tmp_path_factory) -> dict:
    """Three runs sharing one feature cache: 2 epochs straight; 1 epoch, then resumed to 2."""
    root = tmp_path_factory.mktemp("resume")
    cache = root / "cache"
    runs: dict = {"encoded": []}
    with count_encodes() as encoded:
        runs["straight"] = train(small_scenes, root / "straight", cache)
        runs["encoded"].append(sum(encoded))
        runs["resumed"] = train(
            small_scenes, root / "resumed", cache, train_cfg=dataclasses.replace(CFG, epochs=1)
        )
        runs["encoded"].append(sum(encoded) - sum(runs["encoded"]))
        runs["after_first"] = read_metrics(runs["resumed"])
        train(small_scenes, root / "resumed", cache, resume=True)
        runs["encoded"].append(sum(encoded) - sum(runs["encoded"]))
    return runs


# --------------------------------------------------------------------------- train_caption


def test_trained_bundle_loads_and_captions(trained, scene_data) -> None:
    bundle, encoded = trained
    assert sum(encoded) == 48  # 40 train + 8 val images, each encoded once
    model = captioner.load(bundle, device="cpu")
    res = model.caption(scene_data / "images" / "test" / "000000.jpg")
    assert res.words
    assert res.caption == " ".join(res.words)
    assert set(res.words) <= set(model.vocab.itos)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training"]["data"]["train_images"] == 40
    assert manifest["training"]["epochs_run"] == 2
    assert set(manifest["metrics"]["val"]) == METRICS


def test_bundle_holds_no_pickle(trained) -> None:
    bundle, _ = trained
    top = sorted(p.name for p in bundle.iterdir())
    assert top == [
        "checkpoint",
        "curves.png",
        "decoder.safetensors",
        "manifest.json",
        "metrics.jsonl",
    ]
    pickles = [p for p in bundle.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle")]
    assert pickles == []
    checkpoint = sorted(p.name for p in (bundle / "checkpoint").iterdir())
    assert checkpoint == [
        "best.safetensors",
        "model-2.safetensors",
        "optimizer-2.safetensors",
        "state.json",
    ]


def test_metrics_log_has_one_row_per_epoch(trained) -> None:
    bundle, _ = trained
    rows = read_metrics(bundle)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["val_BLEU-4"] <= 1.0
        assert row["val_CIDEr-D"] >= 0.0
        assert row["train_loss"] > 0.0


def test_resume_continues_after_the_last_epoch(resumed) -> None:
    out = resumed["resumed"]
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == resumed["after_first"][0]  # epoch 1 was not trained again
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["epochs_run"] == 2
    # Optimizer, RNG and data order are restored: 1 + 1 epochs match 2 epochs in one go.
    straight = read_metrics(resumed["straight"])
    assert rows[1]["train_loss"] == pytest.approx(straight[1]["train_loss"], rel=1e-5)
    assert rows[1]["val_CIDEr-D"] == pytest.approx(straight[1]["val_CIDEr-D"], rel=1e-5)


def test_later_training_runs_reuse_the_feature_cache(resumed) -> None:
    assert resumed["encoded"][0] == 14  # 12 train + 2 val images, encoded by the first run
    assert resumed["encoded"][1:] == [0, 0]


def test_feature_cache_is_not_rebuilt(tmp_path) -> None:
    from captioner.data.features import build_feature_cache
    from captioner.data.images import ImageFiles
    from captioner.encoders import Preprocess

    names = [save_image(tmp_path / "imgs" / f"{i}.png", seed=i, fmt="PNG").name for i in range(3)]
    calls: list[int] = []

    def encode(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.size(0))
        return batch.float().mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, 3)

    dataset = ImageFiles([tmp_path / "imgs" / n for n in names], Preprocess(size=32))

    def build():
        return build_feature_cache(
            encode, dataset, names, tmp_path / "cache", item_shape=(1, 3),
            meta={"encoder": "fake", "preprocess": Preprocess(size=32).to_dict()},
            workers=0, progress=False,
        )  # fmt: skip

    first = build().tensor(names)
    assert calls == [3]
    second = build().tensor(names)
    assert torch.equal(first, second)
    assert calls == [3]  # nothing encoded the second time


def test_unreadable_training_image_is_skipped_with_a_warning(
    small_scenes, tmp_path, caplog
) -> None:
    root = subset_copy(small_scenes, tmp_path / "scenes", 12, 2)
    (root / "images" / "train" / "000003.jpg").write_text("not a JPEG any more")
    with caplog.at_level(logging.WARNING):
        bundle = train(
            root,
            tmp_path / "bundle",
            tmp_path / "cache",
            train_cfg=dataclasses.replace(CFG, epochs=1),
        )
    assert "000003.jpg" in caplog.text
    assert "1 of 12 images could not be read" in caplog.text
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training"]["data"]["train_images"] == 11


# --------------------------------------------------------------------------- evaluation


def test_evaluate_caption_reports_coco_metrics(trained, scene_data, tmp_path) -> None:
    bundle, _ = trained
    result = evaluate_caption(
        bundle,
        scene_data / "test.json",
        scene_data / "images",
        device="cpu",
        cache_root=tmp_path / "cache",
        workers=0,
        progress=False,
    )
    assert set(result) >= METRICS
    assert result["images"] == 8
    assert result["skipped"] == 0
    assert result["beam_size"] == OPTS.beam_size
    for name in METRICS - {"CIDEr-D"}:
        assert 0.0 <= result[name] <= 1.0
    assert result["CIDEr-D"] >= 0.0
    assert len(result["examples"]) == 5
    assert all(ex["references"] for ex in result["examples"])
    json.dumps(result)


# --------------------------------------------------------------------------- the loop


def test_training_loss_goes_down(tmp_path) -> None:
    words = ["red", "blue", "circle", "square", "a", "big", "small"]
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *words])
    captions = ["a red circle", "a blue square", "a big red square", "a small blue circle"]
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 6, 12, generator=g)  # (images, grid cells, channels)
    pairs = [(i, vocab.encode(c)) for i, c in enumerate(captions)]
    config = CaptionDecoderConfig(
        vocab_size=len(vocab), feature_dim=12, proj_dim=16, embed_dim=8, hidden_dim=16,
        attention_dim=8, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    task = CaptionTask(
        CaptionDecoder(config),
        vocab,
        features,
        pairs,
        features,
        [[c] for c in captions],
        torch.device("cpu"),
        batch_size=2,
        max_len=6,
    )
    cfg = TrainConfig(epochs=15, lr=1e-2, patience=0, progress=False)
    result = fit(task, cfg, tmp_path / "run", torch.device("cpu"))
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 15
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < min(losses[:3])


def test_cosine_schedule_is_a_function_of_the_epoch() -> None:
    from captioner.training.loop import epoch_lr

    cfg = TrainConfig(epochs=10, lr=1e-3, schedule="cosine")
    rates = [epoch_lr(cfg, e) for e in range(1, 11)]
    assert rates[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert 0 < rates[-1] < 0.05e-3
    assert epoch_lr(TrainConfig(lr=3e-4), 7) == 3e-4
    with pytest.raises(ValueError, match="schedule"):
        epoch_lr(TrainConfig(schedule="step"), 1)


# --------------------------------------------------------------------------- fit() checks first


class _LinearTask:
    """A one-weight task whose validation reports ``score``; counts the batches it hands out."""

    def __init__(self, metric_names: tuple[str, ...] | None = ("score",)) -> None:
        self.model = torch.nn.Linear(1, 1)
        self.batches = 0
        if metric_names is not None:
            self.metric_names = metric_names

    def train_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        self.batches += 1
        yield torch.ones(2, 1)

    def num_batches(self) -> int:
        return 1

    def loss(self, batch: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.model(batch).pow(2).mean()

    def validate(self) -> dict[str, float]:
        return {"score": 1.0}


def test_a_monitor_validation_never_reports_is_refused_before_the_first_epoch(tmp_path) -> None:
    task = _LinearTask()
    cfg = TrainConfig(epochs=2, progress=False, monitor="CIDEr-D")
    with pytest.raises(ValueError, match=r"monitor 'CIDEr-D'.*choose one of: score"):
        fit(task, cfg, tmp_path / "run", torch.device("cpu"))
    assert task.batches == 0
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_a_task_without_metric_names_fails_at_its_first_validation(tmp_path) -> None:
    # Not silently keeping the last epoch: the error names what validation did report.
    task = _LinearTask(metric_names=None)
    cfg = TrainConfig(epochs=3, progress=False, monitor="top1")
    with pytest.raises(ValueError, match=r"validation reported no 'top1'.*score"):
        fit(task, cfg, tmp_path / "run", torch.device("cpu"))
    assert task.batches == 1
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_an_unknown_schedule_is_refused_before_the_first_epoch(tmp_path) -> None:
    task = _LinearTask()
    cfg = TrainConfig(epochs=2, progress=False, monitor="score", schedule="step")
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
        fit(task, cfg, tmp_path / "run", torch.device("cpu"))
    assert task.batches == 0


def test_train_caption_checks_the_monitor_before_building_a_cache(small_scenes, tmp_path) -> None:
    bad = dataclasses.replace(CFG, monitor="BLEU")
    with pytest.raises(ValueError, match="monitor 'BLEU'"):
        train(small_scenes, tmp_path / "bundle", tmp_path / "cache", train_cfg=bad)
    assert not (tmp_path / "cache").exists()


def test_the_caption_task_declares_what_its_validation_reports() -> None:
    from captioner import metrics

    assert set(CaptionTask.metric_names) == set(metrics.score({0: ["a cat"]}, {0: "a cat"}))
    assert set(CaptionTask.metric_names) == METRICS
