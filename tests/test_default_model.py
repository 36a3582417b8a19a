"""The shipped default bundle: loads offline, is what its manifest says, and really reads images."""

import json
import re
from pathlib import Path

import pytest

import captioner
from captioner.bundle import read_manifest
from captioner.data.scenes import generate_scenes
from captioner.evaluation import evaluate_caption
from captioner.inference import default_bundle_dir

BUNDLE = default_bundle_dir("caption")


def test_default_bundle_is_small_safetensors_and_documented():
    manifest = read_manifest(BUNDLE)
    files = sorted(p.name for p in BUNDLE.iterdir() if p.is_file())
    assert files == ["decoder.safetensors", "domain.safetensors", "manifest.json", "metrics.jsonl"]
    assert sum(p.stat().st_size for p in BUNDLE.iterdir()) < 20 * 2**20
    assert manifest["encoder"]["name"] == "efficientnet_lite0"
    assert "captioner train caption" in manifest["training"]["command"]
    assert {"test", "novel"} <= set(manifest["metrics"])  # its figures are recorded (and
    # checked against a fresh split below, not read back as proof)


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
    """The first-run examples, scenes and real photographs: each caption names what the picture
    shows (a noun singular or plural: the counts on photographs are not all right, see the model
    card), and the photographs' object words come from object slots, not the scenes' nouns."""
    model = captioner.load(device="cpu")
    examples = Path(__file__).resolve().parent.parent / "examples"
    expect = json.loads((examples / "expected.json").read_text())
    results = model.caption([examples / name for name in expect])
    for (name, words), result in zip(expect.items(), results, strict=True):
        for word in words:
            assert re.search(rf"\b{word}s?\b", result.caption), (name, word, result.caption)
    named = {n: r.slots for n, r in zip(expect, results, strict=True) if n.startswith("photo-")}
    assert sum(bool(s) for s in named.values()) >= 2, named


# ------------------------------------------------------------------------- activity default

ACTIVITY = default_bundle_dir("activity")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_default_activity_bundle_is_small_and_documented():
    manifest = read_manifest(ACTIVITY)
    files = sorted(p.name for p in ACTIVITY.iterdir() if p.is_file())
    assert files == ["manifest.json", "metrics.jsonl", "model.safetensors"]
    assert not any(p.is_dir() for p in ACTIVITY.iterdir())
    assert sum(p.stat().st_size for p in ACTIVITY.iterdir()) < 20 * 2**20
    assert manifest["encoder"]["name"] == "efficientnet_lite0"
    assert "captioner train activity" in manifest["training"]["command"]
    assert {"test", "test_mean_pool_baseline"} <= set(manifest["metrics"])


@pytest.mark.slow
def test_default_activity_model_labels_the_example_clips():
    model = captioner.load(ACTIVITY, device="cpu")
    clips = sorted(EXAMPLES.glob("clip-*.webm"))
    assert len(clips) >= 3
    for clip, result in zip(clips, model.classify(clips, top_k=3), strict=True):
        assert result.label == clip.stem.removeprefix("clip-"), (clip.name, result.top_k)


@pytest.mark.slow
def test_default_activity_model_on_fresh_clips(tmp_path: Path):
    """Clips from a seed it never saw, all nine classes: the order-dependent pairs included."""
    from captioner.data.motion import CLASSES, generate_motion
    from captioner.evaluation import evaluate_activity
    from captioner.training.activity import parse_pairs

    generate_motion(
        tmp_path / "motion",
        seed=2027,
        n_per_class=0,
        n_val_per_class=0,
        n_test_per_class=3,
        progress=False,
    )
    report = evaluate_activity(
        ACTIVITY,
        tmp_path / "motion" / "test",
        device="cpu",
        progress=False,
        workers=0,
        pairs=parse_pairs("motion"),
        cache_root=tmp_path / "cache",
    )
    assert report["videos"] == 3 * len(CLASSES)
    assert report["top1"] >= 0.85, report["per_class"]
    # Order matters: a clip and its time-reversed twin class are told apart (chance is 0.5).
    assert report["order_pairs_top1"] >= 0.85, report["order_pairs"]
