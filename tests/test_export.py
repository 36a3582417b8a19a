"""``captioner export``: the exported graphs caption exactly like the eager model."""

from __future__ import annotations

import json
import logging
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import captioner
from captioner.bundle import save_bundle
from captioner.cli import main
from captioner.export import ExportedCaptioner
from captioner.files import default_file_mode
from captioner.inference import default_bundle_dir

# Tests that export are slow: the EfficientNet encoder is exported once per format (~30 s).
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGES = [*sorted(EXAMPLES.glob("scene-*.jpg")), EXAMPLES / "photo-chelsea.jpg"]


@pytest.fixture(scope="module")
def eager() -> captioner.Captioner:
    return captioner.load(device="cpu")


@pytest.fixture(scope="module")
def images(eager: captioner.Captioner) -> torch.Tensor:
    return torch.stack([eager.load_image(p) for p in IMAGES])  # (7, 3, S, S) uint8


@pytest.fixture(scope="module")
def export_to(tmp_path_factory: pytest.TempPathFactory):
    """``export_to(fmt)``: the default bundle exported through the CLI, once per format."""
    done: dict[str, Path] = {}

    def export(fmt: str) -> Path:
        if fmt == "onnx":
            pytest.importorskip("onnxscript")
            pytest.importorskip("onnxruntime")
        if fmt not in done:
            out = tmp_path_factory.mktemp(fmt)
            args = ["export", str(default_bundle_dir()), "--format", fmt, "--out", str(out)]
            assert main(args) == 0
            done[fmt] = out
        return done[fmt]

    return export


@pytest.fixture(params=["torchscript", "onnx"])
def exported(request, export_to) -> Path:
    return export_to(request.param)


@pytest.mark.slow
def test_exported_pipeline_captions_like_eager(exported: Path, eager, images) -> None:
    runner = ExportedCaptioner(exported, threads=1)
    feats_eager, feats_export = eager.encode(images), runner.encode(images)
    assert feats_export.shape == feats_eager.shape
    torch.testing.assert_close(feats_export, feats_eager, atol=1e-3, rtol=1e-3)
    for beam_size in (3, 1):  # beam search, then greedy, both through the exported step
        want = eager.caption_features(feats_eager, beam_size=beam_size)
        got = runner.caption_features(feats_export, beam_size=beam_size)
        assert [r.caption for r in got] == [r.caption for r in want]
        assert [r.log_prob for r in got] == pytest.approx([r.log_prob for r in want], abs=1e-3)
        # The export carries the ImageNet head: the same tags, and slots named the same way.
        assert [[t["name"] for t in r.tags] for r in got] == [
            [t["name"] for t in r.tags] for r in want
        ]
        named = [[(n["position"], n["name"]) for n in r.slots or []] for r in want]
        assert [[(n["position"], n["name"]) for n in r.slots or []] for r in got] == named
    # One image at a time (a batch of one) and from a path, as a deployment would call it.
    single = runner.caption(str(IMAGES[-1]), beam_size=3)
    assert single.caption == eager.caption(IMAGES[-1], beam_size=3).caption


@pytest.mark.slow
def test_export_json_describes_the_graphs(exported: Path, eager) -> None:
    meta = json.loads((exported / "export.json").read_text())
    assert meta["vocabulary"] == eager.vocab.itos
    assert meta["special_tokens"] == {"pad": 0, "start": 1, "end": 2, "unk": 3}
    assert meta["preprocess"]["size"] == eager.preprocess.size
    assert list(meta["preprocess"]["mean"]) == list(eager.preprocess.mean)
    manifest = json.loads((default_bundle_dir() / "manifest.json").read_text())
    assert meta["source"]["name"] == manifest["name"]
    assert meta["source"]["sha256"] == {k: v["sha256"] for k, v in manifest["files"].items()}
    step = meta["graphs"]["decoder_step"]
    assert [i["name"] for i in step["inputs"]] == ["tokens", "h", "c", "memory", "keys"]
    assert step["outputs"][0] == {
        "name": "log_probs",
        "dtype": "float32",
        "shape": ["batch", len(eager.vocab)],
    }
    for graph in meta["graphs"].values():
        assert (exported / graph["file"]).stat().st_size > 0
    # Every file as a plain open() would make it: head.safetensors used to be 0600.
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in exported.iterdir()}
    assert "head.safetensors" in modes
    assert modes == dict.fromkeys(modes, default_file_mode())


