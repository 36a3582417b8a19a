"""Bundles on disk: manifest + safetensors, hash-checked, never pickle."""

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from captioner.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    TASKS,
    Bundle,
    BundleError,
    Decoding,
    EncoderEntry,
    Manifest,
    load_bundle,
    load_state_strict,
    read_manifest,
    read_spec,
    save_bundle,
    shipped_bundle_dir,
)
from captioner.encoders import Preprocess, build_encoder, sha256_file


def _weights() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return {
        "decoder.safetensors": {
            "embed.weight": torch.randn(10, 4, generator=g),
            "out.bias": torch.arange(10, dtype=torch.float32),
            "steps": torch.tensor([3], dtype=torch.int64),
        },
        "head.safetensors": {"w": torch.randn(4, 3, generator=g).t()},  # non-contiguous
    }


def _manifest() -> dict:
    """A valid caption manifest (a bundle whose manifest does not parse cannot be opened)."""
    return {**_caption_dict(), "metrics": {"cider": 0.5}}


@pytest.fixture
def bundle_dir(tmp_path):
    return save_bundle(tmp_path / "bundle", _manifest(), _weights())


# --------------------------------------------------------------------------- round trip


def test_round_trip(bundle_dir) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.task == "caption"
    assert bundle.path == bundle_dir
    for key, value in _manifest().items():
        assert bundle.manifest[key] == value
    expected = _weights()
    assert set(bundle.weights) == set(expected)
    for name, state in expected.items():
        assert set(bundle.weights[name]) == set(state)
        for key, tensor in state.items():
            got = bundle.weights[name][key]
            assert got.dtype == tensor.dtype
            assert torch.equal(got, tensor)


def test_manifest_has_format_version_and_file_hashes(bundle_dir) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["format"] == FORMAT
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["task"] == "caption"
    assert set(manifest["files"]) == {"decoder.safetensors", "head.safetensors"}
    for name, meta in manifest["files"].items():
        assert meta["sha256"] == sha256_file(bundle_dir / name)
        assert meta["bytes"] == (bundle_dir / name).stat().st_size
    assert read_manifest(bundle_dir) == manifest


def test_load_accepts_the_manifest_path(bundle_dir) -> None:
    assert load_bundle(bundle_dir / MANIFEST).path == bundle_dir


def test_saving_again_replaces_the_bundle(bundle_dir) -> None:
    weights = _weights()
    weights["decoder.safetensors"]["out.bias"] = torch.zeros(10)
    save_bundle(bundle_dir, _activity_dict(), weights)
    bundle = load_bundle(bundle_dir)
    assert bundle.task == "activity"
    assert torch.equal(bundle.weights["decoder.safetensors"]["out.bias"], torch.zeros(10))


# --------------------------------------------------------------------------- no pickle, atomic


def test_every_weight_file_is_safetensors(bundle_dir) -> None:
    files = [p for p in bundle_dir.iterdir() if p.name != MANIFEST]
    assert {p.name for p in files} == {"decoder.safetensors", "head.safetensors"}
    for path in files:
        raw = path.read_bytes()
        assert not raw.startswith(b"\x80")  # pickle protocol marker
        assert not raw.startswith(b"PK")  # torch.save zip archive
        (header_len,) = struct.unpack("<Q", raw[:8])
        assert 0 < header_len <= len(raw) - 8
        assert raw[8:9] == b"{"
        header = json.loads(raw[8 : 8 + header_len])
        assert set(header) - {"__metadata__"}


def test_no_temporary_files_left(bundle_dir) -> None:
    assert not list(bundle_dir.glob("*.tmp"))
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "decoder.safetensors",
        "head.safetensors",
        MANIFEST,
    ]


def test_failed_write_leaves_no_temporary_file(tmp_path) -> None:
    shared = torch.zeros(3)
    with pytest.raises(RuntimeError):  # safetensors refuses tensors that share memory
        save_bundle(tmp_path / "b", _manifest(), {"w.safetensors": {"a": shared, "b": shared}})
    assert list((tmp_path / "b").iterdir()) == []


# --------------------------------------------------------------------------- refusals on save


def test_save_refuses_unknown_task(tmp_path) -> None:
    with pytest.raises(BundleError, match="task must be one of"):
        save_bundle(tmp_path / "b", {"task": "poetry"}, _weights())


