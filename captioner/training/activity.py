"""Activity training and evaluation: clips -> cached frame grids -> the shared loop."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from captioner import metrics
from captioner.bundle import EncoderEntry, Manifest
from captioner.data.features import CachedClips, cached_clips, default_cache_root
from captioner.data.videos import load_video_dataset
from captioner.encoders import build_encoder
from captioner.inference import (
    clip_probabilities,
    encode_images,
    prepare_encoder,
    resolve_device,
)
from captioner.media import MediaError
from captioner.models.activity import ActivityModel, ActivityModelConfig
from captioner.training import distributed
from captioner.training.loop import RunConfig, TrainConfig, check_config, fit
from captioner.video import probe_video

log = logging.getLogger(__name__)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``a/b,c/d`` -> [(a, b), (c, d)]; ``motion`` -> the synthetic motion order pairs."""
    if text in ("motion", "motion+static"):
        from captioner.data.motion import ORDER_PAIRS

        pairs = [tuple(p) for p in ORDER_PAIRS]
        return [*pairs, ("static", "static")] if text == "motion+static" else pairs
    pairs = []
    for item in text.split(","):
        parts = item.strip().split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--pairs expects 'a/b,c/d' (or 'motion'), got {item!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def reversal_map(classes: Sequence[str], pairs: Sequence[tuple[str, str]]) -> torch.Tensor | None:
    """Label of each class's clips played backwards (-1: not reversible), or None if no pairs.

    ``(a, b)`` means a reversed ``a`` clip is a ``b`` clip and back; ``(s, s)`` marks a class
    that looks the same both ways (``static``).
    """
    if not pairs:
        return None
    index = {name: i for i, name in enumerate(classes)}
    table = torch.full((len(classes),), -1, dtype=torch.long)
    for a, b in pairs:
        unknown = [n for n in (a, b) if n not in index]
        if unknown:
            raise ValueError(f"--reverse-pairs names unknown classes {unknown}; classes: {classes}")
        table[index[a]], table[index[b]] = index[b], index[a]
    return table


def _complete_reversal(classes: Sequence[str], opts: ActivityOptions) -> list[int] | None:
    """The reversal map kept for test-time averaging: only when every class has a reversed
    twin, and never for the mean head (order-blind: averaging would just merge each pair)."""
    table = reversal_map(classes, opts.reverse_pairs)
    if table is None or opts.head != "rnn" or bool((table < 0).any()):
        return None
    return table.tolist()


def clip_seconds(paths: Sequence[Path], most: int = 400) -> dict[str, float] | None:
    """The shortest and the median duration of the training videos (``most`` of them, spread
    evenly): what timelines default their window to. None when none can be probed."""
    step = max(1, len(paths) // most)
    durations = []
    for path in list(paths)[::step]:
        try:
            durations.append(probe_video(path).duration_s)
        except MediaError:
            continue
    if not durations:
        return None
    return {"min": round(min(durations), 3), "median": round(statistics.median(durations), 3)}


class ActivityTask:
    """Cached clips for :func:`captioner.training.loop.fit`; a random cached clip per epoch."""

    metric_names = ("top1", "top5")  # what validate() reports, checked by fit()

    def __init__(
        self,
        model: ActivityModel,
        train: CachedClips,
        val: CachedClips,
        classes: list[str],
        device: torch.device,
        batch_size: int = 16,
        seed: int = 0,
        reverse_pairs: Sequence[tuple[str, str]] = (),
    ):
        self.model, self.train, self.val, self.classes = model, train, val, classes
        self.device, self.batch_size, self.seed = device, batch_size, seed
        self.labels = torch.tensor([r.label for r in train.records])
        self.reversed_label = reversal_map(classes, reverse_pairs)
        self.net: torch.nn.Module = model  # what loss() calls: fit() puts DDP here under torchrun

    def num_batches(self) -> int:
        share = math.ceil(len(self.train.records) / distributed.current().size)
        return math.ceil(share / self.batch_size)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        world = distributed.current()
        g = torch.Generator().manual_seed((self.seed * 1000 + epoch) * world.size + world.rank)
        order = torch.tensor(distributed.epoch_order(len(self.labels), self.seed, epoch))
        samples = self.train.features.size(1)
        for s in range(0, len(order), self.batch_size):
            rows = order[s : s + self.batch_size]
            pick = torch.randint(samples, (len(rows),), generator=g)
            feats = self.train.features[rows, pick].float()  # (B, T, N, C)
            labels = self.labels[rows]
            if self.reversed_label is not None:
                # A clip played backwards is a real clip of its pair's other class: free data.
                target = self.reversed_label[labels]
                flip = (torch.rand(len(rows), generator=g) < 0.5) & (target >= 0)
                feats[flip] = feats[flip].flip(1)
                labels = torch.where(flip, target, labels)
            yield feats.to(self.device), labels.to(self.device)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int) -> torch.Tensor:
        feats, labels = batch
        return self.net(feats, labels).loss

    def validate(self) -> dict[str, float]:
        probs = clip_probabilities(self.model, self.val.features[:, 0], self.device).tolist()
        labels = [r.label for r in self.val.records]
        return {
            "top1": metrics.topk_accuracy(probs, labels, 1),
            "top5": metrics.topk_accuracy(probs, labels, min(5, len(self.classes))),
        }


@dataclass(frozen=True)
class ActivityOptions:
    """Model shape and sampling options for activity training."""

    num_frames: int = 16
    train_samples: int = 2  # cached clips per training video: the centre one + random (TSN)
    grid: int = 3
    cell_dim: int = 32
    embed_dim: int = 256
    hidden_dim: int = 256
    layers: int = 1
    rnn: str = "lstm"
    bidirectional: bool = False
    head: str = "rnn"
    dropout: float = 0.3
    deltas: bool = True  # frame-to-frame changes as extra recurrent input
    batch_size: int = 16
    image_size: int | None = None  # encoder input size (None: the encoder's own, 224 px)
    reverse_pairs: tuple[tuple[str, str], ...] = ()  # time-reversal augmentation (see reversal_map)


def train_activity(
    data: str | os.PathLike,
    val: str | os.PathLike,
    out: str | os.PathLike,
    train_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    opts: ActivityOptions | None = None,
    run: RunConfig | None = None,
) -> Path:
    """Train an activity model over cached frame grids and write a bundle (``run``: encoder,
    device, resume, caches...; monitor default ``top1``)."""
    opts = opts or ActivityOptions()
    run = run or RunConfig()
    train_cfg = run.train_cfg or TrainConfig(monitor="top1")
    encoder_name, workers, name = run.encoder_name, run.workers, run.name or "activity"
    check_config(train_cfg, ActivityTask.metric_names)  # before any cache is built
    _, dev = distributed.setup(resolve_device(run.device))
    cache_root = run.cache_root or default_cache_root()
    train_data = load_video_dataset(data, train_list)
    val_data = load_video_dataset(val, val_list, classes=train_data.classes)
    encoder = build_encoder(encoder_name)
    if opts.image_size:  # small clips gain nothing from upscaling; the size travels in the bundle
        encoder.preprocess = dataclasses.replace(encoder.preprocess, size=opts.image_size)
    common = {"cache_root": cache_root, "workers": workers, "progress": train_cfg.progress}
    with distributed.main_first():  # rank 0 fills the caches; the others then read them
        enc = prepare_encoder(encoder, dev)

        def encode(batch: torch.Tensor) -> torch.Tensor:
            return encode_images(enc, batch, dev)

        train = cached_clips(train_data, enc, encode, opts.num_frames, opts.train_samples, **common)
        val_clips = cached_clips(val_data, enc, encode, opts.num_frames, 1, **common)
    config = ActivityModelConfig(
        num_classes=len(train_data.classes),
        feature_dim=encoder.feature_dim,
        grid=opts.grid,
        cell_dim=opts.cell_dim,
        embed_dim=opts.embed_dim,
        hidden_dim=opts.hidden_dim,
        layers=opts.layers,
        rnn=opts.rnn,
        bidirectional=opts.bidirectional,
        head=opts.head,
        dropout=opts.dropout,
        deltas=opts.deltas,
        reverse_map=_complete_reversal(train_data.classes, opts),
    )
    torch.manual_seed(train_cfg.seed)
    model = ActivityModel(config)
    task = ActivityTask(
        model,
        train,
        val_clips,
        train_data.classes,
        dev,
        opts.batch_size,
        train_cfg.seed,
        reverse_pairs=opts.reverse_pairs,
    )
    result = fit(task, train_cfg, out, dev, resume=run.resume)
    manifest = Manifest(
        task="activity",
        name=name,
        version="1",
        encoder=EncoderEntry.of(encoder, encoder_name),
        model=config.to_dict(),
        classes=train_data.classes,
        sampling={
            "num_frames": opts.num_frames,
            "mode": "uniform",
            "clip_seconds": clip_seconds([r.path for r in train.records]),
        },
        training={
            "data": {
                "train": str(data),
                "val": str(val),
                "train_videos": len(train.records),
                "val_videos": len(val_clips.records),
            },
            "command": run.command or "",
            "config": train_cfg.to_dict(),
            "options": asdict(opts),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
        },
        metrics={"val": result.best_metrics},
    )
    return distributed.save_bundle_on_main(out, manifest, {"model.safetensors": result.best_state})
