"""The embedded EfficientNet-Lite0 encoder, its weights, preprocessing and error messages."""

import copy
import shutil

import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch import nn

from captioner import encoders
from captioner.encoders import (
    IMAGENET,
    LITE0_SHA256,
    EncoderError,
    Preprocess,
    build_encoder,
    efficientnet_lite,
    load_lite0_classifier,
)

CAT_IDS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO_ID = 967


@pytest.fixture(scope="module")
def encoder() -> encoders.Encoder:
    return build_encoder("efficientnet_lite0")


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return load_lite0_classifier()


@pytest.fixture(scope="module")
def photos(encoder) -> torch.Tensor:
    """chelsea (a cat) and coffee (an espresso), preprocessed as the encoder wants."""
    pre = encoder.preprocess
    images = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    return pre.normalize(torch.stack([pre.to_uint8(im) for im in images]))


def _top1(model: nn.Module, x: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return model(x).argmax(dim=-1).tolist()


# --------------------------------------------------------------------------- shapes


def test_grid_and_pooled_shapes(encoder, photos) -> None:
    assert encoder.feature_dim == 1280
    with torch.no_grad():
        grid, pooled = encoder(photos)
    assert grid.shape == (2, 49, 1280)
    assert pooled.shape == (2, 1280)
    torch.testing.assert_close(pooled, grid.mean(dim=1))
    assert torch.isfinite(grid).all()


def test_encoder_preprocess_is_lite0s() -> None:
    spec = encoders.get_spec("efficientnet_lite0")
    assert spec.preprocess.size == 224
    assert spec.preprocess.mean == (0.5, 0.5, 0.5)
    assert spec.preprocess.std == (0.5, 0.5, 0.5)
    assert "efficientnet_lite0" in encoders.available()


# --------------------------------------------------------------------------- real ImageNet weights


def test_classifier_recognises_cat_and_espresso(classifier, photos) -> None:
    cat, coffee = _top1(classifier, photos)
    assert cat in CAT_IDS
    assert coffee == ESPRESSO_ID


def test_random_weights_do_not_recognise_both(photos) -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    cat, coffee = _top1(model, photos)
    assert not (cat in CAT_IDS and coffee == ESPRESSO_ID)


def test_encoder_features_are_the_classifiers_features(encoder, classifier, photos) -> None:
    """The pooled vector fed to the ImageNet head gives the classifier's own logits."""
    with torch.no_grad():
        _, pooled = encoder(photos)
        logits = classifier.get_classifier()(pooled)
        torch.testing.assert_close(logits, classifier(photos), atol=1e-4, rtol=1e-4)
    assert logits.argmax(-1)[1].item() == ESPRESSO_ID


def test_lukemelas_keys_map_onto_every_timm_key(classifier) -> None:
    raw = torch.load(efficientnet_lite._lite0_file(), map_location="cpu", weights_only=True)
    renamed = {efficientnet_lite._rename_lukemelas(k): v for k, v in raw.items()}
    assert len(renamed) == len(raw)  # no two keys collapse into one
    own = classifier.state_dict()
    assert set(renamed) == set(own)
    assert all(renamed[k].shape == own[k].shape for k in own)


def test_rename_refuses_an_unknown_key() -> None:
    with pytest.raises(KeyError):
        efficientnet_lite._rename_lukemelas("_mystery.weight")


# --------------------------------------------------------------------------- freezing


def test_frozen_by_default(encoder) -> None:
    assert not any(p.requires_grad for p in encoder.parameters())


def test_frozen_encoder_keeps_batchnorm_in_eval_mode(encoder, photos) -> None:
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns
    before = [bn.running_mean.clone() for bn in bns]
    try:
        encoder.train()
        assert encoder.training
        assert not any(bn.training for bn in bns)
        with torch.no_grad():
            encoder(photos)
    finally:
        encoder.eval()
    for bn, mean in zip(bns, before, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=0, atol=0)


def test_trainable_blocks_unfreezes_only_the_last_blocks(classifier, monkeypatch) -> None:
    # Reuse the loaded classifier instead of reading the weights file again (speed).
    monkeypatch.setattr(
        efficientnet_lite, "load_lite0_classifier", lambda: copy.deepcopy(classifier)
    )
    enc = build_encoder("efficientnet_lite0", trainable_blocks=2)
    flags = {n: p.requires_grad for n, p in enc.named_parameters()}
    assert any(flags.values())
    assert not all(flags.values())
    assert not any(v for n, v in flags.items() if "conv_stem" in n or ".blocks.0." in n)
    assert any(v for n, v in flags.items() if ".blocks.6." in n)  # the last MBConv block
    enc.train()
    # unfrozen blocks train their BatchNorm; frozen ones keep their ImageNet statistics
    assert enc.trunk.model.blocks[6][0].bn1.training
    assert not enc.trunk.model.blocks[0][0].bn1.training


def test_trainable_blocks_include_the_head_conv(classifier, monkeypatch) -> None:
    monkeypatch.setattr(
        efficientnet_lite, "load_lite0_classifier", lambda: copy.deepcopy(classifier)
    )
    enc = build_encoder("efficientnet_lite0", trainable_blocks=2)
    head = {n: p.requires_grad for n, p in enc.named_parameters() if "conv_head" in n}
    assert head
    assert all(head.values())


# --------------------------------------------------------------------------- refusals


def test_tampered_weights_file_is_refused(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(efficientnet_lite._lite0_file(), bad)
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside tensor data: torch.load alone would not notice
    bad.write_bytes(bytes(raw))
    monkeypatch.setattr(efficientnet_lite, "_lite0_file", lambda: bad)
    with pytest.raises(EncoderError, match="sha256") as info:
        load_lite0_classifier()
    assert LITE0_SHA256 in str(info.value)
    assert "reinstall" in str(info.value)
    with pytest.raises(EncoderError, match="sha256"):
        build_encoder("efficientnet_lite0")


def test_unknown_encoder_name() -> None:
    with pytest.raises(EncoderError, match="unknown encoder 'vgg99'") as info:
        build_encoder("vgg99")
    assert "efficientnet_lite0" in str(info.value)


def test_unknown_timm_model() -> None:
    with pytest.raises(EncoderError, match="timm has no model"):
        build_encoder("timm:no_such_net_123")


def test_resnet50_without_local_weights_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONER_WEIGHTS", str(tmp_path))
    with pytest.raises(EncoderError) as info:
        build_encoder("resnet50")
    msg = str(info.value)
    assert "resnet50-11ad3fa6.pth" in msg
    assert str(tmp_path) in msg
    assert "CAPTIONER_WEIGHTS" in msg
    assert "never downloaded" in msg


def test_timm_model_without_local_weights_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONER_WEIGHTS", str(tmp_path))
    with pytest.raises(EncoderError) as info:
        build_encoder("timm:resnet18")
    assert "resnet18.safetensors" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_weights_dir_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAPTIONER_WEIGHTS", str(tmp_path))
    assert encoders.weights_dir() == tmp_path


# --------------------------------------------------------------------------- preprocessing


def test_to_uint8_resizes_and_converts_to_rgb() -> None:
    pre = Preprocess(size=224)
    rgba = Image.new("RGBA", (300, 120), (10, 200, 30, 128))
    out = pre.to_uint8(rgba)
    assert out.shape == (3, 224, 224)
    assert out.dtype == torch.uint8
    assert out[:, 100, 100].tolist() == [10, 200, 30]
    gray = pre.to_uint8(Image.new("L", (50, 70), 77))
    assert gray.shape == (3, 224, 224)
    assert (gray == 77).all()


def test_to_uint8_keeps_an_image_already_at_size() -> None:
    pre = Preprocess(size=8)
    img = Image.fromarray(skdata.chelsea()[:8, :8])
    out = pre.to_uint8(img)
    assert torch.equal(out, torch.from_numpy(skdata.chelsea()[:8, :8]).permute(2, 0, 1))


def test_normalize_maps_to_minus_one_one() -> None:
    pre = Preprocess()
    batch = torch.tensor([0, 255, 0, 255], dtype=torch.uint8).view(1, 1, 2, 2).repeat(2, 3, 1, 1)
    x = pre.normalize(batch)
    assert x.shape == (2, 3, 2, 2)
    assert x.dtype == torch.float32
    assert x.min().item() == -1.0
    assert x.max().item() == 1.0
    assert batch.dtype == torch.uint8  # input left untouched


def test_normalize_imagenet_statistics() -> None:
    batch = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    x = IMAGENET.normalize(batch)
    expected = [(1 - m) / s for m, s in zip(IMAGENET.mean, IMAGENET.std, strict=True)]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(expected))


def test_preprocess_dict_round_trip() -> None:
    pre = Preprocess(size=256, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), interpolation="bilinear")
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert Preprocess.from_dict({"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}) == Preprocess()


# --------------------------------------------------------------------------- grid cells


def _count_trunk_passes(enc: encoders.Encoder) -> list[int]:
    passes: list[int] = []
    enc.trunk.register_forward_hook(lambda *_: passes.append(1))
    return passes


def test_grid_cells_of_lite0_at_its_input_size(encoder) -> None:
    assert encoder.grid_shape == (7, 7)
    assert encoder.grid_cells == 49


def test_grid_cells_are_computed_once_per_input_size() -> None:
    enc = build_encoder("toy")
    passes = _count_trunk_passes(enc)
    assert (enc.grid_cells, enc.grid_cells, enc.grid_shape) == (49, 49, (7, 7))
    assert len(passes) == 1
    enc.preprocess = Preprocess(size=64)  # activity bundles shrink the input size
    assert (enc.grid_cells, enc.grid_shape) == (4, (2, 2))
    assert len(passes) == 2


def test_grid_cells_leave_training_batchnorm_alone(classifier, monkeypatch) -> None:
    monkeypatch.setattr(
        efficientnet_lite, "load_lite0_classifier", lambda: copy.deepcopy(classifier)
    )
    enc = build_encoder("efficientnet_lite0", trainable_blocks=1).train()
    bn = enc.trunk.model.bn2  # in the trainable head, so in train mode
    assert bn.training
    before = bn.running_mean.clone()
    assert enc.grid_cells == 49
    assert bn.training
    assert enc.training
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)


# --------------------------------------------------------------------------- the toy encoder


def test_toy_encoder_builds_the_same_weights_every_time() -> None:
    rng = torch.random.get_rng_state()
    a, b = build_encoder("toy"), build_encoder("toy")
    assert torch.equal(torch.random.get_rng_state(), rng)  # global random state untouched
    assert "toy" in encoders.available()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not any(p.requires_grad for p in a.parameters())


def test_toy_encoder_has_the_encoder_interface() -> None:
    enc = build_encoder("toy")
    pre = enc.preprocess
    images = [Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    x = pre.normalize(torch.stack([pre.to_uint8(im) for im in images]))
    with torch.no_grad():
        grid, pooled = enc(x)
    assert grid.shape == (2, enc.grid_cells, enc.feature_dim) == (2, 49, 32)
    torch.testing.assert_close(pooled, grid.mean(dim=1))
    assert (pooled[0] - pooled[1]).abs().max() > 1e-2  # different pictures, different features


def test_toy_encoder_unfreezes_its_last_blocks() -> None:
    enc = build_encoder("toy", trainable_blocks=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"trunk.2.0.weight", "trunk.2.0.bias"}