def _greedy_with_onnxruntime(folder: Path, image: Path) -> str:
    """The README's plain-onnxruntime example: no captioner import, no torch."""
    import onnxruntime as ort

    meta = json.loads((folder / "export.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    run = {
        name: ort.InferenceSession(str(folder / f"{name}.onnx"), options).run
        for name in ("encoder", "decoder_init", "decoder_step")
    }
    size, ids = meta["preprocess"]["size"], meta["special_tokens"]
    img = Image.open(image).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(img).transpose(2, 0, 1)[None]  # (1, 3, S, S) uint8
    (features,) = run["encoder"](None, {"images": pixels})
    h, c, memory, keys = run["decoder_init"](None, {"features": features})
    token, words = np.array([ids["start"]]), []
    for _ in range(meta["decoding"]["max_len"]):
        feed = {"tokens": token, "h": h, "c": c, "memory": memory, "keys": keys}
        log_probs, _attention, h, c = run["decoder_step"](None, feed)
        log_probs[:, [ids["pad"], ids["start"], ids["unk"]]] = -np.inf
        token = log_probs.argmax(axis=-1)
        if token[0] == ids["end"]:
            break
        words.append(meta["vocabulary"][token[0]])
    return " ".join(words)


@pytest.mark.slow
def test_plain_onnxruntime_example_from_the_readme(export_to, eager) -> None:
    image = EXAMPLES / "scene-6.jpg"
    caption = _greedy_with_onnxruntime(export_to("onnx"), image)
    assert caption == eager.caption(image, beam_size=1).caption


# --- refusals: exit 2 with a message that says what is wrong -------------------------------------


def _export_fails(bundle: Path, tmp_path: Path, caplog, fmt: str = "torchscript") -> str:
    with caplog.at_level(logging.ERROR):
        code = main(["export", str(bundle), "--format", fmt, "--out", str(tmp_path / "out")])
    assert code == 2
    assert not (tmp_path / "out" / "export.json").exists()
    return caplog.text


def test_an_activity_bundle_is_refused(tmp_path: Path, caplog) -> None:
    manifest = {"task": "activity", "name": "clips", "model": {}, "classes": ["a", "b"]}
    bundle = save_bundle(
        tmp_path / "activity", manifest, {"model.safetensors": {"w": torch.ones(2)}}
    )
    assert "not a caption bundle" in _export_fails(bundle, tmp_path, caplog)


def test_a_corrupt_bundle_is_refused(tmp_path: Path, caplog) -> None:
    bundle = tmp_path / "broken"
    shutil.copytree(default_bundle_dir(), bundle)
    weights = bundle / "decoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert "sha256" in _export_fails(bundle, tmp_path, caplog)


def test_onnx_without_its_packages_says_what_to_install(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    text = _export_fails(default_bundle_dir(), tmp_path, caplog, fmt="onnx")
    assert "pip install" in text
    assert "onnxscript" in text


def test_the_onnx_exporters_chatter_shows_only_under_verbose(caplog) -> None:
    from captioner.encoders.onnx import quiet_exporter as _quiet_exporter

    chatter = logging.getLogger("onnx_ir.passes.common.unused_removal")
    with caplog.at_level(logging.INFO):
        with _quiet_exporter():
            chatter.info("Removed 443 unused nodes")
        assert "Removed" not in caplog.text
    with caplog.at_level(logging.DEBUG):
        with _quiet_exporter():
            chatter.info("Removed 443 unused nodes")
        assert "Removed" in caplog.text
