"""Caption training and evaluation: the task-specific parts around the shared loop."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from captioner import metrics
from captioner.bundle import EncoderEntry, Manifest
from captioner.data.captions import load_captions
from captioner.data.features import CachedSplit, cached_split, default_cache_root
from captioner.data.images import ImageFiles, image_loader
from captioner.encoders import Encoder, build_encoder
from captioner.inference import CaptionPipeline, encode_images, prepare_encoder, resolve_device
from captioner.models.caption import CaptionDecoder, CaptionDecoderConfig
from captioner.training import distributed
from captioner.training.loop import RunConfig, TrainConfig, check_config, fit
from captioner.vocab import Vocabulary

log = logging.getLogger(__name__)


def pad_captions(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
    """Token id lists -> (B, T) right-padded tensor."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class CaptionTask:
    """(image, caption) pairs over cached features, for :func:`captioner.training.loop.fit`."""

    #: what :meth:`validate` reports (:func:`captioner.metrics.score`), checked by fit()
    metric_names = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "ROUGE-L")

    def __init__(
        self,
        model: CaptionDecoder,
        vocab: Vocabulary,
        train_features: torch.Tensor,
        train_pairs: list[tuple[int, list[int]]],
        val_features: torch.Tensor,
        val_refs: list[list[str]],
        device: torch.device,
        batch_size: int = 64,
        beam_size: int = 3,
        max_len: int = 20,
        scheduled_sampling: float = 0.0,
        seed: int = 0,
    ):
        self.model: torch.nn.Module = model
        self.decoder = model
        self.vocab = vocab
        self.train_features = train_features
        self.pairs = train_pairs
        self.val_features = val_features
        self.val_refs = val_refs
        self.device = device
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.max_len = max_len
        self.scheduled_sampling = scheduled_sampling
        self.seed = seed
        self.net: torch.nn.Module = model  # what loss() calls: fit() puts DDP here under torchrun

    def num_batches(self) -> int:
        return math.ceil(math.ceil(len(self.pairs) / distributed.current().size) / self.batch_size)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = distributed.epoch_order(len(self.pairs), self.seed, epoch)  # this rank's share
        for start in range(0, len(order), self.batch_size):
            chunk = [self.pairs[i] for i in order[start : start + self.batch_size]]
            rows = torch.tensor([r for r, _ in chunk])
            feats = self.train_features[rows].to(self.device, non_blocking=True).float()
            caps = pad_captions([c for _, c in chunk], self.vocab.pad_id).to(self.device)
            yield feats, caps

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int) -> torch.Tensor:
        feats, caps = batch
        # Scheduled sampling ramps up over the first epochs (Bengio et al. 2015).
        p = min(self.scheduled_sampling, self.scheduled_sampling * (epoch - 1) / 5)
        return self.net(feats, caps, sample_prob=p).loss

    def validate(self) -> dict[str, float]:
        decoding = {"beam_size": self.beam_size, "max_len": self.max_len}
        search = CaptionPipeline.search_defaults(decoding, self.vocab)
        # The serving pipeline decodes: validation scores what users will get.
        pipeline = CaptionPipeline(self.decoder, self.vocab, search, self.device)
        hyps = [r.caption for r in pipeline.caption_features(self.val_features, batch_size=64)]
        refs = dict(enumerate(self.val_refs))
        return metrics.score(refs, dict(enumerate(hyps)))


