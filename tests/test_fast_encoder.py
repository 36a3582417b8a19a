"""The CPU fast path: the encoder in ONNX Runtime gives torch's grids and captions, its graph is
cached and checked, and the encoder runs in device-sized chunks while the decoder sees the
whole batch."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import captioner
from captioner.bundle import EncoderEntry, save_bundle
from captioner.encoders import build_encoder
from captioner.encoders import onnx as fast
from captioner.inference import common
from captioner.inference.common import (
    encode_chunk,
    encode_images,
    encoder_runtime,
    prepare_encoder,
    set_encoder_runtime,
)
from tests.conftest import tiny_decoder_config, tiny_decoder_state, tiny_manifest, tiny_vocab

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CPU = torch.device("cpu")
#: Measured on the shipped examples: EfficientNet-Lite0's grid (ReLU6, values in [0, 6]) differs
#: by at most 4.2e-5 (photos) and 6.8e-5 (video frames) between ONNX Runtime and torch eager,
#: both fp32; the bound leaves room for other CPUs' kernels.
GRID_ATOL = 2e-4


@pytest.fixture(scope="module")
def shipped_cache(tmp_path_factory: pytest.TempPathFactory):
    """The session's cache folder (as conftest sets it per test), for module-scoped fixtures."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPTIONER_CACHE", str(tmp_path_factory.getbasetemp() / "feature-cache"))
        yield


@pytest.fixture(scope="module")
def shipped(shipped_cache) -> captioner.Captioner:
    return captioner.load("caption", device="cpu")


@pytest.fixture(scope="module")
def photos(shipped) -> torch.Tensor:
    return torch.stack([shipped.load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))])


def both_ways(encoder, run):
    """``run()`` with the encoder in torch, then in ONNX Runtime -> (torch's, ONNX's)."""
    try:
        set_encoder_runtime(encoder, "torch")
        want = run()
        set_encoder_runtime(encoder, "onnx")
        got = run()
        assert encoder_runtime(encoder, CPU) == "onnx"
    finally:
        set_encoder_runtime(encoder, None)
    return want, got


def toy_encoder():
    return prepare_encoder(build_encoder("toy"), CPU)


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)


# --------------------------------------------------------------------------- same results


@pytest.mark.slow
def test_onnx_captions_the_examples_like_torch(shipped, photos) -> None:
    grids_t, grids_o = both_ways(shipped.encoder, lambda: shipped.encode(photos))
    assert (grids_o - grids_t).abs().max() <= GRID_ATOL
    want, got = both_ways(shipped.encoder, lambda: shipped.caption_tensors(photos, beam_size=3))
    assert [r.caption for r in got] == [r.caption for r in want]
    assert [r.log_prob for r in got] == pytest.approx([r.log_prob for r in want], abs=1e-3)
    assert [[t["name"] for t in r.tags] for r in got] == [[t["name"] for t in r.tags] for r in want]


@pytest.mark.slow
def test_onnx_encodes_video_frames_like_torch(shipped_cache) -> None:
    clf = captioner.load("activity", device="cpu")
    clips = torch.stack([clf.load_clip(p) for p in sorted(EXAMPLES.glob("clip-*.webm"))])
    frames = clips.reshape(-1, *clips.shape[-3:])
    grids_t, grids_o = both_ways(clf.encoder, lambda: clf.encode_frames(frames))
    assert (grids_o - grids_t).abs().max() <= GRID_ATOL
    probs_t, probs_o = both_ways(clf.encoder, lambda: clf.probabilities(clips))
    assert probs_o.argmax(-1).tolist() == probs_t.argmax(-1).tolist()
    torch.testing.assert_close(probs_o, probs_t, atol=1e-4, rtol=0)


def test_auto_uses_onnx_on_the_cpu_and_says_so(caplog) -> None:
    enc = toy_encoder()
    with caplog.at_level(logging.INFO, logger="captioner"):
        encode_images(enc, images(3), CPU)
        encode_images(enc, images(3), CPU)
    assert encoder_runtime(enc, CPU) == "onnx"
    lines = [r.getMessage() for r in caplog.records if "runs in" in r.getMessage()]
    assert len(lines) == 1, lines  # one line, not one per call
    assert "ONNX Runtime" in lines[0]
    assert "CAPTIONER_ENCODER_RUNTIME=torch" in lines[0]


