"""Fine-tuning the encoder's last block together with the decoder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import captioner
from captioner.encoders import build_encoder
from captioner.training.caption import CaptionModelOptions, train_caption
from captioner.training.loop import RunConfig, TrainConfig
from tests.test_training import subset_copy


def test_fine_tuning_trains_only_the_last_block_and_ships_it(scene_data: Path, tmp_path: Path):
    data = subset_copy(scene_data, tmp_path / "data", 6, 2)
    opts = CaptionModelOptions(
        embed_dim=16,
        hidden_dim=32,
        attention_dim=16,
        proj_dim=32,
        min_count=1,
        batch_size=8,
        fine_tune_blocks=1,
    )
    out = train_caption(
        data / "train.json",
        data / "val.json",
        data / "images",
        tmp_path / "bundle",
        model_opts=opts,
        run=RunConfig(
            train_cfg=TrainConfig(epochs=1, progress=False, lr=1e-2),
            device="cpu",
            cache_root=tmp_path / "cache",
            workers=0,
        ),
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"]["fine_tuned_blocks"] == 1
    assert set(manifest["files"]) == {"decoder.safetensors", "encoder.safetensors"}
    assert not (tmp_path / "cache" / "features").exists()  # no cache on this path

    tuned = captioner.load(out, device="cpu")
    pristine = build_encoder("efficientnet_lite0")
    before = dict(pristine.trunk.named_parameters())
    after = dict(tuned.encoder.trunk.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, changed
    assert all(".conv_head." in n or ".bn2." in n for n in changed), changed
    assert isinstance(tuned.caption(data / "images" / "train" / "000000.jpg").caption, str)