class EncoderDecoder(torch.nn.Module):
    """Encoder and decoder trained together (fine-tuning the encoder's last blocks)."""

    def __init__(self, encoder: Encoder, decoder: CaptionDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder


class _PairImages(Dataset):
    """(image, caption) pairs read from files: the fine-tuning path has no feature cache."""

    def __init__(self, images: ImageFiles, pairs: list[tuple[int, list[int]]]):
        self.images, self.pairs = images, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        row, caption = self.pairs[i]
        return {**self.images[row], "caption": caption}


def _collate_pairs(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    good = [it for it in items if not it["error"]]  # unreadable files were logged when cached
    return (
        torch.stack([it["image"] for it in good]),
        pad_captions([it["caption"] for it in good]),
    )


class FineTuneCaptionTask(CaptionTask):
    """Trains the encoder's last blocks with the decoder; images are encoded every step."""

    def __init__(
        self,
        encoder: Encoder,
        decoder: CaptionDecoder,
        train_files: list[Path],
        val_files: list[Path],
        workers: int,
        **kwargs,
    ):
        super().__init__(decoder, train_features=None, val_features=None, **kwargs)
        self.model = EncoderDecoder(encoder, decoder)
        self.encoder = encoder
        self.train_images = ImageFiles(train_files, encoder.preprocess)
        self.val_images = ImageFiles(val_files, encoder.preprocess)
        self.workers = workers

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        loader = DataLoader(
            _PairImages(self.train_images, self.pairs),
            batch_size=self.batch_size,
            sampler=torch.randperm(len(self.pairs), generator=g).tolist(),
            num_workers=self.workers,
            collate_fn=_collate_pairs,
        )
        for images, caps in loader:
            yield images.to(self.device), caps.to(self.device)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int) -> torch.Tensor:
        images, caps = batch
        x = self.encoder.preprocess.normalize(images).contiguous(memory_format=torch.channels_last)
        grid, _ = self.encoder(x)
        return super().loss((grid, caps), epoch)

    def validate(self) -> dict[str, float]:
        loader = image_loader(self.val_images, self.batch_size, self.workers)
        self.val_features = torch.cat(
            [encode_images(self.encoder, b["image"], self.device).float() for b in loader]
        )
        return super().validate()


@dataclass(frozen=True)
class CaptionModelOptions:
    """Decoder shape and vocabulary options for training."""

    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    proj_dim: int = 512
    dropout: float = 0.5
    attention: bool = True
    alpha_c: float = 1.0
    min_count: int = 5
    max_len: int = 20
    beam_size: int = 3
    scheduled_sampling: float = 0.0
    batch_size: int = 64
    positions: bool = True  # learned grid-cell position embeddings in the attention memory
    fine_tune_blocks: int = 0  # > 0: train the encoder's last blocks too (no feature cache)


def train_caption(
    train_data: str | os.PathLike,
    val_data: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    val_images: str | os.PathLike | None = None,
    train_split: str | None = None,
    val_split: str | None = None,
    model_opts: CaptionModelOptions | None = None,
    run: RunConfig | None = None,
) -> Path:
    """Train a caption decoder and write a bundle (``run``: encoder, device, resume, caches...;
    its ``command`` is recorded in the manifest; monitor default ``CIDEr-D``).

    With a frozen encoder (the default) the encoder runs once per image into the feature cache
    and epochs read the cache; with ``fine_tune_blocks`` its last blocks train too, and images
    are encoded at every step.
    """
    model_opts = model_opts or CaptionModelOptions()
    run = run or RunConfig()
    train_cfg = run.train_cfg or TrainConfig()
    encoder_name, workers, name = run.encoder_name, run.workers, run.name or "captioner"
    check_config(train_cfg, CaptionTask.metric_names)  # before any cache is built
    world, dev = distributed.setup(resolve_device(run.device))
    cache_root = run.cache_root or default_cache_root()
    train_records = load_captions(train_data, train_split)
    val_records = load_captions(val_data, val_split)
    vocab = Vocabulary.build(
        (c for r in train_records for c in r.captions), min_count=model_opts.min_count
    )
    log.info("vocabulary: %d tokens (min count %d)", len(vocab), model_opts.min_count)
    encoder = build_encoder(encoder_name)
    common = {"cache_root": cache_root, "workers": workers, "progress": train_cfg.progress}
    tuned = model_opts.fine_tune_blocks
    if tuned and world.distributed:
        raise ValueError(
            "--fine-tune-blocks is not supported under torchrun yet: train the frozen-encoder "
            "decoder distributed, or fine-tune in one process"
        )
    if tuned:  # images are read every step; unreadable ones are dropped from their batch
        train, val = CachedSplit(train_records, None), CachedSplit(val_records, None)
    else:
        with distributed.main_first():  # rank 0 fills the caches; the others then read them
            enc = prepare_encoder(encoder, dev)

            def encode(batch: torch.Tensor) -> torch.Tensor:
                return encode_images(enc, batch, dev)

            train = cached_split(train_records, images, enc, encode, **common)
            val = cached_split(val_records, val_images or images, enc, encode, **common)
    pairs = [
        (
            row,
            ids[: model_opts.max_len + 1]
            + ([vocab.end_id] if len(ids) > model_opts.max_len + 1 else []),
        )
        for row, rec in enumerate(train.records)
        for ids in (vocab.encode(c) for c in rec.captions)
    ]
    config = CaptionDecoderConfig(
        vocab_size=len(vocab),
        feature_dim=encoder.feature_dim,
        proj_dim=model_opts.proj_dim,
        embed_dim=model_opts.embed_dim,
        hidden_dim=model_opts.hidden_dim,
        attention_dim=model_opts.attention_dim,
        dropout=model_opts.dropout,
        attention=model_opts.attention,
        alpha_c=model_opts.alpha_c,
        positions=encoder.grid_cells if model_opts.positions and model_opts.attention else 0,
    )
    torch.manual_seed(train_cfg.seed)
    model = CaptionDecoder(config)
    shared = {
        "vocab": vocab,
        "train_pairs": pairs,
        "val_refs": [r.captions for r in val.records],
        "device": dev,
        "batch_size": model_opts.batch_size,
        "beam_size": model_opts.beam_size,
        "max_len": model_opts.max_len,
        "scheduled_sampling": model_opts.scheduled_sampling,
        "seed": train_cfg.seed,
    }
    if tuned:
        encoder.freeze(tuned)
        task: CaptionTask = FineTuneCaptionTask(
            encoder,
            model,
            [Path(images) / r.file_name for r in train.records],
            [Path(val_images or images) / r.file_name for r in val.records],
            workers,
            **shared,
        )
    else:
        task = CaptionTask(
            model, train_features=train.features, val_features=val.features, **shared
        )
    result = fit(task, train_cfg, out, dev, resume=run.resume)
    weights = {"decoder.safetensors": result.best_state}
    if tuned:  # the fit saved EncoderDecoder weights: split them into the bundle's two files
        weights = {
            name: {
                k[len(prefix) :]: v for k, v in result.best_state.items() if k.startswith(prefix)
            }
            for name, prefix in (
                ("decoder.safetensors", "decoder."),
                ("encoder.safetensors", "encoder.trunk."),
            )
        }
    manifest = Manifest(
        task="caption",
        name=name,
        version="1",
        encoder=EncoderEntry.of(encoder, encoder_name, fine_tuned_blocks=tuned),
        model=config.to_dict(),
        vocabulary=vocab.to_dict(),
        decoding={
            "beam_size": model_opts.beam_size,
            "max_len": model_opts.max_len,
            "length_penalty": 0.0,
        },
        training={
            "data": {
                "train": str(train_data),
                "val": str(val_data),
                "images": str(images),
                "train_images": len(train.records),
                "train_pairs": len(pairs),
                "val_images": len(val.records),
            },
            "command": run.command or "",
            "config": train_cfg.to_dict(),
            "model_options": model_opts.__dict__,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
        },
        metrics={"val": result.best_metrics},
    )
    return distributed.save_bundle_on_main(out, manifest, weights)