def test_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("CAPTIONER_ENCODER_RUNTIME", "torch")
    enc = toy_encoder()
    with caplog.at_level(logging.INFO, logger="captioner"):
        assert encoder_runtime(enc, CPU) == "torch"
    assert "runs in torch" in caplog.text
    monkeypatch.setenv("CAPTIONER_ENCODER_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="auto, torch, onnx"):
        encoder_runtime(toy_encoder(), CPU)


def test_a_gpu_and_a_module_in_training_stay_in_torch() -> None:
    enc = toy_encoder()
    assert encoder_runtime(enc, torch.device("cuda")) == "torch"  # decided without a GPU call
    tuned = prepare_encoder(build_encoder("toy", trainable_blocks=1), CPU)
    assert encoder_runtime(tuned, CPU) == "torch"
    enc.train()
    assert encoder_runtime(enc, CPU) == "torch"


def test_the_session_uses_torchs_threads_and_does_not_spin() -> None:
    enc = toy_encoder()
    encode_images(enc, images(1), CPU)
    options = common._runtime(enc).onnx.session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# --------------------------------------------------------------------------- the cache


def test_the_graph_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = toy_encoder()
    first = fast.onnx_encoder(enc, tmp_path, threads=1)
    assert first.path is not None
    assert first.path.parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporary left over

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(fast, "_export_encoder", no_export)
    again = fast.onnx_encoder(toy_encoder(), tmp_path, threads=1)
    assert again.path == first.path
    torch.testing.assert_close(again(images(2)), first(images(2)), rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_a_damaged_or_foreign_cache_file_is_rebuilt(tmp_path: Path, damage: str, caplog) -> None:
    enc = toy_encoder()
    path = fast.onnx_encoder(enc, tmp_path, threads=1).path
    assert path is not None
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 1000)
    else:  # another encoder's graph under this one's name
        other = build_encoder("toy")
        with torch.no_grad():
            other.trunk[0][0].weight.mul_(-1)
        path.write_bytes(fast.onnx_encoder(other, tmp_path / "other", threads=1).path.read_bytes())
    with caplog.at_level(logging.WARNING, logger="captioner"):
        rebuilt = fast.onnx_encoder(enc, tmp_path, threads=1)
    assert "rebuilding" in caplog.text
    assert rebuilt.path == path
    diff, allowed = fast.disagreement(enc, rebuilt)
    assert diff <= allowed


def test_the_fingerprint_follows_weights_preprocessing_and_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enc = build_encoder("toy")
    base = fast.fingerprint(enc)
    assert fast.fingerprint(build_encoder("toy")) == base
    assert fast.fingerprint(prepare_encoder(build_encoder("toy"), CPU)) == base  # memory format
    with torch.no_grad():
        enc.trunk[0][0].bias.add_(1e-3)
    assert fast.fingerprint(enc) != base
    other = build_encoder("toy")
    other.preprocess = type(other.preprocess)(mean=(0.4, 0.5, 0.5))
    assert fast.fingerprint(other) != base
    versions = {**fast.runtime_versions(), "onnxruntime": "0.0.1"}
    monkeypatch.setattr(fast, "runtime_versions", lambda: versions)  # another runtime's graph
    assert fast.fingerprint(build_encoder("toy")) != base


def test_weights_changed_in_place_rebuild_the_session() -> None:
    enc = toy_encoder()
    x = images(2)
    before = encode_images(enc, x, CPU)
    with torch.no_grad():
        enc.trunk[2][0].weight.mul_(2)
    after = encode_images(enc, x, CPU)
    assert encoder_runtime(enc, CPU) == "onnx"
    set_encoder_runtime(enc, "torch")
    torch.testing.assert_close(after, encode_images(enc, x, CPU), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(after, before)


def test_a_fine_tuned_bundle_exports_its_own_encoder_weights(tmp_path: Path) -> None:
    vocab = tiny_vocab()
    config = tiny_decoder_config(len(vocab))
    manifest = tiny_manifest(config, vocab)
    entry = EncoderEntry("toy", manifest.encoder.preprocess, 32, fine_tuned_blocks=1)
    manifest = dataclasses.replace(manifest, encoder=entry)
    tuned = build_encoder("toy").trunk.state_dict()
    tuned["2.0.weight"] = tuned["2.0.weight"] * -1.5  # the last block, as fine-tuning changes it
    weights = {"decoder.safetensors": tiny_decoder_state(config), "encoder.safetensors": tuned}
    cap = captioner.load(save_bundle(tmp_path / "tuned", manifest, weights), device="cpu")
    x = images(3)
    want, got = both_ways(cap.encoder, lambda: cap.encode(x))
    assert (got - want).abs().max() <= GRID_ATOL
    package = encode_images(toy_encoder(), x, CPU)
    assert (got - package).abs().max() > 0.1  # not the package's weights
    assert common._runtime(cap.encoder).onnx.fingerprint != fast.fingerprint(build_encoder("toy"))


def test_an_unwritable_cache_costs_the_cache_only(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    enc = toy_encoder()
    onnx = fast.onnx_encoder(enc, blocker / "onnx", threads=1)
    assert onnx.path is None
    diff, allowed = fast.disagreement(enc, onnx)
    assert diff <= allowed


def _exporter_fails(*args) -> None:
    raise RuntimeError("the exporter could not trace it")


@pytest.mark.parametrize("missing", ["onnxruntime", "onnxscript", "exporter"])
def test_a_failed_export_falls_back_to_torch_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, missing: str
) -> None:
    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path))  # nothing cached yet
    if missing == "exporter":
        monkeypatch.setattr(fast, "_export_encoder", _exporter_fails)
    else:
        monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    enc = toy_encoder()
    x = images(2)
    # a missing onnxruntime is a plain install: said at INFO; a broken export is a warning
    level = logging.INFO if missing == "onnxruntime" else logging.WARNING
    with caplog.at_level(logging.INFO, logger="captioner"):
        got = encode_images(enc, x, CPU)
    assert encoder_runtime(enc, CPU) == "torch"
    said = [r for r in caplog.records if "keeps torch" in r.getMessage()]
    assert [r.levelno for r in said] == [level]
    assert (missing if missing != "exporter" else "could not trace") in caplog.text
    if missing != "exporter":
        assert "pip install" in caplog.text
    set_encoder_runtime(enc, "torch")
    torch.testing.assert_close(got, encode_images(enc, x, CPU), rtol=0, atol=0)
    set_encoder_runtime(enc, "onnx")  # asked for by name, the failure is an error
    with pytest.raises(fast.OnnxUnavailable, match=r"(?i)onnx"):
        encode_images(enc, x, CPU)


