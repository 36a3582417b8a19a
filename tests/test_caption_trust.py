"""Tags, confidence and the out-of-domain flag: in every caption surface, and calibration."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import captioner
from captioner.batch import caption_files
from captioner.bundle import BundleError, load_bundle, read_manifest
from captioner.calibrate import DOMAIN_FILE, DomainStats
from captioner.cli import main
from captioner.inference import default_bundle_dir
from tests.conftest import save_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def shipped():
    return captioner.load(default_bundle_dir("caption"), device="cpu")


def _photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


# -- the Python API ---------------------------------------------------------------------------


def test_results_carry_tags_confidence_and_the_domain_flag(shipped) -> None:
    res = shipped.caption(EXAMPLES / "photo-chelsea.jpg")
    assert [t["name"] for t in res.tags][:1] == ["cat"]
    assert len(res.tags) == 5
    assert all(0 <= t["score"] <= 1 for t in res.tags)
    # grounded: the confidence is the evidence of the subject (the head is sure of the cat)
    assert res.caption == "a picture of a large cat"
    assert res.hedged is False
    assert 0.5 < res.confidence <= 1
    assert isinstance(res.out_of_domain, bool)
    assert isinstance(res.domain_distance, float)
    assert {"tags", "confidence", "out_of_domain", "domain_distance"} <= set(res.to_dict())


FOREIGN = ("page", "text", "coins", "moon", "hubble_deep_field", "microaneurysms")


def _foreign(name: str) -> Image.Image:
    """A scikit-image picture unlike anything the default model was trained on."""
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def test_fresh_scenes_and_photos_are_in_domain_and_foreign_pictures_are_not(
    shipped, scene_data
) -> None:
    scenes = sorted((scene_data / "images" / "test").glob("*.jpg"))
    flags = [r.out_of_domain for r in shipped.caption(scenes)]
    assert sum(flags) <= 1, f"fresh scenes flagged out of domain: {flags}"
    # The default model is trained on photo composites: everyday photos are its domain ...
    photos = shipped.caption([_photo(n) for n in ("coffee", "chelsea")])
    assert not any(r.out_of_domain for r in photos), [r.domain_distance for r in photos]
    # ... text, coins, the night sky and microscopy are not.
    foreign = shipped.caption([_foreign(n) for n in FOREIGN])
    assert all(r.out_of_domain for r in foreign), [r.domain_distance for r in foreign]
    assert min(r.domain_distance for r in foreign) > max(r.domain_distance for r in photos)


def test_tags_come_from_the_same_pass_and_cost_no_second_encoding(shipped, monkeypatch) -> None:
    calls = []
    encoder_forward = type(shipped.encoder).forward

    def counted(self, x):
        calls.append(x.size(0))
        return encoder_forward(self, x)

    monkeypatch.setattr(type(shipped.encoder), "forward", counted)
    monkeypatch.setenv("CAPTIONER_ENCODER_RUNTIME", "torch")  # the passes counted are torch's
    res = shipped.caption([EXAMPLES / "scene-0.jpg", EXAMPLES / "scene-3.jpg"])
    assert calls == [2]
    assert all(r.tags for r in res)


def test_a_pipeline_without_head_or_calibration_says_none(tiny_captioner) -> None:
    res = tiny_captioner.caption(Image.new("RGB", (64, 64), "red"))
    assert res.tags is None
    assert res.out_of_domain is None
    assert res.domain_distance is None
    assert 0 < res.confidence <= 1  # every caption has a confidence


# -- calibration --------------------------------------------------------------------------------


def test_domain_distance_separates_a_cluster_from_outliers() -> None:
    g = torch.Generator().manual_seed(0)
    centre = torch.randn(16, generator=g).abs() + 1
    inside = centre + 0.1 * torch.randn(200, 16, generator=g)
    stats = DomainStats.fit(inside, percentile=99, k=3)
    assert (stats.distance(inside[:50] + 0.01) <= stats.threshold).float().mean() > 0.9
    outside = torch.randn(20, 16, generator=g).abs() + 1  # another direction
    assert bool((stats.distance(outside) > stats.threshold).all())
    again = DomainStats.from_tensors(stats.to_tensors())
    assert again.threshold == pytest.approx(stats.threshold)
    assert again.k == 3


def _unit(*xyz: float) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor([xyz], dtype=torch.float32), dim=1)


def _two_sets(margin: float = 0.0, far: float = 0.8) -> DomainStats:
    """In-domain pictures around x, known out-of-domain ones around y (3-d features)."""
    inside = torch.cat([_unit(1, 0.05, 0), _unit(1, -0.05, 0), _unit(1, 0, 0.05)])
    outside = torch.cat([_unit(0.05, 1, 0), _unit(-0.05, 1, 0), _unit(0, 1, 0.05)])
    return DomainStats.fit(inside, k=2, outside=outside, margin=margin, far=far)


def _between(t: float) -> torch.Tensor:
    """A picture t of the way from the in-domain cluster to the out-of-domain one."""
    return _unit(1 - t, t, 0)


def test_two_reference_sets_decide_by_the_nearer_one() -> None:
    stats = _two_sets()
    score = stats.distance(torch.cat([_between(0.45), _between(0.55)]))
    assert score[0] <= stats.threshold < score[1]  # flips where the other set gets nearer
    # Far from the in-domain pictures but farther still from the known non-photos: in, where
    # the one-set rule (the percentile of the tight cluster's own distances) says out.
    unlike = _unit(1, 0, 0.9)
    assert stats.distance(unlike) <= stats.threshold
    one_set = DomainStats.fit(stats.features.float(), k=2)
    assert one_set.distance(unlike) > one_set.threshold
    # Unlike both sets: out, by the far rule.
    assert stats.distance(_unit(0, 0, 1)) > stats.threshold
    # A margin moves the flip towards the out-of-domain set.
    lenient = _two_sets(margin=0.2)
    assert lenient.distance(_between(0.55)) <= lenient.threshold
    again = DomainStats.from_tensors(stats.to_tensors())
    assert again.far == pytest.approx(0.8)
    assert torch.equal(again.outside, stats.outside)
    assert torch.allclose(again.distance(_between(0.55)), stats.distance(_between(0.55)))


def test_extending_keeps_the_stored_features_and_recomputes_the_threshold() -> None:
    g = torch.Generator().manual_seed(1)
    old = torch.randn(30, 8, generator=g).abs() + 1
    new = torch.randn(12, 8, generator=g).abs() + 2 * (torch.arange(8) % 2)  # another direction
    stats = DomainStats.fit(old, k=3)
    grown = stats.extend(new)
    assert torch.equal(grown.features[:30], stats.features)  # not re-encoded, not changed
    assert grown.features.size(0) == 42
    whole = DomainStats.fit(torch.cat([old, new]), k=3)
    assert grown.threshold == pytest.approx(whole.threshold)
    assert grown.threshold != pytest.approx(stats.threshold)
    assert torch.allclose(grown.mean, whole.mean, atol=1e-5)
    assert torch.allclose(grown.std, whole.std, atol=1e-5)
    # Adding out-of-domain references turns the percentile into the two-set rule.
    both = grown.extend(outside=-old[:5], margin=0.05)
    assert both.threshold == pytest.approx(0.05)
    assert both.outside.size(0) == 5
    assert both.far == pytest.approx(0.8)
    with pytest.raises(ValueError, match="8"):
        stats.extend(torch.ones(3, 5))


def test_calibrate_command_adds_a_hash_checked_domain_file(tiny_bundle, tmp_path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(10):
        save_image(images / f"{seed}.jpg", seed)
    before = read_manifest(bundle)
    argv = ["-q", "calibrate", str(bundle), "--images", str(images), "--device", "cpu"]
    assert main([*argv, "--workers", "0", "--neighbours", "3"]) == 0
    manifest = read_manifest(bundle)
    assert set(manifest["files"]) == {*before["files"], DOMAIN_FILE}
    assert manifest["domain"]["images"] == 10
    assert manifest["domain"]["threshold"] > 0
    assert manifest["files"]["decoder.safetensors"] == before["files"]["decoder.safetensors"]
    cap = captioner.load(bundle, device="cpu")
    res = cap.caption(images / "0.jpg")
    assert isinstance(res.out_of_domain, bool)
    assert res.domain_distance is not None
    # The file is covered by the manifest's hash like any weight file.
    with (bundle / DOMAIN_FILE).open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


def test_calibrate_add_extends_the_stored_calibration(tiny_bundle, tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    def run(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["captioner", *argv])  # what the manifest records
        return main(list(argv))

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    first, more = tmp_path / "first", tmp_path / "more"
    first.mkdir()
    more.mkdir()
    for seed in range(10):
        save_image(first / f"{seed}.jpg", seed)
    for seed in range(10, 14):
        save_image(more / f"{seed}.jpg", seed)
    common = ["--device", "cpu", "--workers", "0", "--neighbours", "3"]
    assert run("-q", "calibrate", str(bundle), "--images", str(first), *common) == 0
    before = load_file(bundle / DOMAIN_FILE)
    sha_before = read_manifest(bundle)["files"][DOMAIN_FILE]["sha256"]
    argv = ["-q", "calibrate", str(bundle), "--images", str(more), "--foreign", "2", "--add"]
    assert run(*argv, "--margin", "0.01", *common) == 0
    after = load_file(bundle / DOMAIN_FILE)
    assert torch.equal(after["features"][:10], before["features"])
    assert after["features"].shape[0] == 14
    assert after["outside"].shape[0] == 8  # two of each generated kind
    manifest = read_manifest(bundle)
    entry = manifest["domain"]
    assert (entry["images"], entry["outside"], entry["threshold"]) == (14, 8, 0.01)
    first_command = ["captioner", "-q", "calibrate", str(bundle), "--images", str(first)]
    assert entry["command"] == " ".join([*first_command, *common])
    assert entry["added"][0]["command"] == " ".join(
        ["captioner", *argv, "--margin", "0.01", *common]
    )
    assert entry["added"][0]["images"] == 4
    assert manifest["files"][DOMAIN_FILE]["sha256"] != sha_before
    load_bundle(bundle)  # the new hash is the file's
    res = captioner.load(bundle, device="cpu").caption(first / "0.jpg")
    assert isinstance(res.out_of_domain, bool)


def test_calibrate_add_needs_a_calibration_and_photos_reads_only_the_tune_split(
    tiny_bundle, tmp_path
) -> None:
    from captioner.calibrate import calibrate

    with pytest.raises(ValueError, match="run without --add"):
        calibrate(tiny_bundle, [EXAMPLES], add=True, device="cpu", workers=0, progress=False)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    rows = []
    for i, (split, kind) in enumerate(
        [
            *[("tune", k) for k in ("photo", "photo", "text", "artwork")],
            ("heldout", "photo"),
            ("heldout", "text"),
        ]
    ):
        if split == "tune":  # heldout pictures are missing: reading one would fail
            save_image(photos / "images" / f"{i}.png", i)
        rows.append({"id": str(i), "split": split, "kind": kind, "file_name": f"{i}.png"})
    (photos / "photos.json").write_text(json.dumps({"photos": rows}))
    stats = calibrate(
        bundle, photos=photos, crops=2, device="cpu", workers=0, progress=False, neighbours=3
    )
    assert stats.features.size(0) == 2 * 3  # two photos, each with two crops
    assert stats.outside.size(0) == 3  # the text page and its crops; not the artwork
    assert read_manifest(bundle)["domain"]["photos"]["photos"] == 2


def test_calibrate_refuses_too_few_images(tiny_bundle, tmp_path) -> None:
    save_image(tmp_path / "one.jpg", 0)
    from captioner.calibrate import calibrate

    with pytest.raises(ValueError, match="more than 5 images"):
        calibrate(tiny_bundle, [tmp_path], device="cpu", workers=0, progress=False)


# -- folder jobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_caption_rows_carry_the_new_fields(shipped, tmp_path, suffix) -> None:
    out = tmp_path / f"rows{suffix}"
    _foreign("page").save(tmp_path / "page.png")
    inputs = [
        str(EXAMPLES / "scene-0.jpg"),
        str(EXAMPLES / "photo-chelsea.jpg"),
        str(EXAMPLES / "photo-rocket.jpg"),
        str(tmp_path / "page.png"),
    ]
    code = caption_files(inputs, out=out, model=shipped, workers=0, progress=False)
    assert code == 0
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all(isinstance(r["tags"], list) and r["tags"][0]["name"] for r in rows)
        flags = [r["out_of_domain"] for r in rows]
        # The rocket photo's object words are named from the image: listed under "slots".
        words = rows[2]["caption"].split()
        assert rows[2]["slots"]
        assert all(
            n["name"].split()[-1] == words[n["position"] + len(n["name"].split()) - 1]
            for n in rows[2]["slots"]
        )
        assert "slots" not in rows[0]  # the scenes' own nouns need no naming
    else:
        with out.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0])[:7] == [
            "path", "caption", "log_prob", "confidence", "tags", "out_of_domain",
            "domain_distance",
        ]  # fmt: skip
        assert json.loads(rows[1]["tags"])[0]["name"] == "cat"
        flags = [r["out_of_domain"] == "True" for r in rows]
    assert flags == [False, False, False, True]  # scenes and photos in domain, a text page not
    assert all(0 < float(r["confidence"]) <= 1 for r in rows)


# -- the HTTP API -----------------------------------------------------------------------------


def test_the_api_returns_and_documents_the_fields(shipped) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.runtime import LoadedModels
    from service.settings import Settings

    settings = Settings(device="cpu", enable_activity=False, max_wait_ms=1.0)
    app = create_app(settings, models=LoadedModels(captioner=shipped, failures={}))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        photo = (EXAMPLES / "photo-chelsea.jpg").read_bytes()
        scene = (EXAMPLES / "scene-0.jpg").read_bytes()
        rocket = (EXAMPLES / "photo-rocket.jpg").read_bytes()
        page = io.BytesIO()
        _foreign("page").save(page, format="PNG")
        files = [
            ("file", ("cat.jpg", photo, "image/jpeg")),
            ("file", ("s.jpg", scene, "image/jpeg")),
            ("file", ("rocket.jpg", rocket, "image/jpeg")),
            ("file", ("page.png", page.getvalue(), "image/png")),
        ]
        r = client.post("/v1/caption", files=files)
        assert r.status_code == 200, r.text
        cat, scene_item, rocket_item, page_item = r.json()["results"]
        assert cat["tags"][0]["name"] == "cat"
        assert 0 < cat["tags"][0]["score"] <= 1
        assert 0 < cat["confidence"] <= 1
        flags = [x["out_of_domain"] for x in (cat, scene_item, rocket_item, page_item)]
        assert flags == [False, False, False, True]
        assert page_item["domain_distance"] > cat["domain_distance"]
        assert rocket_item["slots"]
        assert {"position", "name", "score"} == set(rocket_item["slots"][0])
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    item = schema["CaptionItem"]["properties"]
    for field in ("tags", "confidence", "out_of_domain", "domain_distance", "slots"):
        assert item[field].get("description"), field
    assert set(schema["Tag"]["properties"]) == {"name", "score"}
    assert set(schema["Slot"]["properties"]) == {"position", "name", "score"}


def test_tags_from_numpy_probabilities_match_the_pipeline(shipped) -> None:
    from captioner.concepts import tags

    image = shipped.load_image(EXAMPLES / "photo-chelsea.jpg")[None]
    pooled = shipped.pooled_features(shipped.encode(image))
    probs = shipped.head(pooled)[0].numpy()
    assert np.isclose(probs.sum(), 1, atol=1e-4)
    assert tags(probs) == shipped.caption(EXAMPLES / "photo-chelsea.jpg").tags