@pytest.mark.parametrize("name", ["decoder.pt", "sub/decoder.safetensors", "decoder.pth"])
def test_save_refuses_non_safetensors_names(tmp_path, name) -> None:
    with pytest.raises(BundleError, match="safetensors"):
        save_bundle(tmp_path / "b", _manifest(), {name: {"w": torch.zeros(2)}})


# --------------------------------------------------------------------------- refusals on load


def test_changed_weight_file_is_refused(bundle_dir) -> None:
    path = bundle_dir / "decoder.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # still a valid safetensors file, different numbers
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256") as info:
        load_bundle(bundle_dir)
    assert "decoder.safetensors" in str(info.value)
    assert "corrupt or was changed" in str(info.value)


def test_missing_weight_file_is_refused(bundle_dir) -> None:
    (bundle_dir / "head.safetensors").unlink()
    with pytest.raises(BundleError, match=r"missing its weight file head.safetensors"):
        load_bundle(bundle_dir)


def _edit_manifest(bundle_dir, **changes) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest.update(changes)
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))


def test_unknown_format_version_is_refused(bundle_dir) -> None:
    _edit_manifest(bundle_dir, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match="format version") as info:
        load_bundle(bundle_dir)
    assert "Upgrade captioner" in str(info.value)


def test_wrong_format_is_refused(bundle_dir) -> None:
    _edit_manifest(bundle_dir, format="something-else")
    with pytest.raises(BundleError, match="not a captioner bundle"):
        load_bundle(bundle_dir)


def test_unknown_task_is_refused(bundle_dir) -> None:
    _edit_manifest(bundle_dir, task="poetry")
    with pytest.raises(BundleError, match="unknown task 'poetry'"):
        load_bundle(bundle_dir)


def test_manifest_without_files_is_refused(bundle_dir) -> None:
    _edit_manifest(bundle_dir, files={})
    with pytest.raises(BundleError, match="lists no weight files"):
        read_manifest(bundle_dir)


def test_invalid_json_is_refused(bundle_dir) -> None:
    (bundle_dir / MANIFEST).write_text('{"format": "captioner-bundle",')
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_dir)


def test_json_that_is_not_an_object_is_refused(bundle_dir) -> None:
    (bundle_dir / MANIFEST).write_text("[1, 2, 3]")
    with pytest.raises(BundleError, match="not a captioner bundle"):
        load_bundle(bundle_dir)