def test_threads_encoding_at_once_build_one_session(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    real = fast.onnx_encoder
    monkeypatch.setattr(common, "onnx_encoder", lambda *a, **k: built.append(1) or real(*a, **k))
    enc = toy_encoder()
    x = images(6)
    results: list[torch.Tensor] = []
    workers = [
        threading.Thread(target=lambda: results.append(encode_images(enc, x, CPU)))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(built) == 1
    assert len(results) == 4
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=0, atol=0)


# --------------------------------------------------------------------------- chunks


def test_the_chunk_is_small_on_the_cpu_and_whole_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPTIONER_ENCODE_CHUNK", raising=False)
    assert encode_chunk(CPU) == common.CPU_ENCODE_CHUNK == 4
    assert encode_chunk(torch.device("cuda")) is None
    monkeypatch.setenv("CAPTIONER_ENCODE_CHUNK", "8")
    assert encode_chunk(CPU) == 8
    monkeypatch.setenv("CAPTIONER_ENCODE_CHUNK", "0")
    assert encode_chunk(CPU) is None
    monkeypatch.setenv("CAPTIONER_ENCODE_CHUNK", "-2")
    with pytest.raises(ValueError, match="CAPTIONER_ENCODE_CHUNK"):
        encode_chunk(CPU)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_the_encoder_runs_in_chunks_and_the_decoder_sees_the_whole_batch(
    tiny_captioner, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    cap = tiny_captioner
    x = images(10)
    set_encoder_runtime(cap.encoder, runtime)
    try:
        whole = cap.encode(x)
        seen: list[int] = []
        if runtime == "torch":
            hook = cap.encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].size(0)))
        else:
            onnx = common._runtime(cap.encoder).onnx
            real = onnx.session.run
            monkeypatch.setattr(
                onnx.session,
                "run",
                lambda o, feed: seen.append(len(feed["images"])) or real(o, feed),
            )
        searched: list[int] = []
        real_search = cap.search
        monkeypatch.setattr(
            cap, "search", lambda f, c: searched.append(f.size(0)) or real_search(f, c)
        )
        results = cap.caption_tensors(x)
        if runtime == "torch":
            hook.remove()
    finally:
        set_encoder_runtime(cap.encoder, None)
    assert seen == [4, 4, 2]
    assert searched == [10]
    assert len(results) == 10
    chunked = encode_images(cap.encoder, x, CPU)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    monkeypatch.setenv("CAPTIONER_ENCODE_CHUNK", "0")
    torch.testing.assert_close(encode_images(cap.encoder, x, CPU), whole, atol=1e-5, rtol=1e-5)
