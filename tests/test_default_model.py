"""The shipped default bundle: loads offline, is what its manifest says, and really reads images."""

import json
from pathlib import Path

import pytest

import captioner
from captioner.bundle import read_manifest
from captioner.data.scenes import generate_scenes
from captioner.inference import default_bundle_dir
from captioner.training.caption import evaluate_caption

BUNDLE = default_bundle_dir("caption")


def test_default_bundle_is_small_safetensors_and_documented():
    manifest = read_manifest(BUNDLE)
    files = sorted(p.name for p in BUNDLE.iterdir() if p.is_file())
    assert files == ["decoder.safetensors", "manifest.json", "metrics.jsonl"]
    assert sum(p.stat().st_size for p in BUNDLE.iterdir()) < 20 * 2**20
    assert manifest["encoder"]["name"] == "efficientnet_lite0"
    assert "captioner train caption" in manifest["training"]["command"]
    test = manifest["metrics"]["test"]
    assert test["BLEU-4"] >= 0.80 and test["CIDEr-D"] >= 2.0
    assert "novel" in manifest["metrics"]


@pytest.mark.slow
def test_default_model_captions_fresh_scenes(tmp_path: Path):
    """Fresh scenes it has never seen: the captions must match what is in the picture."""
    paths = generate_scenes(
        tmp_path / "scenes", seed=2026, n_train=0, n_val=0, n_test=60, n_novel=0, progress=False
    )
    scores = evaluate_caption(
        BUNDLE,
        paths["test"],
        tmp_path / "scenes" / "images",
        device="cpu",
        cache_root=tmp_path / "cache",
        workers=0,
        progress=False,
    )
    assert scores["images"] == 60
    assert scores["BLEU-4"] >= 0.7, scores
    assert scores["CIDEr-D"] >= 1.5, scores


@pytest.mark.slow
def test_examples_are_described_correctly():
    """The first-run examples: each caption names what the picture shows."""
    model = captioner.load(device="cpu")
    examples = Path(__file__).resolve().parent.parent / "examples"
    expect = json.loads((examples / "expected.json").read_text())
    results = model.caption([examples / name for name in expect])
    for (name, words), result in zip(expect.items(), results, strict=True):
        for word in words:
            assert word in result.words, (name, result.caption)