def test_folder_that_is_not_a_bundle(tmp_path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(BundleError, match="no bundle at") as info:
        load_bundle(tmp_path)
    assert MANIFEST in str(info.value)
    with pytest.raises(BundleError, match="no bundle at"):
        load_bundle(tmp_path / "does-not-exist")


# --------------------------------------------------------------------------- load_state_strict


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def test_load_state_strict_loads_matching_weights() -> None:
    src, dst = _tiny(), _tiny()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    load_state_strict(dst, src.state_dict(), "decoder")
    for a, b in zip(src.parameters(), dst.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_state_strict_reports_missing_and_unexpected() -> None:
    state = _tiny().state_dict()
    del state["1.bias"]
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(BundleError) as info:
        load_state_strict(_tiny(), state, "decoder")
    msg = str(info.value)
    assert msg.startswith("decoder weights do not fit")
    assert "missing ['1.bias']" in msg
    assert "unexpected ['2.weight']" in msg


def test_load_state_strict_reports_mismatched_shapes() -> None:
    state = _tiny().state_dict()
    state["0.weight"] = torch.zeros(5, 3)
    model = _tiny()
    before = model[0].weight.clone()
    with pytest.raises(
        BundleError, match=r"mismatched shapes .*0\.weight: bundle \(5, 3\) vs model \(4, 3\)"
    ):
        load_state_strict(model, state, "head")
    assert torch.equal(model[0].weight, before)  # nothing half-loaded


# --------------------------------------------------------------------------- typed manifest


def _caption_dict() -> dict:
    return {
        "task": "caption",
        "encoder": {
            "name": "toy",
            "preprocess": {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3},
            "feature_dim": 32,
        },
        "model": {"vocab_size": 5},
        "vocabulary": {"tokens": ["<pad>", "<start>", "<end>", "<unk>", "dog"]},
    }


def _activity_dict() -> dict:
    d = _caption_dict()
    del d["vocabulary"]
    return {**d, "task": "activity", "classes": ["left", "right"]}


@pytest.mark.parametrize("task", TASKS)
def test_a_shipped_manifest_reads_and_writes_back_unchanged(task, tmp_path) -> None:
    shipped = load_bundle(shipped_bundle_dir(task))
    text = (shipped.path / MANIFEST).read_text()
    assert Manifest.from_dict(json.loads(text)).to_dict() == json.loads(text)
    out = save_bundle(tmp_path / task, shipped.spec, shipped.weights)
    assert (out / MANIFEST).read_text() == text  # same hashes too: the weights are unchanged


def test_typed_fields_of_the_shipped_caption_bundle() -> None:
    spec = read_spec(shipped_bundle_dir("caption"))
    assert (spec.task, spec.name, spec.version) == ("caption", "caption-default-objects", "1")
    assert spec.encoder.name == "efficientnet_lite0"
    assert spec.encoder.preprocess == Preprocess(size=224)
    assert (spec.encoder.feature_dim, spec.encoder.fine_tuned_blocks) == (1280, 0)
    assert (spec.beam_size, spec.max_len, spec.length_penalty) == (3, 20, 0.0)
    assert spec.tokens[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert {"<obj>", "<objs>"} <= set(spec.tokens)  # it names objects through slots
    assert spec.model["vocab_size"] == len(spec.tokens)
    assert spec.classes is None
    assert set(spec.files) == {"decoder.safetensors", "domain.safetensors"}  # + calibration


def test_typed_fields_of_the_shipped_activity_bundle() -> None:
    spec = load_bundle(shipped_bundle_dir("activity")).spec
    assert spec.task == "activity"
    assert spec.vocabulary is None
    assert spec.encoder.preprocess.size == 128
    assert (spec.num_frames, spec.sampling_mode) == (16, "uniform")
    assert len(spec.classes) == spec.model["num_classes"] == 9
    assert spec.metrics["test"]["top1"] > 0.9


def test_missing_optional_fields_get_the_loaders_defaults() -> None:
    caption = Manifest.from_dict(_caption_dict())
    assert (caption.name, caption.version) == ("captioner", "")
    assert (caption.beam_size, caption.max_len, caption.length_penalty) == (3, 20, 0.0)
    assert caption.encoder.fine_tuned_blocks == 0
    assert caption.encoder.preprocess.interpolation == "bicubic"
    activity = Manifest.from_dict(_activity_dict())
    assert (activity.name, activity.num_frames, activity.tokens) == ("activity", 16, [])


def test_a_bundle_parses_its_manifest_once_when_opened(bundle_dir) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.spec is bundle.spec
    assert bundle.task == bundle.spec.task == "caption"
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["decoding"] = {"beam_size": "3"}
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'decoding.beam_size' must be a positive integer"):
        load_bundle(bundle_dir)  # on opening, not on first use


def test_the_search_defaults_fill_what_the_manifest_leaves_out() -> None:
    spec = Manifest.from_dict({**_caption_dict(), "decoding": {"max_len": 9}})
    assert spec.search == Decoding(beam_size=3, max_len=9, length_penalty=0.0)
    assert Decoding.from_dict({}) == Decoding()


def test_clip_seconds_are_typed_and_checked() -> None:
    d = _activity_dict()
    d["sampling"] = {"num_frames": 8, "clip_seconds": {"min": 1, "median": 2.5}}
    assert Manifest.from_dict(d).clip_seconds == {"min": 1.0, "median": 2.5}
    d["sampling"]["clip_seconds"] = None  # the training videos could not be probed
    assert Manifest.from_dict(d).clip_seconds is None
    d["sampling"]["clip_seconds"] = {"min": 0, "median": 2}
    with pytest.raises(BundleError, match=r"'sampling.clip_seconds.min' must be a positive"):
        Manifest.from_dict(d)


def test_unknown_fields_are_kept() -> None:
    d = {**_caption_dict(), "notes": {"by": "someone"}}
    assert Manifest.from_dict(d).to_dict()["notes"] == {"by": "someone"}


def test_the_typed_manifest_shares_nothing_with_the_dict(bundle_dir) -> None:
    save_bundle(bundle_dir, Manifest.from_dict(_caption_dict()), _weights())
    bundle = load_bundle(bundle_dir)
    bundle.spec.vocabulary["tokens"].append("cat")
    assert bundle.manifest["vocabulary"]["tokens"][-1] == "dog"


def _set(path: str, value):
    """A change to a manifest dict: set the dotted ``path`` to ``value`` (None: delete it)."""

    def change(d: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        if value is None:
            del d[last]
        else:
            d[last] = value

    return change


BAD_FIELDS = [
    ("task", "poetry", "task 'poetry'|'task' must be one of"),  # read_manifest checks it first
    ("name", 3, "'name' must be a non-empty string"),
    ("version", 1, "'version' must be a string"),
    ("encoder", None, "'encoder' is missing"),
    ("encoder.name", "", "'encoder.name' must be a non-empty string"),
    ("encoder.preprocess.size", "224", "'encoder.preprocess.size' must be a positive integer"),
    ("encoder.preprocess.mean", [0.5, 0.5], "'encoder.preprocess.mean' must be a list of 3"),
    ("encoder.preprocess.std", [0.5, 0, 0.5], "'encoder.preprocess.std' must be a list of 3 pos"),
    ("encoder.preprocess.interpolation", "nearest", "'encoder.preprocess.interpolation'"),
    ("encoder.feature_dim", 0, "'encoder.feature_dim' must be a positive integer"),
    ("encoder.fine_tuned_blocks", True, "'encoder.fine_tuned_blocks' must be an integer >= 0"),
    ("model", [], "'model' must be a JSON object"),
    ("vocabulary", None, "'vocabulary' is missing"),
    ("vocabulary.tokens", [], "'vocabulary.tokens' must be a non-empty list of strings"),
    ("decoding", {"beam_size": 0}, "'decoding.beam_size' must be a positive integer"),
    ("decoding", {"length_penalty": "0"}, "'decoding.length_penalty' must be a number"),
    ("files", {"decoder.safetensors": {}}, "'files.decoder.safetensors.sha256' is missing"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_FIELDS)
def test_a_bad_field_is_named_with_the_file(bundle_dir, path, value, message) -> None:
    manifest = {**json.loads((bundle_dir / MANIFEST).read_text()), **_caption_dict()}
    _set(path, value)(manifest)
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message) as info:
        read_spec(bundle_dir)
    assert str(bundle_dir / MANIFEST) in str(info.value)
    with pytest.raises(BundleError, match=message) as info:
        _ = Bundle(bundle_dir, manifest, {}).spec
    assert str(bundle_dir / MANIFEST) in str(info.value)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("task", "poetry", "'task' must be one of"),
        ("classes", None, "'classes' is missing"),
        ("classes", ["left", "left"], "'classes' must be a list of distinct class names"),
        ("sampling", {"num_frames": "16"}, "'sampling.num_frames' must be a positive integer"),
    ],
)
def test_a_bad_activity_field_is_named(path, value, message) -> None:
    d = _activity_dict()
    _set(path, value)(d)
    with pytest.raises(BundleError, match=message):
        Manifest.from_dict(d, where="clips/manifest.json")


def test_the_writer_checks_a_typed_manifest_before_writing(tmp_path) -> None:
    good = Manifest.from_dict(_caption_dict())
    bad = dataclasses.replace(good, vocabulary=None)
    with pytest.raises(BundleError, match="'vocabulary' is missing"):
        save_bundle(tmp_path / "b", bad, _weights())
    assert not (tmp_path / "b").exists()
    written = json.loads((save_bundle(tmp_path / "b", good, _weights()) / MANIFEST).read_text())
    assert list(written)[:3] == ["format", "format_version", "task"]
    assert list(written)[-1] == "files"
    assert read_spec(tmp_path / "b") == dataclasses.replace(good, files=written["files"])


def test_a_typed_encoder_entry_from_a_built_encoder() -> None:
    entry = EncoderEntry.of(build_encoder("toy"), fine_tuned_blocks=1)
    assert (entry.name, entry.feature_dim, entry.fine_tuned_blocks) == ("toy", 32, 1)
    assert EncoderEntry.from_dict(entry.to_dict()) == entry


# --------------------------------------------------------------------------- shipped bundles


def test_shipped_bundles_are_found_in_the_source_tree() -> None:
    root = Path(__file__).resolve().parent.parent
    for task in TASKS:
        assert shipped_bundle_dir(task) == root / "weights" / f"{task}-default"
        assert (shipped_bundle_dir(task) / MANIFEST).is_file()
    # The package-data route the wheel takes (pyproject.toml: captioner._weights).
    assert (root / "captioner" / "_weights").resolve() == (root / "weights").resolve()
    with pytest.raises(ValueError, match="task must be one of"):
        shipped_bundle_dir("poetry")
